"""Every command as a library call: inputs in, files written, a result out, progress as events (no printing)."""

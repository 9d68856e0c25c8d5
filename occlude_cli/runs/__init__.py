"""Library runs: what each command does, from Python (inputs in, files written, a result returned), telling its progress through events; the command line maps flags to these calls."""

"""Every picture as PNG bytes from arrays: overlays, heatmaps, montages, charts (Pillow; matplotlib for charts)."""

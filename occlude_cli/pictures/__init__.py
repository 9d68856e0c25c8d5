"""Every picture as PNG bytes, from arrays: overlays, heatmaps, panels, volume montages and the analyses' charts (Pillow; matplotlib only for charts); writes nothing."""

"""Executors beyond this process: the Ray actor pool that computes a folder's images or one image's windows."""

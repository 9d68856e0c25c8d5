"""The engine room: ONNX graph facts, rewrites, cuts and exact incremental inference plans; no images, no classifier."""

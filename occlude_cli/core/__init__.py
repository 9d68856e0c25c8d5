"""The engine, numpy only: windows, the batched perturbation loop, refine, baselines, metrics and fidelity."""

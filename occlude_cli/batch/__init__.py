"""Many inputs, one model: discovery, shards, resume, the ordered folder loop and its executors (no drawing)."""

from .inputs import InputImage, check_shard, discover_inputs, is_own_output, take_shard
from .loop import BatchResult, LocalExecutor, compute_image, likely_skipped, run_batch, run_images, run_settings

__all__ = [
    "BatchResult",
    "InputImage",
    "LocalExecutor",
    "check_shard",
    "compute_image",
    "discover_inputs",
    "is_own_output",
    "likely_skipped",
    "run_batch",
    "run_images",
    "run_settings",
    "take_shard",
]

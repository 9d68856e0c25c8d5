import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def zoo_reference():
    """tests/zoo/reference.py (the slow one-window reference loops), loaded once as the module zoo_reference."""
    import importlib.util
    import sys

    if "zoo_reference" not in sys.modules:
        spec = importlib.util.spec_from_file_location("zoo_reference", ROOT / "tests" / "zoo" / "reference.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
    return sys.modules["zoo_reference"]


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    """occlude's on-disk cache (inference.cache) in a folder of this test session, never the user's: the CLI
    subprocesses inherit it through the environment."""
    os.environ["OCCLUDE_CACHE_DIR"] = str(tmp_path_factory.mktemp("occlude-cache"))


SAMPLE_MODELS = ROOT / "sample_models"
SAMPLE_IMAGES = ROOT / "sample_images"


@pytest.fixture
def gray_image(tmp_path) -> Path:
    """A 16x16 8-bit grey PNG of value 255 (ones after the default pixel/255 preprocessing)."""
    path = tmp_path / "white16.png"
    Image.fromarray(np.full((16, 16), 255, dtype=np.uint8), "L").save(path)
    return path


@pytest.fixture
def noise_image(tmp_path) -> Path:
    path = tmp_path / "noise.png"
    rng = np.random.default_rng(7)
    Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8), "L").save(path)
    return path

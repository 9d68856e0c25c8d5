"""Region masks of the four sample photos, for the manual's `occlude check` and `occlude bias` examples.

Each mask is a greyscale PNG the size of its photo: white (255) inside an ellipse drawn by hand around the
photo's subject (the cat's face, the cup and saucer, the astronaut's head, the flower), black outside. They
are rough on purpose: a region of interest as an annotator would draw it in a minute. Deterministic; run
from the repository root: ``python docs/examples/make_masks.py``.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[2]
# photo -> ellipse (x0, y0, x1, y1) in the photo's own pixels
SUBJECTS = {
    "cat": (40, 20, 360, 300),
    "coffee": (70, 60, 480, 390),
    "astronaut": (140, 10, 310, 200),
    "flower": (160, 80, 450, 360),
}


def main() -> None:
    out = ROOT / "docs" / "examples" / "masks"
    out.mkdir(parents=True, exist_ok=True)
    for name, box in SUBJECTS.items():
        with Image.open(ROOT / "sample_images" / f"{name}.jpg") as photo:
            size = photo.size
        mask = Image.new("L", size, 0)
        ImageDraw.Draw(mask).ellipse(box, fill=255)
        mask.save(out / f"{name}.png", optimize=True)
        print(out / f"{name}.png", size)


if __name__ == "__main__":
    main()

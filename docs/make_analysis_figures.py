"""Rebuild the README figures of "Inside the model and across the dataset" from the sample model and images:

    python docs/make_analysis_figures.py

docs/layers.png and docs/layers-activations.png (occlude layers, EfficientNet-Lite0 at hardtanh_16 on the four
sample photos), docs/bias.png (occlude bias: a white "watermark" stamped in the bottom-right corner of 16 crops of
the sample photos, which the ImageNet model never learned to use) and docs/stability.png (occlude stability on the
cat). Runs the real CLI; takes about two minutes on 2 cores.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "sample_models" / "efficientnet_lite0.onnx"
PHOTOS = [ROOT / "sample_images" / f"{name}.jpg" for name in ("astronaut", "cat", "coffee", "flower")]
DOCS = ROOT / "docs"


def occlude(*args) -> None:
    subprocess.run([sys.executable, "-m", "occlude_cli", *map(str, args)], check=True)


def watermarked(folder: Path) -> None:
    """16 images 224x224: four crops of each photo, each with a white box and dark text in the corner."""
    folder.mkdir(parents=True, exist_ok=True)
    for photo in PHOTOS:
        image = Image.open(photo).convert("RGB")
        width, height = image.size
        side = min(width, height)
        for k, (fx, fy) in enumerate(((0.0, 0.0), (1.0, 0.0), (0.0, 1.0), (0.5, 0.5))):
            crop = int(side * 0.8)
            x0, y0 = int((width - crop) * fx), int((height - crop) * fy)
            tile = image.crop((x0, y0, x0 + crop, y0 + crop)).resize((224, 224), Image.BILINEAR)
            draw = ImageDraw.Draw(tile)
            draw.rectangle((164, 194, 223, 223), fill=(255, 255, 255))
            draw.text((170, 203), "(c) ACME", fill=(40, 40, 40))
            tile.save(folder / f"{photo.stem}_{k}.png")


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        occlude("layers", MODEL, *PHOTOS, "--layer", "hardtanh_16", "--top", "8", "--show", "4", "-o", work / "lay", "-q")
        shutil.copy(work / "lay" / "layers.png", DOCS / "layers.png")
        shutil.copy(work / "lay" / "activations.png", DOCS / "layers-activations.png")
        watermarked(work / "data")
        occlude("bias", MODEL, work / "data", "--box", "164,194,224,224", "--controls", "16", "-o", work / "bias", "-q")
        shutil.copy(work / "bias" / "bias.png", DOCS / "bias.png")
        occlude("stability", MODEL, PHOTOS[1], "--patch", "32", "--stride", "16", "--trials", "6", "--noise", "4/255",
                "-o", work / "st", "-q")
        shutil.copy(work / "st" / "cat.stability.png", DOCS / "stability.png")


if __name__ == "__main__":
    main()

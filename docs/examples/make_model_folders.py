"""The manual's model folders (docs/models.md, "Models from Hugging Face, timm and torchvision"): tiny, untrained
networks of each library, exported to ONNX and laid out as users get them, with the configuration files the
libraries write themselves. They show what occlude reads; their predictions mean nothing (random weights, seed 0).

* ``vit-optimum/``: a transformers ``ViTForImageClassification`` (hidden size 8, one layer, patch 32) laid out as
  ``optimum-cli export onnx`` leaves it: ``model.onnx`` (input ``pixel_values``, every axis dynamic; output
  ``logits``), ``config.json`` (``save_pretrained``: ``id2label`` with the 1,000 ImageNet-1k names occlude
  ships) and ``preprocessor_config.json`` (``ViTImageProcessor().save_pretrained``: 224 x 224, bilinear, mean and
  std 0.5).
* ``convnext-optimum/``: the same with a ``ConvNextForImageClassification`` (hidden sizes 8, 16) and
  ``ConvNextImageProcessor(size={"shortest_edge": 224}, crop_pct=0.875)`` (short side to 256, crop 224, bicubic,
  ImageNet mean and std).
* ``timm-vit/``: timm's ``test_vit`` made smaller (embed_dim 16, depth 1, one head), ``model.onnx`` (input
  ``input``, 160 x 160) and the ``config.json`` timm's ``save_config_for_hf`` writes (``pretrained_cfg``: crop_pct
  0.95, bicubic, mean and std 0.5; ``label_names``: the ImageNet-1k names).
* ``torchvision.onnx``: a tiny network of torchvision layers (``Conv2dNormActivation``, average pool, linear, 1000
  classes) exported with ``torch.onnx.export`` and nothing else, as torchvision models come out of it.

Every network is exported with torch's TorchScript exporter (``dynamo=False``, opset 17) and its debug metadata
stripped, so the files do not depend on where they were built. Needs the ``peer`` extra (torch 2.14.1,
torchvision 0.29.1, transformers 5.25.0, timm 1.0.31); nothing is downloaded. Run from the repository root:
``python docs/examples/make_model_folders.py``. The same versions give the same bytes
(``tests/test_ecosystem.py`` rebuilds them and compares).

Provenance and licence: made by this script from nothing downloaded; the weights are random (seed 0) and,
like the rest of the repository, Apache-2.0. The class names in the configs are torchvision's ImageNet-1k list
that occlude ships (BSD-3-Clause: ``occlude_cli/loaders/data/imagenet1k.LICENSE``).
"""

from __future__ import annotations

import shutil
import sys
import warnings
from pathlib import Path

import onnx
import timm
import torch
import torchvision
import transformers
from timm.models._hub import save_config_for_hf

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from occlude_cli.loaders.modelfiles import imagenet_labels  # noqa: E402

HERE = Path(__file__).resolve().parent
OPTIMUM_AXES = {
    "pixel_values": {0: "batch_size", 1: "num_channels", 2: "height", 3: "width"},
    "logits": {0: "batch_size"},
}


class Logits(torch.nn.Module):
    """A transformers classifier as optimum exports it: ``pixel_values`` in, ``logits`` out."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, pixel_values):
        return self.model(pixel_values=pixel_values).logits


def export(module, path: Path, size: int, input_name: str, axes: dict) -> None:
    torch.onnx.export(
        module.eval(),
        (torch.zeros(1, 3, size, size),),
        str(path),
        input_names=[input_name],
        output_names=["logits"],
        dynamic_axes=axes,
        opset_version=17,
        dynamo=False,
    )
    model = onnx.load(str(path))
    for node in model.graph.node:
        del node.metadata_props[:]
    model.producer_version = torch.__version__.split("+")[0]
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))


def fresh(out: Path, name: str) -> Path:
    folder = out / name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    return folder


def main(out: Path = HERE) -> None:
    """Write the model folders into ``out`` (default: beside this script, where the manual finds them)."""
    warnings.filterwarnings("ignore")
    names = imagenet_labels()
    labels = {"num_labels": 1000, "id2label": dict(enumerate(names)), "label2id": {n: i for i, n in enumerate(names)}}
    hf = {  # built after the seed is set: their random weights are the same on every run
        "vit-optimum": lambda: (
            transformers.ViTForImageClassification(
                transformers.ViTConfig(
                    hidden_size=8,
                    num_hidden_layers=1,
                    num_attention_heads=2,
                    intermediate_size=8,
                    patch_size=32,
                    **labels,
                )
            ),
            transformers.ViTImageProcessor(),
        ),
        "convnext-optimum": lambda: (
            transformers.ConvNextForImageClassification(
                transformers.ConvNextConfig(hidden_sizes=[8, 16], depths=[1, 1], num_stages=2, **labels)
            ),
            transformers.ConvNextImageProcessor(size={"shortest_edge": 224}, crop_pct=0.875),
        ),
    }
    for name, build in hf.items():
        torch.manual_seed(0)
        model, processor = build()
        folder = fresh(out, name)
        model.config.save_pretrained(folder)
        processor.save_pretrained(folder)
        export(Logits(model), folder / "model.onnx", 224, "pixel_values", OPTIMUM_AXES)
    torch.manual_seed(0)
    folder = fresh(out, "timm-vit")
    vit = timm.create_model("test_vit", pretrained=False, num_classes=1000, embed_dim=16, depth=1, num_heads=1)
    save_config_for_hf(vit, str(folder / "config.json"), model_config={"label_names": names})
    export(vit, folder / "model.onnx", 160, "input", {"input": {0: "batch"}, "logits": {0: "batch"}})
    torch.manual_seed(0)
    bare = torch.nn.Sequential(
        torchvision.ops.Conv2dNormActivation(3, 8, kernel_size=7, stride=4),
        torchvision.ops.Conv2dNormActivation(8, 16, kernel_size=3, stride=2),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(16, 1000),
    )
    export(bare, out / "torchvision.onnx", 224, "input", {"input": {0: "batch"}, "logits": {0: "batch"}})
    for path in sorted(out.glob("*-*/*")) + [out / "torchvision.onnx"]:
        print(f"{path.relative_to(out)}: {path.stat().st_size:,} bytes")


if __name__ == "__main__":
    main()

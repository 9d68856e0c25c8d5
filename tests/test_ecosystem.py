"""Ground truth from the libraries the models come from (the ``peer`` extra): occlude's model input, read from the
files those libraries write (``save_pretrained``, timm's ``save_config_for_hf``, all in this session, nothing
downloaded), compared pixel by pixel with what the library's own transform makes of the same photo:
transformers' image processors (both backends), timm's ``resolve_data_config`` + ``create_transform``, and
torchvision's ``ImageClassification`` (a PIL image and a uint8 tensor). Within one 8-bit level (1/255) everywhere;
0 (float rounding) where the library resizes with Pillow. And the done-when of issue 23: ``occlude run FOLDER
img.jpg`` on real tiny exports laid out as optimum and timm leave them, with no preprocessing flag, prints the
class names and explains what the library's own pipeline predicts."""

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")
timm = pytest.importorskip("timm")
transformers = pytest.importorskip("transformers")

from occlude_cli.analyses.preprocessing import ModelOptions, open_model  # noqa: E402
from occlude_cli.cli.app import app  # noqa: E402
from occlude_cli.loaders.images import prepare_image  # noqa: E402
from occlude_cli.loaders.modelfiles import imagenet_labels  # noqa: E402

from conftest import SAMPLE_IMAGES  # noqa: E402
from onnx_models import mean_colour_model  # noqa: E402

warnings.filterwarnings("ignore", category=UserWarning)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """The sample photos, and cuts of the cat whose crop margins are odd (where torchvision and transformers
    start the crop one pixel apart) and one standing up: lossless PNGs."""
    folder = tmp_path_factory.mktemp("photos")
    cat = Image.open(SAMPLE_IMAGES / "cat.jpg").convert("RGB")  # 451 x 300
    made = {"cat_304x300.png": cat.crop((0, 0, 304, 300)), "cat_305x300.png": cat.crop((40, 0, 345, 300))}
    made["cat_portrait.png"] = cat.transpose(Image.Transpose.ROTATE_90)
    for name, image in made.items():
        image.save(folder / name)
    return [SAMPLE_IMAGES / n for n in ("cat.jpg", "coffee.jpg", "astronaut.jpg", "flower.jpg")] + [
        folder / n for n in made
    ]


def gap(ours: np.ndarray, theirs: np.ndarray, pre) -> float:
    """The largest difference of two normalised (3, H, W) inputs, in 8-bit pixel levels."""
    theirs = np.asarray(theirs, dtype=np.float64).reshape(ours.shape)
    std = np.broadcast_to(np.asarray(pre.std, dtype=np.float64), (3,)).reshape(3, 1, 1)
    return float(np.max(np.abs(ours.astype(np.float64) - theirs) * std / pre.scale))


def worst(model, photos, transform, options=None) -> float:
    """occlude's input for each photo against ``transform(PIL image)``: the largest gap in 8-bit levels."""
    pre = open_model(model, options).preprocessing
    gaps = []
    for photo in photos:
        ours = prepare_image(photo, pre).model_input
        gaps.append(gap(ours, transform(Image.open(photo).convert("RGB")), pre))
    return max(gaps)


# -------------------------------------------------------------------------------------------- transformers

PROCESSORS = [
    ("ViTImageProcessor", {}),
    ("ViTImageProcessor", {"resample": 3}),  # bicubic
    ("ConvNextImageProcessor", {"size": {"shortest_edge": 224}, "crop_pct": 0.875}),
    ("ConvNextImageProcessor", {"size": {"shortest_edge": 384}}),  # warped, no crop
    ("CLIPImageProcessor", {}),  # shortest edge 224, do_center_crop 224
    ("BitImageProcessor", {}),
    ("DeiTImageProcessor", {}),  # 256 x 256, then do_center_crop 224
]


@pytest.mark.parametrize("name, kwargs", PROCESSORS, ids=[f"{n}{sorted(k.items())}" for n, k in PROCESSORS])
def test_transformers_processors(tmp_path, photos, name, kwargs):
    """Each processor's own ``save_pretrained`` beside a model laid out as optimum exports it. transformers' Pil
    backend (the processors of transformers 4) resizes with Pillow: the ``pil`` resampler gives its numbers
    exactly. Its default torchvision backend resizes uint8 tensors with torch's kernels: occlude's default for
    these files, the ``torch`` resampler, gives its numbers exactly; ``pil`` is within two levels (bicubic; one
    for bilinear), and so is the default against the Pil backend."""
    cases = (("Pil", "pil", 1e-3), ("", None, 1e-3), ("", "pil", 2 + 1e-3), ("Pil", None, 2 + 1e-3))
    for backend, resampler, tolerance in cases:
        processor = getattr(transformers, name + backend)(**kwargs)
        processor.save_pretrained(tmp_path)
        mean_colour_model(tmp_path / "model.onnx")
        pixels = lambda photo, p=processor: p(images=photo, return_tensors="np")["pixel_values"][0]  # noqa: E731
        measured = worst(tmp_path, photos, pixels, ModelOptions(resampler=resampler))
        assert measured <= tolerance, (backend, resampler, measured)


@pytest.mark.parametrize("resample", [0, 1], ids=["nearest", "lanczos"])
def test_transformers_nearest_and_lanczos(tmp_path, photos, resample):
    """Pillow's nearest and lanczos (transformers' Pil backend) exactly: with these filters the files' ``torch``
    resampler gives way to ``pil`` (torch has no lanczos uint8 kernel; transformers' torchvision backend maps
    nearest to torch's nearest-exact, whose float32 arithmetic picks a neighbouring pixel on some rows)."""
    processor = transformers.ViTImageProcessorPil(resample=resample)
    processor.save_pretrained(tmp_path)
    mean_colour_model(tmp_path / "model.onnx")
    measured = worst(tmp_path, photos, lambda p: processor(images=p, return_tensors="np")["pixel_values"][0])
    assert measured <= 1e-3, measured


# ---------------------------------------------------------------------------------------------------- timm


def timm_folder(folder: Path, architecture: str, data_config=None, classes: int = 4, **model_args) -> Path:
    """timm's own config.json (``save_config_for_hf``) of a timm model, beside a model of its input size."""
    from timm.models._hub import save_config_for_hf

    folder.mkdir(parents=True, exist_ok=True)
    model = timm.create_model(architecture, pretrained=False, num_classes=classes, **model_args)
    names = imagenet_labels() if classes == 1000 else [f"class {i}" for i in range(classes)]
    save_config_for_hf(model, str(folder / "config.json"), model_config={"label_names": names}, data_config=data_config)
    _, height, width = json.loads((folder / "config.json").read_text())["pretrained_cfg"]["input_size"]
    mean_colour_model(folder / "model.onnx", classes, input_name="input", shape=["batch", 3, height, width])
    return folder


def timm_transform(folder: Path):
    """What timm itself makes of the config.json in ``folder``: its own parse, resolve_data_config, create_transform."""
    from timm.data import create_transform, resolve_data_config
    from timm.models._hub import load_model_config_from_path

    pretrained_cfg, _, _ = load_model_config_from_path(folder)
    return create_transform(**resolve_data_config(pretrained_cfg=pretrained_cfg))


@pytest.mark.parametrize(
    "architecture, data_config",
    [
        ("test_vit", None),  # 160 x 160, crop_pct 0.95, bicubic, mean 0.5
        ("test_resnet", None),  # bilinear
        ("test_efficientnet", {"crop_pct": 0.875, "interpolation": "bilinear"}),
        ("test_vit", {"crop_mode": "squash"}),
        ("test_convnext", {"input_size": (3, 224, 224), "crop_pct": 1.0}),
    ],
)
def test_timm_create_transform(tmp_path, photos, architecture, data_config):
    folder = timm_folder(tmp_path / "timm", architecture, data_config)
    opened = open_model(folder)
    assert opened.labels == [f"class {i}" for i in range(4)]
    measured = worst(folder, photos, lambda photo: timm_transform(folder)(photo).numpy())
    assert measured <= 1e-3, measured  # timm resizes PIL images with Pillow


def test_timm_border_mode_is_refused_until_told(tmp_path, photos):
    folder = timm_folder(tmp_path / "timm", "test_vit", {"crop_mode": "border"})
    from occlude_cli import OccludeError

    with pytest.raises(OccludeError, match="crop_mode 'border'"):
        open_model(folder)


# ------------------------------------------------------------------------------------------------ torchvision


@pytest.mark.parametrize(
    "weights, options",
    [
        ("ResNet18_Weights.IMAGENET1K_V1", {}),  # Resize(256), bilinear: the preset itself
        ("ResNet50_Weights.IMAGENET1K_V2", {"resize_short": 232}),
        ("EfficientNet_B0_Weights.IMAGENET1K_V1", {"interpolation": "bicubic"}),
        ("ConvNeXt_Tiny_Weights.IMAGENET1K_V1", {"resize_short": 236}),
        ("Swin_T_Weights.IMAGENET1K_V1", {"resize_short": 232, "interpolation": "bicubic"}),
    ],
)
@pytest.mark.parametrize("as_tensor", [False, True], ids=["pil", "tensor"])
def test_torchvision_weights_transforms(tmp_path, photos, weights, options, as_tensor):
    """The transform of torchvision's weights (``weights.transforms()``: ImageClassification; no weights
    downloaded) against ``--preprocess torchvision`` and at most two more flags. On a PIL image (the preset's
    ``pil`` resampler): exact. On the uint8 tensor of ``read_image``, which ImageClassification resizes in float32
    and rounds once: ``--resampler float`` (no rounding) within half a level."""
    from torchvision.transforms.functional import pil_to_tensor

    group, member = weights.split(".")
    transform = getattr(getattr(torchvision.models, group), member).transforms()
    model = mean_colour_model(tmp_path / "model.onnx", input_name="input", shape=["batch", 3, 224, 224])
    if as_tensor:
        floats = ModelOptions(preprocess="torchvision", resampler="float", **options)
        measured = worst(model, photos, lambda photo: transform(pil_to_tensor(photo)).numpy(), floats)
        assert measured <= 0.5 + 0.01, measured  # the rounding, and float32 against float64 arithmetic
    else:
        measured = worst(
            model, photos, lambda photo: transform(photo).numpy(), ModelOptions(preprocess="torchvision", **options)
        )
        assert measured <= 1e-3, measured


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic", "nearest"])
def test_torchvision_v2_on_uint8_tensors(tmp_path, photos, interpolation):
    """torchvision.transforms.v2 resizes uint8 tensors with torch's own uint8 kernels (as transformers 5 does):
    ``--resampler torch`` gives its numbers exactly."""
    from torchvision.transforms import InterpolationMode, v2
    from torchvision.transforms.functional import pil_to_tensor

    mode = getattr(InterpolationMode, interpolation.upper())
    pipeline = v2.Compose([v2.Resize(256, interpolation=mode), v2.CenterCrop(224)])
    model = mean_colour_model(tmp_path / "model.onnx", input_name="input", shape=["batch", 3, 224, 224])
    options = ModelOptions(resize_short=256, interpolation=interpolation, resampler="torch")
    pre = open_model(model, options).preprocessing
    for photo in photos:
        want = pipeline(pil_to_tensor(Image.open(photo).convert("RGB"))).numpy().transpose(1, 2, 0)
        assert np.array_equal(prepare_image(photo, pre).pixels, want.astype(np.float32)), photo


def test_resize_short_alone_is_resize_and_center_crop(tmp_path, photos):
    """torchvision's Resize(256) + CenterCrop(224) is one flag (the normalisation aside)."""
    from torchvision import transforms

    pipeline = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224), transforms.PILToTensor()])
    model = mean_colour_model(tmp_path / "model.onnx", input_name="input", shape=["batch", 3, 224, 224])
    pre = open_model(model, ModelOptions(resize_short=256)).preprocessing
    for photo in photos:
        want = pipeline(Image.open(photo).convert("RGB")).numpy().transpose(1, 2, 0)
        assert np.array_equal(prepare_image(photo, pre).pixels, want.astype(np.float32))


def test_shipped_imagenet_names_are_torchvisions():
    """occlude_cli/loaders/data/imagenet1k.txt is torchvision's list, unchanged (its provenance)."""
    assert imagenet_labels() == list(torchvision.models.ResNet18_Weights.IMAGENET1K_V1.meta["categories"])


# ----------------------------------------------------------------------- real exports, end to end on the CLI


class _Logits(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, pixel_values):
        return self.model(pixel_values=pixel_values).logits


def export(module, folder: Path, size: int, input_name: str, dynamic: dict) -> None:
    torch.manual_seed(0)
    torch.onnx.export(
        module.eval(),
        (torch.randn(1, 3, size, size),),
        str(folder / "model.onnx"),
        input_names=[input_name],
        output_names=["logits"],
        dynamic_axes=dynamic,
        opset_version=17,
        dynamo=False,
    )


OPTIMUM_AXES = {
    "pixel_values": {0: "batch_size", 1: "num_channels", 2: "height", 3: "width"},
    "logits": {0: "batch_size"},
}


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """Three folders as users get them, each with a real (tiny, untrained) network of its library exported to
    ONNX: optimum's layout of a ViT and of a ConvNeXt (their config.json and preprocessor_config.json from
    save_pretrained, ImageNet-1k id2label), and a timm model with timm's config.json (label_names)."""
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("exports")
    names = imagenet_labels()
    labels = {"id2label": dict(enumerate(names)), "label2id": {n: i for i, n in enumerate(names)}}
    built = {}
    small = {"num_labels": 1000, **labels}
    configs = {
        "vit": (
            transformers.ViTConfig(
                hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16, patch_size=32, **small
            ),
            transformers.ViTForImageClassification,
            transformers.ViTImageProcessor(),
        ),
        "convnext": (
            transformers.ConvNextConfig(hidden_sizes=[8, 16], depths=[1, 1], num_stages=2, **small),
            transformers.ConvNextForImageClassification,
            transformers.ConvNextImageProcessor(size={"shortest_edge": 224}, crop_pct=0.875),
        ),
    }
    for name, (config, cls, processor) in configs.items():
        folder = root / name
        model = cls(config)
        model.save_pretrained(folder)  # config.json (and weights, which occlude does not read)
        processor.save_pretrained(folder)
        export(_Logits(model), folder, 224, "pixel_values", OPTIMUM_AXES)
        built[name] = (folder, lambda photo, m=model, p=processor: m(**p(images=photo, return_tensors="pt")).logits)
    from timm.data import create_transform, resolve_data_config
    from timm.models._hub import save_config_for_hf

    folder = root / "timm"
    folder.mkdir()
    model = timm.create_model("test_vit", pretrained=False, num_classes=1000, embed_dim=16, depth=1, num_heads=1)
    save_config_for_hf(model, str(folder / "config.json"), model_config={"label_names": names})
    export(model, folder, 160, "input", {"input": {0: "batch"}, "logits": {0: "batch"}})
    transform = create_transform(**resolve_data_config(model=model))
    built["timm"] = (folder, lambda photo, m=model: m(transform(photo)[None]))
    return built


@pytest.mark.parametrize("kind", ["vit", "convnext", "timm"])
def test_run_a_model_folder_with_no_flag(tmp_path, exports, kind):
    """`occlude run FOLDER img.jpg`: the preprocessing and the class names from the folder's files; the class
    explained is the one the library's own pipeline predicts, and its name is printed."""
    folder, predict = exports[kind]
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app,
        ["run", str(folder), str(SAMPLE_IMAGES / "cat.jpg"), "-o", str(out), "--patch", "40"],
        env={"COLUMNS": "200"},
    )
    assert result.exit_code == 0, result.output
    document = json.loads((out / "cat.json").read_text())
    with torch.no_grad():
        logits = predict(Image.open(SAMPLE_IMAGES / "cat.jpg").convert("RGB"))[0].numpy()
    top = int(np.argmax(logits))
    assert document["target"] == {"index": top, "label": imagenet_labels()[top]}
    assert imagenet_labels()[top] in result.stdout  # the name, not "class N"
    assert document["params"]["preprocessing"]["sources"]["labels"] in (
        "config.json: id2label",
        "config.json: label_names",
    )
    info = CliRunner().invoke(app, ["info", str(folder)])
    assert info.exit_code == 0 and "files         " in info.stdout and "config.json" in info.stdout


def test_the_manuals_model_folders_rebuild_byte_for_byte(tmp_path):
    """docs/examples' model folders (the manual's and the README's examples run them) are what
    ``docs/examples/make_model_folders.py`` makes: rebuilt here, every file is the same, byte for byte."""
    import importlib.util

    import onnx

    examples = Path(__file__).resolve().parents[1] / "docs" / "examples"
    built_with = (
        json.loads((examples / "vit-optimum" / "config.json").read_text())["transformers_version"],
        onnx.load(str(examples / "torchvision.onnx")).producer_version,
    )
    if built_with != (transformers.__version__, torch.__version__.split("+")[0]):
        pytest.skip(f"the folders were built with transformers and torch {built_with}")
    spec = importlib.util.spec_from_file_location("make_model_folders", examples / "make_model_folders.py")
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    script.main(tmp_path)
    made = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    assert [str(p) for p in made] == [
        "convnext-optimum/config.json",
        "convnext-optimum/model.onnx",
        "convnext-optimum/preprocessor_config.json",
        "timm-vit/config.json",
        "timm-vit/model.onnx",
        "torchvision.onnx",
        "vit-optimum/config.json",
        "vit-optimum/model.onnx",
        "vit-optimum/preprocessor_config.json",
    ]
    for path in made:
        assert (tmp_path / path).read_bytes() == (examples / path).read_bytes(), path

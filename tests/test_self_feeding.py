"""No self-feeding in any command that takes folders (issue 33): with --out inside a recursive input folder, a
second run sees the same images and gives the same numbers; and earlier outputs of every command (recognised
by their names and the record written with them) are never inputs. `run` and `check` excluded their output
folder before; `bias`, `layers` and `compare --maps` read their own outputs (bias counted 7 images instead
of 6, layers grew 6 -> 7 -> 9)."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from occlude_cli.batch import discover_inputs, is_own_output
from occlude_cli.cli import app

from conftest import SAMPLE_MODELS

DIGITS = SAMPLE_MODELS / "digits_cnn.onnx"  # 8x8 grey input; "relu" is a valid cut point
COUNT = 6


def invoke(*args):
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert "Traceback" not in result.stdout + result.stderr, result.stderr
    return result


def dataset(root: Path) -> Path:
    """COUNT seeded 16x16 grey images in root/ds and root/ds/sub (so that -r matters)."""
    folder = root / "ds"
    (folder / "sub").mkdir(parents=True)
    rng = np.random.default_rng(33)
    for i in range(COUNT):
        where = folder / "sub" if i % 2 else folder
        Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8), "L").save(where / f"img{i}.png")
    return folder


def maps_for(folder: Path, root: Path) -> Path:
    maps = root / "maps"
    for image in discover_inputs([str(folder)], recursive=True)[0]:
        (maps / image.key).parent.mkdir(parents=True, exist_ok=True)
        np.save(maps / f"{image.key}.npy", np.asarray(Image.open(image.path), dtype=np.float64))
    return maps


def numbers(command: str, out: Path) -> dict:
    """What each command reports, and over how many images."""
    if command == "bias":
        doc = json.loads((out / "bias.json").read_text())
        return {"images": doc["counts"], "overall": doc["overall"]}
    if command == "layers":
        doc = json.loads((out / "layers.json").read_text())
        return {"images": doc["images"], "channels": doc["channels"]}
    if command == "compare":
        doc = json.loads((out / "compare.json").read_text())
        return {"images": [r["path"] for r in doc["images"]], "summary": doc["summary"]}
    if command == "check":
        doc = json.loads((out / "check.json").read_text())
        return {"images": [r["path"] for r in doc["images"]], "summary": doc["summary"]}
    doc = json.loads((out / "summary.json").read_text())
    return {"images": [(r["path"], r["status"], r["original_score"]) for r in doc["images"]]}


def command_args(command: str, folder: Path, out: Path, maps: Path) -> list:
    common = ["-r", "-o", out, "-q"]
    if command == "bias":
        return ["bias", DIGITS, folder, "--box", "0,0,8,8", "--controls", "2", "--bootstrap", "0", *common]
    if command == "layers":
        return ["layers", DIGITS, folder, "--layer", "relu", "--timing", "--no-timing", *common]
    if command == "compare":
        return ["compare", DIGITS, folder, "--maps", maps, "--patch", "2", "--steps", "4", "--fractions", "", *common]
    if command == "check":
        return ["check", DIGITS, folder, "--box", "0,0,8,8", "--patch", "2", *common]
    return ["run", DIGITS, folder, "--patch", "2", "--panels", "--aggregate", "--no-timing", *common]


@pytest.mark.parametrize("command", ["bias", "layers", "compare", "check", "run"])
def test_a_second_run_over_a_folder_holding_its_own_outputs_gives_the_same_numbers(tmp_path, command):
    folder = dataset(tmp_path)
    maps = maps_for(folder, tmp_path)
    out = folder / "sub" / f"{command}-out"
    first = invoke(*command_args(command, folder, out, maps))
    assert first.exit_code == 0, first.stderr
    before = numbers(command, out)
    second = invoke(*command_args(command, folder, out, maps))
    assert second.exit_code == 0, second.stderr
    assert numbers(command, out) == before
    if command == "bias":
        assert before["images"] == {"ok": COUNT}
    elif command == "layers":
        assert before["images"] == COUNT
    else:
        assert len(before["images"]) == COUNT


def test_earlier_outputs_of_every_command_are_never_inputs(tmp_path):
    """Every command writes its outputs inside the input folder; then each folder command still sees exactly the
    six images (by their names and the record written with them: STEM.check.png listed by check.json, bias.png
    beside bias.json, STEM.spatial.png beside STEM.spatial.json, STEM.panels.png listed by STEM.json, ...)."""
    folder = dataset(tmp_path)
    maps = maps_for(folder, tmp_path)
    image = folder / "img0.png"
    for args in (
        command_args("run", folder, folder / "o-run", maps),
        command_args("check", folder, folder / "o-check", maps),
        command_args("bias", folder, folder / "o-bias", maps),
        command_args("layers", folder, folder / "o-layers", maps),
        ["layers", DIGITS, folder, "--layer", "relu", "--spatial", "-r", "-o", folder / "o-spatial", "-q"],
        command_args("compare", folder, folder / "o-compare", maps),
        ["stability", DIGITS, image, "--patch", "2", "--trials", "1", "-o", folder / "o-stability", "-q"],
        ["compare", DIGITS, image, maps / "img0.npy", "--patch", "2", "--steps", "4", "-o", folder / "o-one", "-q"],
        ["diff", DIGITS, DIGITS, folder, "--patch", "2", "-r", "-o", folder / "o-diff", "-q"],
        ["sanity", DIGITS, image, "--patch", "2", "-o", folder / "o-sanity", "-q"],
        ["run", DIGITS, image, "--patch", "2", "-o", folder, "-q"],  # outputs right beside the inputs
    ):
        assert invoke(*args).exit_code == 0, args
    written = [p for p in folder.rglob("*.png") if not (p.name.startswith("img") and p.name.count(".") == 1)]
    assert len(written) > 40 and {p.name.split(".")[-2] for p in written} >= {
        "overlay",
        "heatmap",
        "panels",
        "check",
        "spatial",
        "stability",
        "compare",
        "diff",
        "sanity",
    }
    assert {"bias.png", "layers.png", "activations.png", "aggregate.png"} <= {p.name for p in written}
    found = sorted(p.path.relative_to(folder).as_posix() for p in discover_inputs([str(folder)], recursive=True)[0])
    assert found == ["img0.png", "img2.png", "img4.png", "sub/img1.png", "sub/img3.png", "sub/img5.png"]
    assert [p for p in written if not is_own_output(p)] == []
    for command in ("bias", "layers", "compare", "check", "run"):
        out = tmp_path / f"again-{command}"
        result = invoke(*command_args(command, folder, out, maps))
        assert result.exit_code == 0, (command, result.stderr)
        got = numbers(command, out)["images"]
        assert got == ({"ok": COUNT} if command == "bias" else COUNT if command == "layers" else got)
        if command not in ("bias", "layers"):
            assert len(got) == COUNT


def test_a_users_files_with_output_like_names_stay_inputs(tmp_path):
    """Without the record that vouches for them, names like bias.png or x.check.png are the user's images."""
    folder = tmp_path / "ds"
    folder.mkdir()
    names = ("bias.png", "layers.png", "x.check.png", "x.spatial.png", "x.overlay.png", "aggregate.png", "x.diff.png")
    for name in names + ("x.sanity.png",):
        Image.fromarray(np.zeros((8, 8), dtype=np.uint8), "L").save(folder / name)
    (folder / "bias.json").write_text('{"kind": "something else"}')
    (folder / "x.sanity.json").write_text('{"kind": "something else"}')
    found = discover_inputs([str(folder)])[0]
    assert len(found) == 8 and not any(is_own_output(p.path) for p in found)


def test_a_nifti_map_listed_by_its_record_is_an_output_not_a_volume_to_explain(tmp_path):
    """STEM.map.nii.gz (the map on a NIfTI input's grid) would be read as a volume by a later recursive run."""
    (tmp_path / "scan.map.nii.gz").write_bytes(b"\x1f\x8b")
    assert not is_own_output(tmp_path / "scan.map.nii.gz")  # no record: a user's file
    (tmp_path / "scan.json").write_text(json.dumps({"outputs": ["scan.map.nii.gz", "scan.npy"]}))
    assert is_own_output(tmp_path / "scan.map.nii.gz")

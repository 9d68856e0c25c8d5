"""Do the manual's example commands give byte-identical outputs at a given commit and in the working tree?

Runs every case below twice, once with the code of ``--base`` (checked out into a temporary ``git worktree``
and put first on PYTHONPATH) and once with the working tree's code, each time in the same scratch folder (so
absolute paths in the records are the same) on the working tree's sample data, and compares, byte for byte:
every file each command wrote, its stdout, its stderr and its exit code.

    python benchmarks/outputs_identical.py --base eadef0b        # run from the repository root
    python benchmarks/outputs_identical.py --base main --cases cat,digits-folder --keep

Exit status: 0 when everything is identical, 1 when anything differs (each difference is listed).

What is left out, and why (everything else is compared byte for byte):
- ``--dry-run``'s time estimate: one timed batch. The JSON is compared without ``seconds_per_forward_pass``,
  ``estimated_s`` and ``estimated_total_s``; the text line with every "N ms"/"N s" figure replaced by "#".
- The timing of a run: every case passes ``--no-timing`` where the command has it; ``compare`` records hold no
  timing; ``check`` rows' ``seconds`` is masked in check.json, check.csv, stdout and the report (its data, and
  the hash of the page's script that holds it), and ``--baseline-check``'s per-baseline ``seconds`` likewise
  (neither command has ``--no-timing``).
- The manifest's ``process`` (the pid of the process that wrote it: only while running) and ``job``
  (a random job id) are masked; the rest of the manifest is compared.
- Bad input (the ``errors`` case): exit codes, stdout and files are compared byte for byte; stderr must be one
  ``error:`` line on both sides, and where the words of that line changed both lines are printed as a change
  of wording (library errors name parameters, the command shows the flag), not counted as a difference.
- Nothing else: PNG, .npy, CSV, HTML, NIfTI and JSON are compared as bytes.
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

ROOT = Path(__file__).resolve().parents[1]
EFF = "sample_models/efficientnet_lite0.onnx"
DIGITS = "sample_models/digits_cnn.onnx"
CT2D = "sample_models/ct2d.onnx"
LESION = "sample_models/lesion3d.onnx"
CAT = "sample_images/cat.jpg"
MED = "sample_images/medical"


@dataclass
class Case:
    name: str
    commands: Sequence[Sequence[str]]  # each an `occlude` argument list; "{out}" is the case's output folder
    mask: Optional[Callable[[str, str], str]] = None  # (file name or "stdout"/"stderr", text) -> text to compare
    # bad input: the exit code, stdout and the files are compared; stderr must be one "error:" line on both sides,
    # and where its words differ both texts are listed as a wording change (not a difference)
    wording: bool = False


def _mask_dry_run(name: str, text: str) -> str:
    if name == "stdout" and text.lstrip().startswith("{"):
        document = json.loads(text)
        for key in ("seconds_per_forward_pass", "estimated_s", "estimated_total_s"):
            document.pop(key, None)
        return json.dumps(document, sort_keys=True)
    return re.sub(r"[0-9.]+ (ms|s)\b", "# \\1", text)


def _mask_seconds(name: str, text: str) -> str:
    """check's per-image seconds (check.json, check.csv, stdout, the report's data and the hash of the page's
    script, which holds that data) and --baseline-check's per-baseline seconds."""
    if name.endswith(".json") or name == "stdout":
        return re.sub(r'"seconds": [0-9.eE+-]+', '"seconds": #', text)
    if name.endswith(".csv"):  # seconds is the 15th column of check.csv
        return re.sub(r"(?m)^((?:[^,\n]*,){14})[0-9.]+,", r"\1#,", text)
    if name.endswith(".html"):
        return re.sub(r"sha256-[A-Za-z0-9+/=]+", "sha256-#", re.sub(r'"sec":[0-9.eE+-]+', '"sec":#', text))
    return text


MANIFEST = re.compile(r"^manifest(\.shard-\d+-of-\d+)?\.json$")


def _mask_manifest(name: str, text: str) -> str:
    if MANIFEST.match(Path(name).name):
        document = json.loads(text)
        document.pop("process", None)
        if "job" in document:
            document["job"] = "#"
        return json.dumps(document, sort_keys=True)
    return text


def cases() -> List[Case]:
    t = "--no-timing"
    return [
        # occlude run: one photo, several options (small patches for speed)
        Case("cat", [["run", EFF, CAT, "--patch", "32", "--stride", "32", "-o", "{out}", t, "-q"]]),
        Case("cat-incremental", [["run", EFF, CAT, "--patch", "32", "--stride", "16", "-o", "{out}", t, "--json"]]),
        Case(
            "cat-top-k-all-classes",
            [["run", EFF, CAT, "--patch", "56", "--top-k", "3", "--all-classes", "-o", "{out}", t, "--json"]],
        ),
        Case("cat-multiscale", [["run", EFF, CAT, "--patch", "28,56", "--multiscale", "-o", "{out}", t, "--json"]]),
        Case(
            "cat-refine",
            [["run", EFF, CAT, "--patch", "48", "--stride", "8", "--refine", "-o", "{out}", t, "-q", "--panels"]],
        ),
        Case(
            "cat-region-blur",
            [["run", EFF, CAT, "--patch", "32", "--region", "40,30,200,180", "--baseline", "blur", "-o", "{out}", t]],
        ),
        Case(
            "digits-folder",
            [
                ["run", DIGITS, "sample_images/", "--aggregate", "--report", "-o", "{out}", t, "--json"],
                ["run", DIGITS, "sample_images/", "--aggregate", "--report", "--resume", "-o", "{out}", t, "--json"],
                ["summary", "{out}", "--json"],
                ["report", "{out}"],
            ],
            mask=_mask_manifest,
        ),
        Case(
            "digits-shards",
            [
                ["run", DIGITS, "sample_images/", "--shard", "1/2", "--aggregate", "-o", "{out}", t, "-q"],
                ["run", DIGITS, "sample_images/", "--shard", "2/2", "--aggregate", "-o", "{out}", t, "-q"],
                ["summary", "{out}"],
            ],
            mask=_mask_manifest,
        ),
        Case(
            "digits-metrics-cmap",
            [
                [
                    "run",
                    DIGITS,
                    "sample_images/digit_3.png",
                    "--patch",
                    "2",
                    "--metrics",
                    "--cmap",
                    "coolwarm",
                    "--sign",
                    "positive",
                    "--photo",
                    "color",
                    "-o",
                    "{out}",
                    t,
                    "--json",
                ]
            ],
        ),
        Case(
            "dry-run",
            [
                ["run", EFF, CAT, "--patch", "32", "--dry-run", "--json"],
                ["run", EFF, CAT, "--patch", "16,32", "--metrics", "--dry-run"],
                [
                    "run",
                    DIGITS,
                    "sample_images/",
                    "--refine",
                    "--patch",
                    "3",
                    "--stride",
                    "1",
                    "--refine-budget",
                    "0.5",
                    "--dry-run",
                ],
            ],
            mask=_mask_dry_run,
        ),
        Case(
            "info",
            [
                ["info", EFF, "--json"],
                ["info", DIGITS],
                ["info", DIGITS, "--labels"],
                ["info", DIGITS, "--layers", "--json"],
                ["info", LESION, "--json"],
            ],
        ),
        # validation commands
        Case(
            "compare",
            [
                [
                    "compare",
                    EFF,
                    CAT,
                    "docs/examples/cat.ig.npy",
                    "--patch",
                    "56",
                    "--name",
                    "IG",
                    "-o",
                    "{out}",
                    "--json",
                    "--steps",
                    "10",
                ]
            ],
        ),
        Case(
            "check",
            [
                [
                    "check",
                    DIGITS,
                    "sample_images/digit_3.png",
                    "sample_images/digit_7.png",
                    "--box",
                    "2,0,6,8",
                    "--min-energy",
                    "0.4",
                    "--report",
                    "-o",
                    "{out}",
                    "--json",
                ],
            ],
            mask=_mask_seconds,
        ),
        # analyses
        Case(
            "bias",
            [["bias", DIGITS, "sample_images/", "--box", "0,0,3,3", "--bootstrap", "200", "-o", "{out}", "--json"]],
        ),
        Case(
            "layers",
            [
                ["layers", DIGITS, "sample_images/", "--layer", "relu_1", "-o", "{out}", t, "--json"],
                [
                    "layers",
                    DIGITS,
                    "sample_images/digit_3.png",
                    "--layer",
                    "relu_1",
                    "--spatial",
                    "--patch",
                    "2",
                    "-o",
                    "{out}/spatial",
                    t,
                ],
            ],
        ),
        Case(
            "stability",
            [
                ["stability", DIGITS, "sample_images/digit_3.png", "--trials", "3", "--patch", "2", "-o", "{out}", t],
                [
                    "stability",
                    EFF,
                    CAT,
                    "--trials",
                    "2",
                    "--patch",
                    "56",
                    "--box",
                    "40,30,120,120",
                    "--expect",
                    "281",
                    "-o",
                    "{out}/box",
                    t,
                    "--json",
                ],
            ],
        ),
        # medical inputs
        Case("dicom-slice", [["run", CT2D, f"{MED}/ct_lesion.dcm", "--window", "bone", "-o", "{out}", t, "--json"]]),
        Case(
            "nifti-3d",
            [
                [
                    "run",
                    LESION,
                    f"{MED}/lesion_volume.nii.gz",
                    "--patch",
                    "8x8x8",
                    "--stride",
                    "4x4x4",
                    "-o",
                    "{out}",
                    t,
                    "--json",
                ],
                ["run", LESION, f"{MED}/series/", "--series", "-o", "{out}/series", t, "-q"],
                ["run", LESION, f"{MED}/lesion_volume.nii.gz", "--baseline-check", "-o", "{out}/check", "--json"],
                ["stability", LESION, f"{MED}/lesion_volume.nii.gz", "--trials", "2", "-o", "{out}/stab", t],
            ],
            mask=_mask_seconds,
        ),
        # bad input: one error line, the documented exit code, the same words
        Case(
            "errors",
            [
                ["run", EFF, CAT, "--patch", "0"],
                ["run", EFF, CAT, "--patch", "300"],
                ["run", EFF, CAT, "--size", "3x"],
                ["run", EFF, CAT, "--stride", "40", "--patch", "32"],
                ["run", EFF, CAT, "--refine", "--refine-budget", "2"],
                ["run", DIGITS, CAT, "--refine", "--patch", "3", "--stride", "1"],
                ["run", EFF, CAT, "--region", "1,2,3"],
                ["run", EFF, CAT, "--baseline", "purple"],
                ["run", EFF, CAT, "--score", "nonsense"],
                ["run", DIGITS, CAT, "--target", "11"],
                ["run", DIGITS, CAT, "--labels", "README.md"],
                ["run", EFF, CAT, "--top-k", "0"],
                ["run", EFF, CAT, "--target", "no such class"],
                ["run", EFF, CAT, "--mean", "x"],
                ["run", EFF, CAT, "--max-memory", "lots"],
                ["run", EFF, CAT, "--window", "nope"],
                ["run", EFF, CAT, "--shard", "3/2"],
                ["run", EFF, "no/such/file.png", "-q", "-o", "{out}/missing", "--no-timing"],
                ["run", LESION, CAT, "-o", "{out}/3d", "--no-timing", "-q"],
                ["check", DIGITS, "sample_images/digit_3.png", "--min-energy", "2"],
                ["bias", DIGITS, "sample_images/", "--box", "1,2"],
                ["layers", DIGITS, "sample_images/", "--layer", "logits"],
                ["stability", DIGITS, "sample_images/digit_3.png", "--noise", "3"],
                ["compare", DIGITS, "sample_images/digit_3.png", "--fractions", "50,10"],
            ],
            wording=True,
        ),
    ]


def _prepare_scratch(scratch: Path) -> None:
    """The scratch folder: the working tree's sample data (and docs/examples) linked in, nothing else."""
    if scratch.exists():
        shutil.rmtree(scratch)
    scratch.mkdir(parents=True)
    (scratch / "docs").mkdir()
    for name in ("sample_models", "sample_images"):
        (scratch / name).symlink_to(ROOT / name)
    (scratch / "docs" / "examples").symlink_to(ROOT / "docs" / "examples")


def run_side(code: Path, scratch: Path, keep_at: Path, chosen: Sequence[Case]) -> Dict[str, dict]:
    """Every case with the code at ``code``; the outputs of case C end up in ``keep_at/C``."""
    env = dict(os.environ, PYTHONPATH=str(code), OCCLUDE_CACHE_DIR="off", COLUMNS="200", NO_COLOR="1")
    env.pop("OCCLUDE_DEBUG", None)
    results: Dict[str, dict] = {}
    for case in chosen:
        _prepare_scratch(scratch)
        streams = {}
        for i, command in enumerate(case.commands):
            args = [a.replace("{out}", "out") for a in command]
            done = subprocess.run(
                [sys.executable, "-m", "occlude_cli", *args], cwd=scratch, env=env, capture_output=True, timeout=900
            )
            streams[f"{i}.stdout"] = done.stdout
            streams[f"{i}.stderr"] = done.stderr
            streams[f"{i}.exit"] = str(done.returncode).encode()
        target = keep_at / case.name
        if (scratch / "out").exists():
            shutil.move(str(scratch / "out"), str(target))
        else:
            target.mkdir(parents=True)
        results[case.name] = streams
    return results


def _files(folder: Path) -> Dict[str, Path]:
    return {p.relative_to(folder).as_posix(): p for p in sorted(folder.rglob("*")) if p.is_file()}


def _same(name: str, a: bytes, b: bytes, case: Case) -> bool:
    if a == b:
        return True
    if case.mask is None:
        return False
    try:
        kind = "stdout" if name.endswith(".stdout") else "stderr" if name.endswith(".stderr") else name
        return case.mask(kind, a.decode()) == case.mask(kind, b.decode())
    except (UnicodeDecodeError, ValueError):
        return False


def _one_error_line(text: bytes) -> bool:
    lines = [line for line in text.decode(errors="replace").splitlines() if line.strip()]
    return len(lines) == 1 and lines[0].startswith("error:")


def compare(case: Case, base: Tuple[Path, dict], head: Tuple[Path, dict], wording: List[str]) -> List[str]:
    problems = []
    base_files, head_files = _files(base[0]), _files(head[0])
    for name in sorted(set(base_files) | set(head_files)):
        if name not in head_files:
            problems.append(f"{case.name}: {name} only at the base")
        elif name not in base_files:
            problems.append(f"{case.name}: {name} only in the working tree")
        elif not filecmp.cmp(base_files[name], head_files[name], shallow=False) and not _same(
            name, base_files[name].read_bytes(), head_files[name].read_bytes(), case
        ):
            problems.append(f"{case.name}: {name} differs")
    for stream in base[1]:
        a, b = base[1][stream], head[1][stream]
        if case.wording and stream.endswith("stderr") and a != b and _one_error_line(a) and _one_error_line(b):
            wording.append(f"{case.name} {stream[: -len('.stderr')]}: {a.decode().strip()}")
            wording.append(f"{' ' * len(case.name)} {' ' * len(stream[: -len('.stderr')])}  {b.decode().strip()}")
            continue
        if not _same(stream, a, b, case):
            problems.append(f"{case.name}: command {stream} differs")
            if stream.endswith(("stderr", "stdout", "exit")) and len(base[1][stream]) < 2000:
                problems.append(f"    base: {base[1][stream].decode(errors='replace').strip()[:600]}")
                problems.append(f"    tree: {head[1][stream].decode(errors='replace').strip()[:600]}")
    return problems


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", required=True, help="the commit to compare the working tree with")
    parser.add_argument("--cases", help="comma-separated case names (default: all)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder and print where it is")
    args = parser.parse_args(argv)
    chosen = cases()
    if args.cases:
        wanted = set(args.cases.split(","))
        unknown = wanted - {c.name for c in chosen}
        if unknown:
            parser.error(f"unknown case(s): {', '.join(sorted(unknown))}")
        chosen = [c for c in chosen if c.name in wanted]
    work = Path(tempfile.mkdtemp(prefix="occlude-identical-"))
    base_tree = work / "base-tree"
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--verify", args.base + "^{commit}"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        if not commit:
            parser.error(f"not a commit: {args.base}")
        subprocess.run(
            ["git", "worktree", "add", "--detach", str(base_tree), commit], cwd=ROOT, check=True, capture_output=True
        )
        print(f"base {commit[:12]} vs the working tree; {len(chosen)} case(s)", flush=True)
        base = run_side(base_tree, work / "scratch", work / "base", chosen)
        head = run_side(ROOT, work / "scratch", work / "tree", chosen)
        problems: List[str] = []
        wording: List[str] = []
        for case in chosen:
            sides = (work / "base" / case.name, base[case.name]), (work / "tree" / case.name, head[case.name])
            found = compare(case, *sides, wording)
            files = len(_files(work / "tree" / case.name))
            print(
                f"{'identical' if not found else 'DIFFERS  '} {case.name} ({files} files, "
                f"{len(case.commands)} command(s))",
                flush=True,
            )
            problems += found
        for line in problems:
            print(line)
        if wording:
            print("wording of error lines (base, then working tree):")
            for line in wording:
                print("  " + line)
        print("IDENTICAL" if not problems else f"{len(problems)} difference(s)")
        return 0 if not problems else 1
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(base_tree)], cwd=ROOT, capture_output=True)
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

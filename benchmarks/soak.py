"""Kill/resume soak: does a folder run survive being killed at any moment?

Each round starts `occlude run` on a folder as a subprocess, kills it (SIGKILL, or SIGTERM with
``--signal mixed``) at a random moment (seeded), possibly several times with `--resume` in between, then
finishes with `--resume`. The round survives when the final folder holds exactly the files of an
uninterrupted run, each byte-identical to it (the runs use --no-timing), no temporary file is left, every
JSON parses strictly, every output a JSON lists has its recorded size and sha256, and every SIGTERM
exited 130 (or 0 when the run had already finished).

    python benchmarks/soak.py                 # 20 rounds of 24 images: about 6 minutes on a busy 2-core machine
    python benchmarks/soak.py --rounds 5 --images 10

Prints one line per round and "survived R of N rounds"; exits 1 if any round failed.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from occlude_cli.outputs.write import verify_outputs  # noqa: E402

OCCLUDE = [sys.executable, "-m", "occlude_cli.cli"]


def make_images(folder: Path, n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    (folder / "sub").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        where = folder / "sub" if i % 4 == 3 else folder  # some in a sub-folder: keys keep the layout
        Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8), "L").save(where / f"img{i:03d}.png")


def run(args, out: Path, resume: bool) -> subprocess.Popen:
    cmd = OCCLUDE + [str(a) for a in args] + ["-o", str(out)] + (["--resume"] if resume else [])
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def files(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p for p in sorted(folder.rglob("*")) if p.is_file()}


def strict(path: Path) -> None:
    def refuse(token):
        raise ValueError(f"bare {token}")

    json.loads(path.read_text(encoding="utf-8"), parse_constant=refuse)


def check(out: Path, ref: Path) -> list:
    """What differs from the uninterrupted run (empty: the round survived)."""
    problems = []
    got, want = files(out), files(ref)
    temps = [k for k in got if k.rsplit("/", 1)[-1].startswith(".")]
    if temps:
        problems.append(f"temporary files left: {temps[:3]}")
    missing = sorted(set(want) - set(got))
    extra = sorted(set(got) - set(want) - set(temps))
    if missing:
        problems.append(f"missing: {missing[:3]}")
    if extra:
        problems.append(f"extra: {extra[:3]}")
    for name in sorted(set(got) & set(want)):
        if name.startswith(("summary", "manifest")):
            continue  # statuses differ (skipped vs ok); the summary's rows are checked below
        if got[name].read_bytes() != want[name].read_bytes():
            problems.append(f"differs: {name}")
        if name.endswith(".json"):
            try:
                strict(got[name])
            except ValueError as exc:
                problems.append(f"bad JSON {name}: {exc}")
            reason = verify_outputs(got[name])
            if reason:
                problems.append(f"{name}: {reason}")
    summary = json.loads((out / "summary.json").read_text()) if (out / "summary.json").is_file() else None
    if summary is None:
        problems.append("no summary.json")
    elif summary["counts"].get("failed"):
        problems.append(f"failed rows in summary: {summary['counts']}")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-kills", type=int, default=3, help="kills per round: 1 to this many")
    parser.add_argument(
        "--signal",
        choices=("kill", "mixed"),
        default="kill",
        help="kill: SIGKILL only; mixed: SIGKILL or SIGTERM at random",
    )
    options = parser.parse_args()
    rng = random.Random(options.seed)
    work = Path(tempfile.mkdtemp(prefix="occlude-soak-"))
    try:
        images = work / "images"
        make_images(images, options.images, options.seed)
        model = ROOT / "sample_models" / "digits_cnn.onnx"
        args = ["run", model, images, "-r", "--patch", "1", "--stride", "1", "--no-timing", "--quiet", "--top-k", "2"]
        ref = work / "ref"
        started = time.perf_counter()
        proc = run(args, ref, resume=False)
        _, err = proc.communicate()
        full = time.perf_counter() - started
        if proc.returncode != 0:
            print(f"reference run failed ({proc.returncode}): {err.strip()}")
            return 1
        print(f"reference: {options.images} images in {full:.2f} s; kills land uniformly in [0, {full:.2f}] s")
        survived = 0
        kills_total = 0
        for round_no in range(1, options.rounds + 1):
            out = work / f"round{round_no}"
            kills = rng.randint(1, options.max_kills)
            moments = []
            problems = []
            for k in range(kills):
                proc = run(args, out, resume=k > 0)
                delay = rng.uniform(0, full)
                sig = signal.SIGKILL if options.signal == "kill" or rng.random() < 0.5 else signal.SIGTERM
                time.sleep(delay)
                proc.send_signal(sig)
                proc.communicate()
                moments.append(f"{delay:.2f}s/{'KILL' if sig == signal.SIGKILL else 'TERM'}->{proc.returncode}")
                if sig == signal.SIGTERM and proc.returncode not in (0, 130):  # README: SIGTERM exits 130
                    problems.append(f"SIGTERM exited {proc.returncode}")
                kills_total += 1
            proc = run(args, out, resume=True)
            _, err = proc.communicate()
            if proc.returncode:
                problems.append(f"final --resume exited {proc.returncode}: {err.strip()[:200]}")
            problems += check(out, ref)
            if not problems:
                survived += 1
            print(
                f"round {round_no:>2}: {' '.join(moments):<48} "
                f"{'ok' if not problems else 'FAILED: ' + '; '.join(problems)}"
            )
            shutil.rmtree(out, ignore_errors=True)
        print(f"survived {survived} of {options.rounds} rounds ({kills_total} kills)")
        return 0 if survived == options.rounds else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

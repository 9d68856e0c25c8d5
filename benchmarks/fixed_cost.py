"""The fixed cost of one `occlude` call (issue 24): a 16-window run of the sample model on the sample cat
(`occlude run sample_models/efficientnet_lite0.onnx sample_images/cat.jpg --patch 56 --stride 56`), start to
exit, as a CI job that calls occlude once per image pays it. Goal: at most 0.5 s wall.

    python benchmarks/fixed_cost.py                     # 11 pairs against main, and where the time goes
    python benchmarks/fixed_cost.py --baseline none     # this tree alone
    python benchmarks/fixed_cost.py --baseline HEAD~3 --repeats 21

Each run is a fresh interpreter with Python's bytecode cache on (as installed packages have it) and occlude's
cache warm (a private OCCLUDE_CACHE_DIR after a first call: the state of every later call of a CI job). This
tree and the baseline (a `git archive` of the revision in a temporary folder) alternate, pair by pair, so that a
drifting machine moves both; the medians of wall and CPU seconds (user + system, from the kernel's accounting of
the finished child) and the median of the per-pair ratios are printed. `--breakdown` (on by default) adds where
one call's time goes: CPU seconds of each phase (importing the command, parsing the flags with the command's
imports, the library run, the exit) and the import time of each top-level package (`python -X importtime`,
medians of 3). Results: printed, and written to benchmarks/results/fixed-cost-*.json.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "sample_models" / "efficientnet_lite0.onnx"
CAT = ROOT / "sample_images" / "cat.jpg"
ARGS = ["run", str(MODEL), str(CAT), "--patch", "56", "--stride", "56", "--quiet"]

PHASES = """
import atexit, sys, time
started = time.process_time()
from occlude_cli.cli.app import main
imported = time.process_time()
import occlude_cli.runs.run as runs
marks = {}
original = runs.run_folder
def timed(*args, **kwargs):
    marks["command"] = time.process_time()
    try:
        return original(*args, **kwargs)
    finally:
        marks["run"] = time.process_time()
runs.run_folder = timed
def report():
    end = time.process_time()
    print("PHASES", imported - started, marks["command"] - imported, marks["run"] - marks["command"],
          end - marks["run"], file=sys.stderr)
atexit.register(report)
sys.argv = ["occlude"] + sys.argv[1:]
main()
"""


def checkout(revision: str, folder: Path) -> Path:
    """The tree of ``revision`` in ``folder`` (git archive: nothing of this working tree)."""
    archive = subprocess.run(["git", "archive", revision], cwd=ROOT, check=True, capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(folder, filter="data")
    return folder


def environment(tree: Path, cache: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPATH"] = str(tree)
    env["OCCLUDE_CACHE_DIR"] = str(cache)
    return env


def one_run(tree: Path, out: Path, cache: Path) -> tuple:
    """(wall seconds, CPU seconds) of one whole process."""
    command = [sys.executable, "-m", "occlude_cli", *ARGS, "--out", str(out)]
    started = time.perf_counter()
    proc = subprocess.Popen(command, env=environment(tree, cache), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{tree}: exit {proc.returncode}: {proc.stderr.read().decode() if proc.stderr else ''}")
    return wall, usage.ru_utime + usage.ru_stime


def breakdown(tree: Path, out: Path, cache: Path, repeats: int = 3) -> dict:
    """CPU seconds per phase (medians) and import milliseconds per top-level package (medians)."""
    env = environment(tree, cache)
    phases = []
    for _ in range(repeats):
        done = subprocess.run(
            [sys.executable, "-c", PHASES, *ARGS, "--out", str(out)], env=env, capture_output=True, text=True
        )
        line = next(x for x in done.stderr.splitlines() if x.startswith("PHASES"))
        phases.append([float(v) for v in line.split()[1:]])
    packages: list = []
    for _ in range(repeats):
        done = subprocess.run(
            [sys.executable, "-X", "importtime", "-m", "occlude_cli", *ARGS, "--out", str(out)],
            env=env,
            capture_output=True,
            text=True,
        )
        spent: Counter = Counter()
        for line in done.stderr.splitlines():
            match = re.match(r"import time:\s+(\d+) \|\s+\d+ \|\s*(\S+)", line)
            if match:
                spent[match.group(2).split(".")[0]] += int(match.group(1))
        packages.append(spent)
    names = set().union(*packages)
    per_package = {n: statistics.median(p.get(n, 0) for p in packages) / 1000 for n in names}
    top = dict(sorted(per_package.items(), key=lambda item: -item[1])[:12])
    keys = ("import the command line", "parse the flags, import the command", "the library run", "exit")
    return {
        "cpu_s_per_phase": {k: round(statistics.median(p[i] for p in phases), 4) for i, k in enumerate(keys)},
        "import_ms_per_package": {k: round(v, 1) for k, v in top.items()},
        "import_ms_total": round(sum(per_package.values()), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", default="main", help="git revision to compare with, or 'none'")
    parser.add_argument("--repeats", type=int, default=11, help="pairs of runs (odd: a true median)")
    parser.add_argument("--no-breakdown", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="occlude-fixed-cost-") as tmp_name:
        tmp = Path(tmp_name)
        trees = {"this tree": ROOT}
        if args.baseline != "none":
            trees[f"baseline {args.baseline}"] = checkout(args.baseline, tmp / "baseline")
        runs: dict = {name: [] for name in trees}
        for name, tree in trees.items():  # warm: bytecode, occlude's cache, the file cache
            for _ in range(2):
                one_run(tree, tmp / name.replace(" ", "-"), tmp / f"cache-{name.replace(' ', '-')}")
        for _ in range(args.repeats):
            for name, tree in trees.items():
                runs[name].append(one_run(tree, tmp / name.replace(" ", "-"), tmp / f"cache-{name.replace(' ', '-')}"))
        load = os.getloadavg()
        results: dict = {"command": "occlude " + " ".join(ARGS[:1] + ["MODEL", "CAT"] + ARGS[3:]), "load": load}
        for name, values in runs.items():
            walls, cpus = [v[0] for v in values], [v[1] for v in values]
            results[name] = {
                "wall_s_median": round(statistics.median(walls), 4),
                "wall_s_min": round(min(walls), 4),
                "cpu_s_median": round(statistics.median(cpus), 4),
                "runs": values,
            }
        if len(trees) == 2:
            new, old = runs["this tree"], runs[f"baseline {args.baseline}"]
            results["ratio_wall_median"] = round(statistics.median(a[0] / b[0] for a, b in zip(new, old)), 4)
            results["ratio_cpu_median"] = round(statistics.median(a[1] / b[1] for a, b in zip(new, old)), 4)
        if not args.no_breakdown:
            results["breakdown"] = breakdown(ROOT, tmp / "breakdown", tmp / "cache-this-tree")
    shown = {
        k: ({kk: vv for kk, vv in v.items() if kk != "runs"} if isinstance(v, dict) else v) for k, v in results.items()
    }
    print(json.dumps(shown, indent=1, default=str))
    folder = ROOT / "benchmarks" / "results"
    folder.mkdir(exist_ok=True)
    path = folder / f"fixed-cost-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(results, indent=1))
    print(f"written: {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()

"""The names of the files occlude writes into an output folder: one rule, used by every command.

Run-level files keep fixed names where scripts expect them (``summary.json``, ``summary.csv``,
``summary.shard-K-of-N.*``, ``manifest*.json``, ``aggregate.*``, ``index.html``, ``check.*``,
``compare.*``, ``bias*``, ``layers*``, ...). Every input gets a STEM for its own files (``STEM.json``,
``STEM.overlay.png``, ...): its path relative to the folder or glob it came from, without the image suffix
(``photos/cat.jpg`` -> ``cat``), kept as it is unless that could lose, mix or hide a result. Then the file
name becomes ``NAME~HASH``: NAME the file name *with* its suffix, where every character the outside-text
rule escapes (:mod:`occlude_cli.text`: control characters, undecodable bytes, bidirectional controls) and a
leading dot become ``_``, cut to fit; HASH the first 12 hex digits of the sha256 of the input's exact
relative path. That happens when the plain stem

1. equals another input's stem in the same folder, ignoring case and Unicode normalisation (``a.png`` and
   ``a.PNG``; ``é`` in NFC and in NFD): every one of them is renamed, so none depends on which came first;
2. holds a character the outside-text rule escapes, or starts with a dot (a hidden file);
3. is a run-level name in the top folder (``summary``, ``aggregate``, ``index``, ``manifest``, ...);
4. ends like another stem's own outputs (``.overlay``, ``.heatmap``, ``.topk``, ``.scales``,
   ``.patch-8x8``, ...) or already looks like ``NAME~HASH``;
5. is too long: the name keeps its first bytes (whole characters) before ``~HASH``.

Folder names in the relative path follow rules 1 and 2 (and a folder named like an output file, ``x.json``,
is renamed too). The names depend only on the inputs' relative paths, so every shard of a run, and every
``--resume``, gives each input the same name; two inputs never share one, not even on a case-insensitive
file system, and no input's files can be taken for a run-level file or for another input's.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections import defaultdict
from typing import Dict, List, Sequence, Tuple

from ..text import exact_bytes, is_safe

HASH_DIGITS = 12
NAME_MAX = 255
# Output names must fit NAME_MAX (255 bytes) with the longest suffix occlude adds (".patch-NNNNxNNNN.overlay.png")
# and the temporary name around it (".NAME.PID.XXXXXXXX.tmp"): a longer file name is shortened, keeping a hash.
MAX_KEY_NAME_BYTES = 180

# Files of the whole run (or of a whole command) in the top of an output folder, by stem.
RUN_LEVEL_STEMS = frozenset(
    {
        "summary",
        "manifest",
        "aggregate",
        "index",
        "check",
        "compare",
        "baseline_check",
        "bias",
        "bias_classes",
        "layers",
        "layers_images",
        "activations",
    }
)
_SHARD_FILE = re.compile(r"^(?:summary|manifest)\.shard-\d+-of-\d+$", re.IGNORECASE)
# What occlude appends to a stem for an input's other files: a stem ending like this could be taken for them.
OUTPUT_INFIXES = (
    "overlay",
    "heatmap",
    "panels",
    "topk",
    "classes",
    "top_class",
    "scales",
    "multiscale",
    "compare",
    "check",
    "map",
    "montage",
    "planes",
    "spatial",
    "stability",
)
_INFIX_END = re.compile(
    r"\.(?:" + "|".join(OUTPUT_INFIXES) + r"|patch-\d+x\d+(?:x\d+)?)$",
    re.IGNORECASE,
)
_HASHED = re.compile(rf"~[0-9a-f]{{{HASH_DIGITS}}}$", re.IGNORECASE)
_OUTPUT_EXTENSIONS = (".json", ".npy", ".png", ".csv", ".html", ".gz")


def fold(name: str) -> str:
    """The form two names are compared in: Unicode NFC, then case-folded (what a case-insensitive,
    normalising file system such as APFS or NTFS takes for the same name)."""
    return unicodedata.normalize("NFC", name).casefold()


def name_hash(relative: str) -> str:
    """12 hex digits of the sha256 of a relative path's exact bytes."""
    return hashlib.sha256(exact_bytes(relative)).hexdigest()[:HASH_DIGITS]


def _portable(name: str) -> str:
    """``name`` with every character the outside-text rule would escape, and a leading dot, as '_'."""
    text = "".join(c if is_safe(c) else "_" for c in name)
    return "_" + text[1:] if text.startswith(".") else text


def hashed_name(name: str, relative: str, limit: int = MAX_KEY_NAME_BYTES) -> str:
    """``NAME~HASH``: ``name`` made portable (see :func:`_portable`) and cut to whole characters so that the
    result fits ``limit`` bytes, then '~' and :func:`name_hash` of ``relative``."""
    raw = _portable(name).encode("utf-8")
    head = raw[: limit - HASH_DIGITS - 1].decode("utf-8", "ignore")
    return f"{head}~{name_hash(relative)}"


def shorten_name(name: str, limit: int = MAX_KEY_NAME_BYTES) -> str:
    """``name`` when it fits ``limit`` bytes, else its first bytes (whole characters), '~' and 12 hex digits of
    its sha256: deterministic, and two long names that share a beginning stay apart."""
    if len(exact_bytes(name)) <= limit:
        return name
    return hashed_name(name, name, limit)


def is_run_level(stem: str) -> bool:
    """Is ``stem`` (top folder) the stem of a run-level file (``summary``, ``summary.shard-1-of-4``, ...)?"""
    return fold(stem) in RUN_LEVEL_STEMS or _SHARD_FILE.match(stem) is not None


def _plain_ok(stem: str) -> bool:
    return (
        bool(stem)
        and is_safe(stem)
        and not stem.startswith(".")
        and _INFIX_END.search(stem) is None
        and _HASHED.search(stem) is None
        and len(exact_bytes(stem)) <= MAX_KEY_NAME_BYTES
    )


def _folder_ok(name: str) -> bool:
    return is_safe(name) and not name.startswith(".") and not fold(name).endswith(_OUTPUT_EXTENSIONS)


def output_stems(inputs: Sequence[Tuple[str, str]]) -> List[str]:
    """The STEM of each input (see the module's docstring), in the order given.

    ``inputs``: (exact relative path with '/' separators and the file's suffix, the same without its image
    suffix) per input; relative paths must be distinct."""
    folder_names = _folder_names({rel.rsplit("/", 1)[0] for rel, _ in inputs if "/" in rel})
    placed: List[Tuple[str, str, str, str]] = []  # (folder as written, name, stem, exact relative path)
    groups: Dict[Tuple[str, str], int] = defaultdict(int)
    for rel, stem in inputs:
        folder = rel.rsplit("/", 1)[0] if "/" in rel else ""
        name = rel.rsplit("/", 1)[-1]
        base = stem.rsplit("/", 1)[-1]
        written = folder_names.get(folder, "")
        placed.append((written, name, base, rel))
        groups[(fold(written), fold(base))] += 1
    stems = []
    for written, name, base, rel in placed:
        plain = (
            groups[(fold(written), fold(base))] == 1 and _plain_ok(base) and not (written == "" and is_run_level(base))
        )
        final = base if plain else hashed_name(name, rel)
        stems.append(f"{written}/{final}" if written else final)
    return stems


def _folder_names(folders) -> Dict[str, str]:
    """Each input folder (exact, relative) -> its name under the output folder: components kept unless they
    hold escaped characters, start with a dot, end like an output file or collide (case, normalisation)
    with a sibling; those become NAME~HASH of the folder's exact relative path."""
    every: set = set()
    for folder in folders:
        parts = folder.split("/")
        every.update("/".join(parts[: i + 1]) for i in range(len(parts)))
    siblings: Dict[Tuple[str, str], set] = defaultdict(set)
    for path in every:
        parent, _, name = path.rpartition("/")
        siblings[(parent, fold(name))].add(name)
    written: Dict[str, str] = {"": ""}
    for path in sorted(every, key=lambda p: p.count("/")):
        parent, _, name = path.rpartition("/")
        keep = _folder_ok(name) and len(siblings[(parent, fold(name))]) == 1
        part = name if keep else hashed_name(name, path)
        written[path] = f"{written[parent]}/{part}" if written[parent] else part
    return written


def strip_suffix(relative: str) -> str:
    """A relative path without its file suffix (``.nii.gz`` counts as one)."""
    if relative.lower().endswith(".nii.gz"):
        return relative[: -len(".nii.gz")]
    head, dot, tail = relative.rpartition(".")
    return head if dot and head and "/" not in tail and not head.endswith("/") else relative


def stem_of(path) -> str:
    """The STEM of one input given alone (``occlude compare IMAGE``, ``occlude stability IMAGE``): its file
    name without suffix, under the same rule as a folder's inputs."""
    name = str(path).replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
    return output_stems([(name, strip_suffix(name))])[0]

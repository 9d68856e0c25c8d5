"""The inputs of every folder command, by one mechanism: files, folders and globs expanded into images with
collision-free output keys (the naming rule of :mod:`occlude_cli.outputs.names`), never an occlude output
folder or an earlier occlude output (no self-feeding), never a FIFO or device opened; and the shares of a
sharded run."""

from __future__ import annotations

import functools
import glob
import json
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

from ..errors import OccludeError
from ..loaders.images import file_kind
from ..outputs.names import fold, hashed_name, name_hash, output_stems, strip_suffix

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".avif", ".gif", ".ppm", ".pgm", ".pbm")
MEDICAL_SUFFIXES = (".dcm", ".nii", ".nii.gz")  # plus suffix-less files with the DICOM marker (issue 12)
_GLOB_CHARS = set("*?[")


@dataclass(frozen=True)
class InputImage:
    """One image to explain. ``key``: the STEM its outputs get under --out (the naming rule of
    :mod:`occlude_cli.outputs.names`: its relative path without suffix unless that could collide).
    ``source_stem``: its path relative to the argument it came from, without the image suffix, exactly as
    on disk: what companion files (masks, other methods' maps) are named after."""

    path: Path
    key: str
    source_stem: str = ""
    alias: Optional[str] = None  # --deidentify: the pseudonym every output shows instead of the path

    @property
    def shown(self) -> str:
        """The input as outputs name it: its path, or its pseudonym in a de-identifying run."""
        return self.alias if self.alias is not None else str(self.path)


def _is_image_name(path: Path) -> bool:
    if path.suffix.lower() in IMAGE_SUFFIXES or path.name.lower().endswith(MEDICAL_SUFFIXES):
        return True
    from ..loaders.dicom import is_dicom_file  # DICOM files often have no suffix

    return path.suffix == "" and is_dicom_file(path)


# Image files occlude itself writes, found again when an output folder lies inside an input folder. Each is an
# occlude output only when the record written with it vouches for it (a user's 'x.overlay.png' without such a
# record is an input like any other): per-image pictures and maps (STEM.overlay.png, STEM.patch-8x8.heatmap.png,
# STEM.compare.png, STEM.map.nii.gz, ...) are listed in STEM.json, STEM.compare.json or KEY.scales.json; the
# analyses' pictures sit beside their record (STEM.spatial.json, STEM.stability.json, bias.json, layers.json,
# summary.json, STEM.sanity.json), a check picture is listed by the check.json of its output folder, a diff
# picture by the diff.json of its output folder.
_OWN_FILE = re.compile(
    r"^(?P<stem>.+)\.(?P<kind>overlay|heatmap|compare|panels|montage|planes|check|diff|spatial|stability|sanity)\.png$"
    r"|^(?P<nifti>.+)\.map\.nii\.gz$"
    r"|^(?P<dicom>.+)\.(?:pm|sc|scan)\.dcm$"
)
_OWN_FIXED = {
    "bias.png": ("bias.json", "bias"),
    "layers.png": ("layers.json", "layers"),
    "activations.png": ("layers.json", "layers"),
}


def _under(path: Path, folders: Sequence[Path]) -> bool:
    return any(path == f or f in path.parents for f in folders)


def is_own_output(path: Path) -> bool:
    """True for a file that an earlier occlude command wrote (see ``_OWN_FILE``): its name is one occlude gives
    its outputs *and* the record written with it vouches for it. Every command's input discovery uses it, so
    that no analysis reads its own or another command's outputs (no self-feeding)."""
    name = path.name
    folder = path.parent
    if name == "aggregate.png":
        return _record(folder / "summary.json").summary
    if name in _OWN_FIXED:
        record_name, record_kind = _OWN_FIXED[name]
        return _record(folder / record_name).kind == record_kind
    match = _OWN_FILE.match(name)
    if not match:
        return False
    for group in ("nifti", "dicom"):  # STEM.map.nii.gz, STEM.pm.dcm...: listed by STEM.json
        if match.group(group) is not None:
            return name in _record(folder / f"{match.group(group)}.json").outputs
    stem, kind = match.group("stem"), match.group("kind")
    if kind in ("spatial", "stability", "sanity"):
        return _record(folder / f"{stem}.{kind}.json").kind == ("layers.spatial" if kind == "spatial" else kind)
    if kind in ("check", "diff"):  # listed by KIND.json of the output folder, which may lie above (keys with folders)
        for depth, parent in enumerate(path.parents):
            record = _record(parent / f"{kind}.json")
            if record.kind is not None or depth >= 16:
                return path.relative_to(parent).as_posix() in record.pictures
        return False
    candidates = [folder / f"{stem}.json", folder / f"{stem}.compare.json"]
    if stem.endswith(".multiscale"):
        candidates.append(folder / f"{stem[: -len('.multiscale')]}.scales.json")
    return any(name in _record(c).outputs for c in candidates)


@dataclass(frozen=True)
class _RecordFacts:
    """What output discovery needs of an occlude JSON record (kept small: records can hold whole maps)."""

    kind: Optional[str] = None  # its "kind", "record" for one without, None when not a record
    summary: bool = False  # a run summary (counts and images)
    outputs: frozenset = frozenset()  # the names its "outputs" list
    pictures: frozenset = frozenset()  # the pictures its rows list (check: "overlay", diff: "diff_png")


def _record(json_path: Path) -> _RecordFacts:
    try:
        info = json_path.stat()
    except OSError:
        return _RecordFacts()
    if not stat.S_ISREG(info.st_mode) or info.st_size > (64 << 20):
        return _RecordFacts()
    return _record_facts(str(json_path), info.st_size, info.st_mtime_ns)


@functools.lru_cache(maxsize=256)
def _record_facts(path: str, size: int, mtime_ns: int) -> _RecordFacts:
    try:
        with open(path, encoding="utf-8") as handle:
            record = json.load(handle)
    except (OSError, ValueError):
        return _RecordFacts()
    if not isinstance(record, dict):
        return _RecordFacts()
    images = record.get("images")
    rows: list = images if isinstance(images, list) else []
    return _RecordFacts(
        kind=str(record.get("kind", "record")),
        summary="counts" in record and "images" in record,
        outputs=frozenset(
            item.get("name") if isinstance(item, dict) else item
            for item in record.get("outputs") or []
            if isinstance(item, (dict, str))
        ),
        pictures=frozenset(
            row.get(key) for row in rows if isinstance(row, dict) for key in ("overlay", "diff_png") if row.get(key)
        ),
    )


def regular_file(path: Path) -> Tuple[bool, Optional[str]]:
    """(is a regular file, what it is otherwise): never opens the file (opening a FIFO blocks)."""
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        return False, f"unreadable ({exc.strerror or exc})"
    if stat.S_ISREG(mode):
        return True, None
    return False, file_kind(mode)


def _walk(folder: Path, recursive: bool, exclude: Sequence[Path], notes: List[Tuple[str, str]]) -> List[Path]:
    """Image files in ``folder`` (and its sub-folders), never entering an excluded folder (the run's --out),
    never opening anything; non-regular files with an image name are reported in ``notes``."""
    found: List[Path] = []
    for root, dirs, files in os.walk(folder):
        here = Path(root)
        if recursive:
            kept = []
            for d in sorted(dirs):
                if _under((here / d).resolve(), exclude):
                    notes.append((str(here / d), "skipped: it is the output folder (--out) of this command"))
                else:
                    kept.append(d)
            dirs[:] = kept
        else:
            dirs[:] = []
        for name in files:
            path = here / name
            if not _is_image_name(path):
                continue
            regular, kind = regular_file(path)
            if not regular:
                notes.append((str(path), f"skipped: not a regular file ({kind})"))
                continue
            if is_own_output(path):
                continue
            found.append(path)
    return sorted(found)


def _expand(
    arg: str,
    recursive: bool,
    exclude: Sequence[Path] = (),
    notes: Optional[List[Tuple[str, str]]] = None,
    series: bool = False,
    series_uid: Optional[str] = None,
) -> Tuple[List[Path], Path, Optional[str]]:
    """Files named by one PATH argument, the folder their output names are relative to, and an error.
    With ``series`` a folder is one input (a DICOM series), named after the folder (see :func:`_series_folders`)."""
    notes = notes if notes is not None else []
    path = Path(arg)
    if series and path.is_dir():  # a file argument is read as a file (a NIfTI volume, a DICOM file)
        folders, error = _series_folders(path, recursive, exclude, notes, series_uid)
        return folders, path.resolve().parent, error
    if any(c in arg for c in _GLOB_CHARS) and not path.exists():
        matches = []
        for p in sorted(Path(p) for p in glob.glob(arg, recursive=True)):
            if p.is_dir():
                continue
            regular, kind = regular_file(p)
            if not regular:
                notes.append((str(p), f"skipped: not a regular file ({kind})"))
            elif not _under(p.resolve(), exclude) and not is_own_output(p):
                matches.append(p)
        base = (
            Path(*[part for part in Path(arg).parts[: _first_magic(Path(arg).parts)]]) if Path(arg).parts else Path(".")
        )
        if not matches:
            return [], base, f"no file matches {arg}"
        return matches, base, None
    if path.is_dir():
        files = _walk(path, recursive, exclude, notes)
        if not files:
            hint = "" if recursive else " (use --recursive for sub-folders)"
            return [], path, f"no images in folder {path}{hint}"
        return files, path, None
    if not path.exists():
        return [], path.parent, f"not found: {path}"
    regular, kind = regular_file(path)
    if not regular:  # named on its own: a failure (exit 3), not a note
        return [], path.parent, f"{path}: not a regular file ({kind}), not read"
    return [path], path.parent, None


def _holds_slices(folder: Path) -> bool:
    """Does ``folder`` itself hold a DICOM file that may be a slice (``.dcm``, or the DICM marker of a
    suffix-less file; not a DICOMDIR, a SEG, an RT-STRUCT, a report: what may sit in a study folder beside its
    series)? Other images (NIfTI, PNG) do not make a folder a series."""
    from ..loaders.dicom import is_dicom_file, may_be_slice

    try:
        entries = sorted(folder.iterdir())
    except OSError:
        return False
    for entry in entries:
        if not entry.is_file() or entry.name.startswith(".") or is_own_output(entry):
            continue
        dicom = entry.name.lower().endswith(".dcm") or (entry.suffix == "" and is_dicom_file(entry))
        if dicom and may_be_slice(entry):
            return True
    return False


_NOT_A_SERIES = "skipped: with --series, folders are read as DICOM series (name the file on its own to read it)"


def _series_folders(
    path: Path, recursive: bool, exclude: Sequence[Path], notes: List[Tuple[str, str]], series_uid: Optional[str]
) -> Tuple[List[Path], Optional[str]]:
    """The DICOM series under a folder argument: the folder itself when it holds DICOM files; with ``recursive``,
    or when it holds none itself (a study folder of series folders), every folder under it that holds DICOM
    files, one series each, never the run's own output folder. With ``series_uid``, only the folders that hold
    that series (their headers are read, not their pixels)."""
    folders = [path]
    if recursive or not _holds_slices(path):
        folders = []
        for root, dirs, names in os.walk(path):
            here = Path(root)
            for name in sorted(names):  # a volume or picture beside the series is not one of them: said, not lost
                image = name.lower().endswith((".nii", ".nii.gz")) or Path(name).suffix.lower() in IMAGE_SUFFIXES
                if image and not name.startswith(".") and not is_own_output(here / name):
                    notes.append((str(here / name), _NOT_A_SERIES))
            kept = []
            for d in sorted(dirs):
                if _under((here / d).resolve(), exclude):
                    notes.append((str(here / d), "skipped: it is the output folder (--out) of this command"))
                else:
                    kept.append(d)
            dirs[:] = kept
            if _holds_slices(here):
                folders.append(here)
        if not folders:
            return [], f"no DICOM files in folder {path} or its sub-folders"
    if series_uid is not None:
        from ..loaders.dicom import series_uids

        folders = [folder for folder in folders if series_uid in series_uids(folder)]
        if not folders:
            return [], f"series_uid {series_uid}: no folder under {path} holds that series"
    return sorted(folders), None


def _first_magic(parts: Sequence[str]) -> int:
    for i, part in enumerate(parts):
        if any(c in part for c in _GLOB_CHARS):
            return i
    return len(parts)


def _resolved_out(path: Path) -> Path:
    """The output folder, resolved (a symlink loop is one error naming it, not a RuntimeError)."""
    try:
        return path.resolve()
    except (RuntimeError, OSError) as exc:
        raise OccludeError(f"output folder {path} cannot be resolved: {exc}", params=("out",)) from None


def discover_inputs(
    args: Iterable[str],
    recursive: bool = False,
    *,
    exclude: Sequence = (),
    notes: Optional[List[Tuple[str, str]]] = None,
    series: bool = False,
    series_uid: Optional[str] = None,
) -> Tuple[List[InputImage], List[Tuple[str, str]]]:
    """Expand files, folders and globs into images with unique output keys (with ``series``, DICOM series
    folders: see :func:`_series_folders`).

    Returns the images (sorted by key) and the (argument, error) pairs of arguments that named nothing.
    Output keys keep each file's path relative to the folder or glob it came from; where two arguments give
    the same one, every key becomes the path relative to the inputs' common folder instead. Keys then follow
    the naming rule of :func:`occlude_cli.outputs.names.output_stems` (no two alike, even ignoring case and
    Unicode normalisation; never a run-level file's; names that hold control characters, undecodable bytes
    or are too long become NAME~HASH).

    Never picks up the run's own outputs: folders in ``exclude`` (the --out folder) are not entered, and a
    PNG that a result JSON beside it lists is left out (:func:`is_own_output`). FIFOs, devices and other
    non-regular files are never opened; they are reported in ``notes`` (a list to append (path, note) to).
    """
    excluded = [_resolved_out(Path(e)) for e in exclude]
    found: Dict[Path, str] = {}  # file as given -> its path relative to its argument
    seen = set()
    problems: List[Tuple[str, str]] = []
    for arg in args:
        files, base, error = _expand(str(arg), recursive, excluded, notes, series, series_uid)
        if error:
            problems.append((str(arg), error))
        for file in files:
            resolved = file.resolve()
            if resolved not in seen:
                seen.add(resolved)
                found[file] = os.path.relpath(file.resolve() if file.is_dir() else file, base).replace(os.sep, "/")
    if _clash([_strip_suffix(r) for r in found.values()]):  # e.g. two folders that both hold x.png
        common = Path(os.path.commonpath([str(p.resolve().parent) for p in found]))
        instead = {p: os.path.relpath(p.resolve(), common).replace(os.sep, "/") for p in found}
        if len(set(found.values())) != len(found) or not _clash([_strip_suffix(r) for r in instead.values()]):
            found = instead
    relatives = list(found.items())
    stems = output_stems([(rel, _strip_suffix(rel)) for _, rel in relatives])
    images = [InputImage(path=p, key=stem, source_stem=_strip_suffix(rel)) for (p, rel), stem in zip(relatives, stems)]
    return sorted(images, key=lambda item: item.key), problems


def folder_sha256(folder: Path) -> str:
    """Fingerprint of a DICOM series folder for --resume: every file's name, size and content hash."""
    import hashlib

    from ..loaders.model import file_sha256

    digest = hashlib.sha256()
    for file in sorted(p for p in folder.iterdir() if p.is_file()):
        digest.update(f"{file.name}\0{file.stat().st_size}\0{file_sha256(file)}\n".encode())
    return digest.hexdigest()


def pseudonymised(images: Sequence[InputImage], deidentifier) -> List[InputImage]:
    """The images of a de-identifying run under their pseudonyms (:class:`~occlude_cli.outputs.provenance.
    Deidentifier`: ``case-`` + 12 hex digits of the content's sha256), which become their output names; two
    inputs with the same content get ``-2``, ``-3``... in key order. Each path is registered, so that no
    output names it."""
    from ..loaders.model import file_sha256

    out: List[InputImage] = []
    taken: Dict[str, int] = {}
    for item in sorted(images, key=lambda i: i.key):
        digest = folder_sha256(item.path) if item.path.is_dir() else file_sha256(item.path)
        name = "case-" + digest[:12]
        taken[name] = taken.get(name, 0) + 1
        if taken[name] > 1:
            name = f"{name}-{taken[name]}"
        deidentifier.register(item.path, name)
        out.append(InputImage(path=item.path, key=name, source_stem=item.source_stem, alias=name))
    return sorted(out, key=lambda item: item.key)


def _clash(stems: Sequence[str]) -> bool:
    return len({fold(s) for s in stems}) != len(stems)


_strip_suffix = strip_suffix


def check_shard(shard) -> Optional[Tuple[int, int]]:
    """A share (K, N) of a sharded run, checked: whole numbers with 1 <= K <= N (None: no sharding)."""
    if shard is None:
        return None
    try:
        k, n = (int(v) for v in shard)
        whole = all(int(v) == v for v in shard)
    except (TypeError, ValueError):
        raise OccludeError(f"shard must be (K, N), got {shard!r}", params=("shard",)) from None
    if not whole or not 1 <= k <= n:
        raise OccludeError(f"shard K/N needs 1 <= K <= N, got {k}/{n}", params=("shard",))
    return k, n


def take_shard(images: Sequence[InputImage], shard: Optional[Tuple[int, int]]) -> List[InputImage]:
    """A deterministic 1/N share: every N-th image of the key-sorted list, starting at K-1."""
    if shard is None:
        return list(images)
    k, n = shard
    ordered = sorted(images, key=lambda item: item.key)
    return ordered[k - 1 :: n]


# ------------------------------------------------------------------------------------------ paths from stdin

#: The PATH that means "read the paths from standard input".
STDIN = "-"
#: The longest path read from a stream; a longer one is skipped (memory stays bounded with no separator).
MAX_STREAMED_PATH = 1 << 16


def read_paths(stream: BinaryIO, null: bool = False, problems: Optional[List[str]] = None) -> Iterator[str]:
    """The paths in a binary ``stream``, one at a time as they arrive: one per line, or separated by NUL
    (``null``, as ``find -print0`` writes: then a name may hold a newline). A line is the exact name (no
    stripping but of the separator); empty ones are skipped; bytes that are not UTF-8 are kept as a file name's
    (surrogateescape). A path longer than :data:`MAX_STREAMED_PATH` bytes is skipped and told in ``problems``."""
    sep = b"\0" if null else b"\n"
    read = getattr(stream, "read1", stream.read)  # read1: whatever has arrived, without waiting for more
    pending = bytearray()
    skipping = False
    while True:
        chunk = read(1 << 16)
        if not chunk:
            break
        pending += chunk
        while True:
            at = pending.find(sep)
            if at < 0:
                break
            item = bytes(pending[:at])
            del pending[: at + 1]
            if skipping:
                skipping = False
            elif len(item) > MAX_STREAMED_PATH:
                if problems is not None:
                    problems.append(f"a path of more than {MAX_STREAMED_PATH} bytes on stdin was skipped")
            elif item:
                yield os.fsdecode(item)
        if len(pending) > MAX_STREAMED_PATH:
            if not skipping and problems is not None:
                problems.append(f"a path of more than {MAX_STREAMED_PATH} bytes on stdin was skipped")
            skipping = True
            pending.clear()
    if pending and not skipping:
        yield os.fsdecode(bytes(pending))


def _streamed_relative(path: Path) -> str:
    """The output key's source for a streamed path: relative to the current folder when it lies under it (as
    ``find .`` prints), else the absolute path without its root (never a '..')."""
    absolute = os.path.abspath(path)
    here = os.getcwd()
    if absolute == here or absolute.startswith(here.rstrip(os.sep) + os.sep):
        relative = os.path.relpath(absolute, here)
    else:
        relative = os.path.splitdrive(absolute)[1].lstrip(os.sep)
    return relative.replace(os.sep, "/")


def in_shard(relative: str, shard: Optional[Tuple[int, int]]) -> bool:
    """Whether a streamed input (its relative path) belongs to share K of N: by a hash of its exact path, so
    every process reading the same paths, in any order, takes disjoint shares that cover them all."""
    if shard is None:
        return True
    k, n = shard
    return int(name_hash(relative), 16) % n == k - 1


class StreamedInputs:
    """The images named on a stream (``-`` as the PATH): an iterable that reads the stream as it is consumed,
    so that the first image starts before the stream ends and nothing but the paths seen (to keep output keys
    and inputs unique) grows with the list.

    Each path is an input as an argument would be: a file is taken as it is (an unreadable one fails in its
    row), a folder is expanded (``recursive``), files under ``exclude`` (the output folder) and occlude's own
    outputs are left out, a file named twice is taken once. Keys: the path relative to the current folder (see
    :func:`_streamed_relative`) under the naming rule; a key that collides with an earlier one (``x.png`` and
    ``x.jpg``) becomes NAME~HASH, so shards must read the same paths in the same order (as ``find`` prints
    them). ``shard``: only this process's share (:func:`in_shard`). Lines that name
    nothing are kept in :attr:`problems` as (path, error) and told to ``on_problem``."""

    def __init__(
        self,
        stream: BinaryIO,
        *,
        null: bool = False,
        recursive: bool = False,
        exclude: Sequence = (),
        shard: Optional[Tuple[int, int]] = None,
        on_problem: Optional[Callable[[str], None]] = None,
        notes: Optional[List[Tuple[str, str]]] = None,
    ) -> None:
        self.stream, self.null, self.recursive, self.shard = stream, null, recursive, shard
        self.exclude = [Path(e).resolve() for e in exclude]
        self.on_problem = on_problem
        self.notes = notes if notes is not None else []
        self.problems: List[Tuple[str, str]] = []
        self.count = 0  # inputs taken so far (this shard's)

    def _problem(self, path: str, error: str) -> None:
        self.problems.append((path, error))
        if self.on_problem is not None:
            self.on_problem(f"{path}: {error}" if path != STDIN else error)

    def _files(self, line: str) -> List[Path]:
        path = Path(line)
        if path.is_dir():
            files = _walk(path, self.recursive, self.exclude, self.notes)
            if not files:
                self._problem(line, f"no images in folder {path}" + ("" if self.recursive else " (use --recursive)"))
            return files
        if _under(path.resolve(), self.exclude) or (path.is_file() and is_own_output(path)):
            return []
        return [path]

    def __iter__(self) -> Iterator[InputImage]:
        seen_paths: set = set()
        seen_keys: set = set()
        too_long: List[str] = []
        for line in read_paths(self.stream, self.null, too_long):
            while too_long:
                self._problem(STDIN, too_long.pop())
            if "\0" in line:  # no path can hold one: a list that find -print0 wrote, read line by line
                self._problem(
                    line,
                    "a path cannot hold a NUL byte: a NUL-separated list (find -print0) is read with null=True"
                    " (--null)",
                )
                continue
            for file in self._files(line):
                resolved = str(file.resolve())
                relative = _streamed_relative(file)
                if resolved in seen_paths:
                    continue
                seen_paths.add(resolved)
                key = output_stems([(relative, _strip_suffix(relative))])[0]
                if fold(key) in seen_keys:
                    folder = key.rpartition("/")[0]
                    key = (folder + "/" if folder else "") + hashed_name(relative.rsplit("/", 1)[-1], relative)
                seen_keys.add(fold(key))  # every shard sees every key: the same paths give the same keys
                if not in_shard(relative, self.shard):
                    continue
                self.count += 1
                yield InputImage(path=file, key=key, source_stem=_strip_suffix(relative))
        while too_long:
            self._problem(STDIN, too_long.pop())

"""The manifests of a folder run: what each process of a job writes when it starts and when it stops, and
how the folder's current rows are read back from them (see :mod:`occlude_cli.outputs.folder`). Reads and
writes nothing else, so the report can read the current rows without the rest of the folder machinery."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

from ..loaders.model import file_sha256
from ..text import recover, restore
from .records import SUMMARY_FIELDS, SummaryRow
from .write import atomic_write_json, read_json

MANIFEST_SCHEMA = 1
_MANIFEST_FILE = re.compile(r"^manifest(?:\.shard-(?P<k>\d+)-of-(?P<n>\d+))?\.json$")
ROW_STATUSES = ("ok", "failed", "skipped", "pending")
NOT_DONE = "no result yet: the run stopped before this image (re-run with --resume)"


def summary_name(shard: Optional[Tuple[int, int]]) -> str:
    return "summary" if shard is None else f"summary.shard-{shard[0]}-of-{shard[1]}"


def manifest_name(shard: Optional[Tuple[int, int]]) -> str:
    return "manifest.json" if shard is None else f"manifest.shard-{shard[0]}-of-{shard[1]}.json"


@dataclass(frozen=True)
class Job:
    """What a process of a folder run is part of (see the module's docstring)."""

    id: str
    shard: Optional[Tuple[int, int]]
    model: dict
    settings: dict
    inputs: Optional[int]
    aggregate: bool = False
    report: bool = False

    @classmethod
    def plan(
        cls,
        model: dict,
        settings: dict,
        keys: Optional[Sequence[str]],
        shard: Optional[Tuple[int, int]] = None,
        *,
        aggregate: bool = False,
        report: bool = False,
    ) -> Job:
        """The job of a run over inputs named ``keys`` (all of them, every shard's), with ``settings`` (what
        decides each result) and ``model`` (``path`` and ``sha256``). Its id changes with the inputs, the
        model, the settings and the number of shards, not with --resume, --aggregate or --report. ``keys`` None:
        the inputs are streamed (paths read from stdin as the run goes): the job is the stream's, whatever it
        names, and ``inputs`` is None."""
        text = json.dumps(
            {
                "model": model.get("sha256"),
                "settings": settings,
                "shards": shard[1] if shard else None,
                "inputs": "-" if keys is None else sorted(keys),
            },
            sort_keys=True,
        )
        digest = hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:16]
        return cls(digest, shard, dict(model), settings, None if keys is None else len(keys), aggregate, report)


@dataclass
class Entry:
    """One line of a manifest: the image's output key, its result's fingerprint and its summary row."""

    row: SummaryRow
    key: Optional[str] = None  # None: an argument that named no image
    fingerprint: Optional[str] = None

    def document(self) -> dict:
        return {"key": self.key, "fingerprint": self.fingerprint, **self.row.__dict__}

    @classmethod
    def from_document(cls, item: dict) -> Entry:
        """An entry from a manifest line; a status occlude never writes (missing, edited) reads as ``pending``:
        the image's result is then taken only when its record vouches for it (see :func:`_stopped_entries`)."""
        values: Dict[str, Any] = {
            k: _typed(item.get(k), _NUMBERS if k in _NUMBER_FIELDS else str) for k in SUMMARY_FIELDS
        }
        for text in ("path", "target_label", "error", "warning"):
            values[text] = recover(item, text)
        if values["status"] not in ROW_STATUSES:
            values["status"] = "pending"
        return cls(SummaryRow(**values), _typed(item.get("key"), str), _typed(item.get("fingerprint"), str))


_NUMBER_FIELDS = ("target_index", "original_score", "peak_z", "peak_y", "peak_x", "peak_value", "seconds")
_NUMBERS = (int, float)


def _typed(value, kind):
    """``value`` when it is of the type occlude writes there (a number: not a bool), else None (edited by hand)."""
    return value if isinstance(value, kind) and not isinstance(value, bool) else None


@dataclass
class FolderState:
    """What :func:`rebuild` found and wrote."""

    job: Optional[str] = None
    shards: Optional[int] = None
    shards_done: List[int] = field(default_factory=list)
    shards_running: List[int] = field(default_factory=list)
    rows: List[SummaryRow] = field(default_factory=list)
    aggregate_images: Optional[int] = None
    notes: List[str] = field(default_factory=list)
    wants_aggregate: bool = False  # a process of the job asked for --aggregate
    wants_report: bool = False  # ... for --report
    interrupted: bool = False  # a process of the job stopped before it finished (Ctrl-C, SIGTERM, killed)

    @property
    def complete(self) -> bool:
        return self.job is not None and len(self.shards_done) == (self.shards or 1)

    def describe(self) -> dict:
        """The ``run`` block of summary.json."""
        return {
            "job": self.job,
            "shards": self.shards,
            "shards_done": self.shards_done,
            "complete": self.complete,
            "aggregate_images": self.aggregate_images,
        }


# ------------------------------------------------------------------------------------------ the lock


@contextlib.contextmanager
def folder_lock(out_dir) -> Iterator[None]:
    """An exclusive lock on the output folder itself (flock on its directory), held while a process writes
    its manifest and rebuilds the run-level files, so that shards finishing at once never interleave. No lock
    file is left behind; where the platform has no flock, nothing is locked."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    try:
        fd = os.open(str(out_dir), os.O_RDONLY)
    except OSError:
        yield
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:  # e.g. a file system without flock: go on unlocked
            pass
        yield
    finally:
        os.close(fd)  # closing releases the lock


# ------------------------------------------------------------------------------------ manifests


def _process() -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid()}


def write_manifest(out_dir, job: Job, entries: Sequence[Entry], state: str) -> Path:
    """The job's manifest for this process (see the module's docstring). A finished manifest holds no
    process id, so that the same inputs and flags give the same bytes."""
    document = {
        "schema": MANIFEST_SCHEMA,
        "job": job.id,
        "shard": list(job.shard) if job.shard else None,
        "state": state,
        **({"process": _process()} if state == "running" else {}),
        "model": job.model,
        "settings": job.settings,
        "inputs": job.inputs,
        "aggregate": job.aggregate,
        "report": job.report,
        "images": [entry.document() for entry in entries],
    }
    return atomic_write_json(Path(out_dir) / manifest_name(job.shard), document)


def read_manifests(out_dir) -> List[dict]:
    """Every readable manifest in ``out_dir`` (unreadable ones are left out), by file name."""
    found = []
    out_dir = Path(out_dir)
    try:
        names = sorted(n for n in os.listdir(out_dir) if _MANIFEST_FILE.match(n))
    except OSError:
        return []
    for name in names:
        try:
            document = read_json(out_dir / name)
        except (OSError, ValueError):
            continue
        if _well_formed(document):
            document["_file"] = name
            found.append(document)
    return found


def _well_formed(document) -> bool:
    """Is a manifest's every field of the type occlude writes? One edited by hand into another shape (``model``
    a string, ``shard`` not two numbers) is left out like an unreadable one, never half-read."""
    if not isinstance(document, dict) or not isinstance(document.get("job"), str):
        return False
    shard = document.get("shard")
    kinds = {"model": dict, "settings": dict, "images": list, "state": str, "process": dict}
    return all(document.get(key) is None or isinstance(document[key], kind) for key, kind in kinds.items()) and (
        shard is None or (isinstance(shard, list) and len(shard) == 2 and all(type(v) is int and v >= 1 for v in shard))
    )


# ------------------------------------------------------------------------------------ rebuilding


def _alive(process) -> Optional[bool]:
    """Is the process that wrote a running manifest still running (None: another machine, unknown)?"""
    pid = process.get("pid") if isinstance(process, dict) else None
    if not isinstance(process, dict) or process.get("host") != socket.gethostname() or not isinstance(pid, int):
        return None
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (OSError, TypeError, ValueError):
        return True
    return True


def read_record(out_dir: Path, marker: Optional[str]) -> Optional[dict]:
    if not marker or "\\" in marker or marker.startswith("/") or ".." in marker.split("/"):
        return None
    try:
        document = read_json(out_dir / marker)
    except (OSError, ValueError):
        return None
    return document if isinstance(document, dict) else None


def run_fingerprint(model_sha256: str, image_sha256: str, settings: dict) -> str:
    """What decides a result: the model file, the image file and every parameter (not timing)."""
    text = json.dumps({"model": model_sha256, "image": image_sha256, "settings": settings}, sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _stopped_entries(out_dir: Path, manifest: dict) -> List[Entry]:
    """The rows of a manifest; those still pending (a process that was interrupted or killed before their
    image) are ok where the image's result file was made with the job's model and parameters from the image
    as it is now (its fingerprint is the job's for the image file's current sha256), else stay pending (with
    :data:`NOT_DONE` as their error: ``--resume`` runs them)."""
    entries = []
    model = (manifest.get("model") or {}).get("sha256") or ""
    settings = restore(manifest.get("settings") or {})  # exact again: a --target label may hold anything
    for item in manifest.get("images") or []:
        if not isinstance(item, dict):
            continue
        entry = Entry.from_document(item)
        if entry.row.status == "pending":
            record = read_record(out_dir, entry.row.output)
            expected = run_fingerprint(model, _image_sha(entry.row.path, record), settings) if record else None
            if record is not None and record.get("fingerprint") == expected:
                entry.fingerprint = expected
                entry.row.status = "ok"
                _fill_from_record(entry.row, out_dir, record)
            else:
                entry.row.error = NOT_DONE
        entries.append(entry)
    return entries


def _image_sha(path: str, record: dict) -> str:
    """The sha256 of the image as it is now (a DICOM series folder: as its record says; unreadable: '')."""
    if os.path.isdir(path):
        return str(record.get("image_sha256"))
    try:
        return file_sha256(Path(path))
    except OSError:
        return ""


def _fill_from_record(row: SummaryRow, out_dir: Path, record: dict) -> None:
    first = record
    if isinstance(record.get("maps"), list) and record["maps"]:  # a patch-size study: its first scale's record
        folder = row.output.rsplit("/", 1)[0] + "/" if row.output and "/" in row.output else ""
        first = read_record(out_dir, folder + str(record["maps"][0])) or record
    seconds = (first.get("timing") or {}).get("total_s")
    filled = SummaryRow.from_record(first, row.status, row.output or "", round(seconds, 3) if seconds else None)
    filled.path = row.path
    row.__dict__.update(filled.__dict__)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def current_entries(out_dir) -> Tuple[Optional[dict], List[Entry], FolderState]:
    """The current job's entries (rows in key order; arguments that named nothing last, once each) and what
    is known about its shards. ``(None, [], state)`` when the folder has no manifest (older folders)."""
    out_dir = Path(out_dir)
    manifests = read_manifests(out_dir)
    state = FolderState()
    if not manifests:
        return None, [], state
    # every manifest should belong to one job (start_job removes others); if not, the newest file wins
    newest = max(manifests, key=lambda m: _mtime(out_dir / m["_file"]))
    manifests = [m for m in manifests if m["job"] == newest["job"]]
    state.job = newest["job"]
    shard = newest.get("shard")
    state.shards = int(shard[1]) if isinstance(shard, list) and len(shard) == 2 else None
    entries: List[Entry] = []
    state.wants_aggregate = any(bool(m.get("aggregate")) for m in manifests)
    state.wants_report = any(bool(m.get("report")) for m in manifests)
    for manifest in manifests:
        k = int(manifest["shard"][0]) if isinstance(manifest.get("shard"), list) else 1
        status = manifest.get("state")
        if status == "running" and _alive(manifest.get("process")) is not False:
            state.shards_running.append(k)
            continue
        if status == "running":  # its process is gone: killed
            state.notes.append(f"{manifest['_file']}: the run was killed before it finished")
        state.interrupted = state.interrupted or status != "finished"
        if status == "finished":
            state.shards_done.append(k)
        entries += _stopped_entries(out_dir, manifest)
    keyed = sorted((e for e in entries if e.key is not None), key=lambda e: e.key or "")
    loose: Dict[str, Entry] = {}
    for entry in entries:
        if entry.key is None:
            loose.setdefault(entry.row.path, entry)
    state.shards_done.sort()
    return newest, keyed + list(loose.values()), state

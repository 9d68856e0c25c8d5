"""An on-disk cache of what occlude derives from a model file, so that a CI job calling ``occlude run`` once per
image does not derive it again in every process.

Two kinds of entries, each a folder named by a SHA-256 key over everything the entry depends on (the model
file's SHA-256, the occlude, onnx and onnxruntime versions, and the entry's own parameters):

* ``model``: graph facts read with the ``onnx`` package (declared input sizes, the operator behind each
  output). Kept only for models without external data, whose facts depend on the file's bytes alone; a
  model with external data is checked again on every load (its weights' locations are checked against the
  folder as it is now).
* ``incremental``: the plan of exact incremental inference for one input shape and patch: the chain of cuts
  with their receptive fields, and the sub-models as ``.onnx`` files. A plan read from the cache goes through
  the same self-check as a new one (crops against the whole tensors, outputs against full passes) and is
  rebuilt when it fails, so a damaged entry costs time, never a wrong map.

Where: ``$OCCLUDE_CACHE_DIR``, else ``$XDG_CACHE_HOME/occlude``, else ``~/.cache/occlude``. Setting
``OCCLUDE_CACHE_DIR`` to an empty string, ``0`` or ``off`` disables it. Entries are written to a temporary
folder and renamed into place (a concurrent or killed writer never leaves half an entry), at most
:data:`MAX_ENTRIES` entries and :data:`MAX_BYTES` of each kind are kept (the least recently used go
first; the newest entry always stays), and any error reading or writing
the cache (a read-only home, a full disk) just means no cache: nothing here ever fails a run.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Dict, Iterator, Optional, Tuple

from .._version import __version__

__all__ = ["ENV", "MAX_BYTES", "MAX_ENTRIES", "cache_dir", "disabled", "entry_key", "load", "remove", "store"]

ENV = "OCCLUDE_CACHE_DIR"
MAX_ENTRIES = 32  # per kind
MAX_BYTES = 1 << 30  # per kind: a plan holds the model's weights once more (EfficientNet-Lite0: 18 MB)
FORMAT = 4  # bump when an entry's layout changes (2: graph exactness facts, plans checked in drop units; 3: part
# peaks; 4: model facts: final operators seen through Q/DQ, batch coupling)
_OFF = ("", "0", "off", "none", "false", "no")
_META = "entry.json"


_bypassed = threading.local()


@contextlib.contextmanager
def disabled() -> Iterator[None]:
    """No cache in this thread while inside: for throwaway models (the randomised copies of the sanity test),
    whose entries would only push the user's models' entries out."""
    previous = getattr(_bypassed, "on", False)
    _bypassed.on = True
    try:
        yield
    finally:
        _bypassed.on = previous


def cache_dir() -> Optional[Path]:
    """The cache's root folder, or None when disabled (``OCCLUDE_CACHE_DIR`` set to '', 0 or off; inside
    :func:`disabled`)."""
    if getattr(_bypassed, "on", False):
        return None
    value = os.environ.get(ENV)
    if value is not None:
        return None if value.strip().lower() in _OFF else Path(value).expanduser()
    base = os.environ.get("XDG_CACHE_HOME")
    try:
        root = Path(base) if base else Path.home() / ".cache"
    except RuntimeError:  # no home directory to speak of
        return None
    return root / "occlude"


def entry_key(kind: str, **parts) -> str:
    """The key of an entry: a SHA-256 over ``kind``, the cache format, occlude's version and ``parts``
    (JSON-serialisable values; the caller adds the model's SHA-256 and any library versions it depends on)."""
    text = json.dumps({"kind": kind, "format": FORMAT, "occlude": __version__, **parts}, sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def load(kind: str, key: str) -> Optional[Tuple[Path, dict]]:
    """(the entry's folder, its metadata) or None when absent, unreadable or disabled."""
    root = cache_dir()
    if root is None:
        return None
    folder = root / kind / key
    try:
        meta = json.loads((folder / _META).read_text(encoding="utf-8"))
        if not isinstance(meta, dict) or meta.get("key") != key:
            return None
        os.utime(folder)  # recently used: trimmed last
    except (OSError, ValueError):
        return None
    return folder, meta


def store(kind: str, key: str, meta: dict, files: Optional[Dict[str, bytes]] = None) -> Optional[Path]:
    """Write an entry atomically (a temporary folder renamed into place); returns its folder, or None when
    the cache is disabled or cannot be written. An existing entry of the same key is kept as it is."""
    root = cache_dir()
    if root is None:
        return None
    parent = root / kind
    final = parent / key
    tmp: Optional[str] = None
    try:
        parent.mkdir(parents=True, exist_ok=True)
        if load(kind, key) is not None:
            return final
        tmp = written = tempfile.mkdtemp(prefix=".tmp-", dir=parent)
        for name, data in (files or {}).items():
            if "/" in name or "\\" in name or name in ("", ".", "..", _META):
                raise ValueError(f"bad cache file name {name!r}")
            with open(os.path.join(written, name), "wb") as handle:
                handle.write(data)
        with open(os.path.join(written, _META), "w", encoding="utf-8") as handle:
            json.dump({**meta, "key": key}, handle, sort_keys=True)
        for _ in range(3):
            try:
                os.rename(written, final)
                tmp = None
                break
            except OSError:  # the key's folder exists
                if load(kind, key) is not None:
                    break  # another writer's entry: keep it (ours is removed below)
                _remove(final)  # a damaged one: out of the way, then try again
        else:
            return None
        _trim(parent)
        return final
    except (OSError, ValueError):
        return None
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def remove(kind: str, key: str) -> None:
    """Drop an entry (one that failed its check); a no-op when absent or disabled."""
    root = cache_dir()
    if root is not None:
        _remove(root / kind / key)


def _remove(folder: Path) -> None:
    """Move ``folder`` into a unique hidden folder first, then delete that: a writer renaming a new entry into
    place meanwhile is never half-deleted."""
    try:
        stale = tempfile.mkdtemp(prefix=".stale-", dir=folder.parent)
    except OSError:
        return
    try:
        os.rename(folder, os.path.join(stale, "entry"))
    except OSError:  # gone already
        pass
    shutil.rmtree(stale, ignore_errors=True)


def _trim(parent: Path) -> None:
    """Keep the :data:`MAX_ENTRIES` most recently used entries of one kind; remove stale temporary folders."""
    entries = []
    now = time.time()
    for child in parent.iterdir():
        try:
            mtime = child.stat().st_mtime
        except OSError:
            continue
        if child.name.startswith("."):  # a writer's or a remover's folder: another process may be using it
            if now - mtime > 3600:  # ... or was killed an hour ago
                shutil.rmtree(child, ignore_errors=True)
            continue
        entries.append((mtime, child))
    entries.sort(reverse=True)
    total = 0
    for rank, (_, child) in enumerate(entries):
        total += _size(child)
        if rank >= MAX_ENTRIES or (rank > 0 and total > MAX_BYTES):
            _remove(child)


def _size(folder: Path) -> int:
    try:
        return sum(f.stat().st_size for f in folder.iterdir())
    except OSError:
        return 0

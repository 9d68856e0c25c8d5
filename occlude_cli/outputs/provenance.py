"""What every JSON file records of how it was made, and de-identification of everything a run writes.

Every JSON document occlude writes ends with ``versions`` (occlude, onnxruntime, pydicom, nibabel and
highdicom, read from the installed packages' metadata: null when not installed) and, when a command line
started the process, ``command`` (the arguments as given; under de-identification with every path replaced).

De-identification (:class:`Deidentifier`, ``--deidentify``): patient data must not leave in a run's outputs.
Inputs get stable pseudonyms (``case-`` and 12 hex digits of the sha256 of the input's content: the same
scan gets the same name in every run, and nothing of its path), which are their output names too; every
DICOM UID (dotted numbers outside the standard's own ``1.2.840.10008.`` root) is replaced by a UID derived
from it (``2.25.`` and 128 bits of its sha256: the same UID maps to the same replacement in every file, so
references stay consistent); and while a de-identifying run writes, every text file it writes (JSON, CSV,
HTML) is scrubbed of the paths it registered (inputs, masks, label maps), the way they are given and the way
they resolve. What stays for the audit trail: the hashes, the command line (its paths replaced) and the
versions. File contents a hash is taken of never leave: a hash is one-way.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shlex
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence

from .._version import __version__

_PACKAGES = ("onnxruntime", "pydicom", "nibabel", "highdicom")
_COMMAND: Optional[List[str]] = None
_ACTIVE: Optional[Deidentifier] = None
# a DICOM UID: dotted decimal numbers, at least 5 components (version strings have 3)
_UID = re.compile(r"(?<![\w.])[0-2](?:\.(?:0|[1-9]\d*)){4,}(?![\w.])")
_STANDARD_ROOT = "1.2.840.10008."  # transfer syntaxes and SOP classes: the standard's, not the patient's


def software_versions() -> Dict[str, Optional[str]]:
    """occlude's version and those of the packages that read and run what it explains (None: not installed)."""
    from importlib import metadata

    found: Dict[str, Optional[str]] = {"occlude": __version__}
    for name in _PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def active() -> Optional[Deidentifier]:
    """The de-identifier of the run now writing (None: nothing is de-identified)."""
    return _ACTIVE


def set_command_line(argv: Optional[Sequence[str]]) -> None:
    """The command line that started this process (the CLI sets it; library runs have none)."""
    global _COMMAND
    _COMMAND = [str(a) for a in argv] if argv is not None else None


def command_line() -> Optional[str]:
    """The command line as one shell-quoted string (paths replaced while a de-identifying run writes), the
    output folder shown as ``<out>`` (the document lies in it; runs into two folders write the same bytes)."""
    if _COMMAND is None:
        return None
    argv = _ACTIVE.command(_COMMAND) if _ACTIVE is not None else list(_COMMAND)
    for i, arg in enumerate(argv):
        if i > 0 and argv[i - 1] in ("-o", "--out"):
            argv[i] = "<out>"
        elif arg.startswith("--out="):
            argv[i] = "--out=<out>"
    return shlex.join(argv)


def stamped(document: Any, command: bool = True) -> Any:
    """A JSON document as written: ``versions`` and (``command``: a run's own documents, not the per-input
    ones, which stay the same whichever command made them) ``command`` added (a dict; anything else as it
    is), then scrubbed when a de-identifying run is writing."""
    if isinstance(document, dict):
        document = dict(document)
        document.setdefault("versions", software_versions())
        line = command_line() if command else None
        if line is not None:
            document.setdefault("command", line)
    return _ACTIVE.scrub(document) if _ACTIVE is not None else document


def scrubbed_bytes(name: str, data: bytes) -> bytes:
    """A text file's bytes scrubbed while a de-identifying run writes (JSON, CSV, HTML, text); others as given."""
    if _ACTIVE is None or not name.lower().endswith((".json", ".csv", ".html", ".txt", ".xml", ".md")):
        return data
    return _ACTIVE.scrub_text(data.decode("utf-8", "surrogateescape")).encode("utf-8", "surrogateescape")


def new_uid(uid: str) -> str:
    """The replacement of a DICOM UID: ``2.25.`` and the first 128 bits of its sha256 as a decimal number (a
    valid UID of at most 44 characters, the same for the same UID)."""
    digest = hashlib.sha256(("occlude-deidentify\0" + uid).encode("utf-8")).hexdigest()
    return "2.25." + str(int(digest[:32], 16))


class Deidentifier:
    """The pseudonyms of one run's paths (see the module docstring)."""

    def __init__(self) -> None:
        self.paths: Dict[str, str] = {}  # path forms holding a folder: replaced wherever they occur
        self.exact: Dict[str, str] = {}  # bare names: replaced where a whole string is one

    def register(self, path, pseudonym: str) -> str:
        """Replace ``path`` (as given, absolute and resolved; and its name without suffix, for companion
        files such as masks) by ``pseudonym`` in everything written."""
        text = str(path).rstrip("/") or str(path)
        forms = {text, os.path.abspath(text)}
        with contextlib.suppress(OSError, RuntimeError):
            forms.add(str(Path(text).resolve()))
        for form in forms:
            if "/" not in form:
                self.exact[form] = pseudonym
                continue
            if form == "/":
                continue
            self.paths[form] = pseudonym
            head, _, tail = form.rpartition("/")
            stem = tail[: -len(".nii.gz")] if tail.lower().endswith(".nii.gz") else tail.rsplit(".", 1)[0]
            if stem and stem != tail:  # dir/scan.nii.gz -> dir/scan.mask.nii.gz is case-....mask.nii.gz
                self.paths.setdefault(f"{head}/{stem}.", f"{pseudonym}.")
        return pseudonym

    def input_name(self, path: Path, digest: str) -> str:
        """An input's pseudonym from the sha256 of its content (``case-`` + 12 hex digits), registered."""
        return self.register(path, "case-" + digest[:12])

    def file_name(self, path, kind: str) -> str:
        """A companion file's pseudonym (a mask, a label map): ``KIND-`` + 12 hex digits of its content's
        sha256, registered."""
        from ..loaders.model import file_sha256

        digest = file_sha256(Path(path)) if Path(path).is_file() else hashlib.sha256(str(path).encode()).hexdigest()
        return self.register(path, f"{kind}-{digest[:12]}")

    def scrub_text(self, text: str) -> str:
        """Registered paths (longest first) replaced by their pseudonyms, bare names (a file given without a
        folder) where they stand as a whole name in the text (not inside a longer name), then every DICOM UID by
        its replacement."""
        for form in sorted(self.paths, key=len, reverse=True):
            if form in text:
                text = text.replace(form, self.paths[form])
        for form in sorted(self.exact, key=len, reverse=True):
            if form in text:
                whole = rf"(?<![\w.~/-]){re.escape(form)}(?![\w~/-]|\.\w)"
                text = re.sub(whole, self.exact[form].replace("\\", "\\\\"), text)
        return _UID.sub(lambda m: m.group(0) if m.group(0).startswith(_STANDARD_ROOT) else new_uid(m.group(0)), text)

    def scrub(self, value: Any) -> Any:
        """A JSON document with every string scrubbed (:meth:`scrub_text`); a DICOM series' ``skipped_files``
        (file names) become their count."""
        if isinstance(value, dict):
            return {
                k: (len(v) if k == "skipped_files" and isinstance(v, list) else self.scrub(v)) for k, v in value.items()
            }
        if isinstance(value, list):
            return [self.scrub(v) for v in value]
        if isinstance(value, str):
            return self.exact.get(value) or self.scrub_text(value)
        return value

    def command(self, argv: Sequence[str]) -> List[str]:
        """The command line with every argument that names an existing file or folder (or holds a registered
        path) replaced: registered paths by their pseudonyms, others by ``<path>``."""
        out: List[str] = []
        for arg in argv:
            flag, eq, value = arg.partition("=") if arg.startswith("--") else ("", "", arg)
            known = self.paths.get(value.rstrip("/")) or self.exact.get(value.rstrip("/"))
            if known:
                value = known
            elif value and os.path.exists(value) and len(out) > 0:
                value = "<path>"
            else:
                value = self.scrub_text(value)
            out.append(f"{flag}{eq}{value}")
        return out


@contextlib.contextmanager
def deidentifying(deidentifier: Optional[Deidentifier]) -> Iterator[None]:
    """While the block runs, everything written is scrubbed by ``deidentifier`` (None: nothing changes); after
    it, the process's command line stays the de-identified one (what ``--json`` prints after the run)."""
    global _ACTIVE, _COMMAND
    previous, _ACTIVE = _ACTIVE, deidentifier if deidentifier is not None else _ACTIVE
    try:
        yield
    finally:
        if deidentifier is not None and _COMMAND is not None:
            _COMMAND = deidentifier.command(_COMMAND)
        _ACTIVE = previous

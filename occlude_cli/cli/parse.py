"""The command line's edge: each flag's text to the typed value the library takes (sizes as ints or tuples, a
box as four floats, a share as (K, N), a memory size in bytes, ...). Typer calls these as the flags' parsers,
so that no command body, and nothing below the command line, parses text. A bad value is one ``error:`` line
naming the flag, exit 1, before anything runs (see ``app.OccludeGroup``)."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Callable, List, Optional, Tuple, Union

from ..errors import OccludeError

Parser = Callable[[str], Any]
SizeValue = Union[int, Tuple[int, ...]]


def _size(text: str, flag: str) -> SizeValue:
    parts = str(text).lower().replace(" ", "").split("x")
    try:
        numbers = [int(p) for p in parts]
    except ValueError:
        raise OccludeError(f"{flag} must be N or HxW in pixels (DxHxW for volumes), got {text!r}") from None
    if len(numbers) not in (1, 2, 3):
        raise OccludeError(f"{flag} must be N or HxW in pixels (DxHxW for volumes), got {text!r}")
    if min(numbers) < 1:
        raise OccludeError(f"{flag} must be at least 1 pixel, got {text!r}")
    return numbers[0] if len(numbers) == 1 else tuple(numbers)


def size(flag: str) -> Parser:
    """'16' -> 16 (every axis); '16x24' -> (16, 24) as (height, width); '8x16x16' -> (depth, height, width)."""
    return lambda text: _size(text, flag)


def sizes(flag: str) -> Parser:
    """'16' -> [16]; '8,16,32' or '8x8,16x24' -> one size per comma-separated item."""
    return lambda text: [_size(item, flag) for item in str(text).split(",")]


def _entries(text: str, flag: str) -> List[str]:
    """The comma-separated entries of ``text`` (spaces dropped; none for an empty text); an empty entry between
    commas is refused (it was dropped in silence, so '1,,2' read as two numbers)."""
    parts = str(text).replace(" ", "").split(",")
    if parts == [""]:
        return []
    if "" in parts:
        raise OccludeError(f"{flag} has an empty entry between commas: {text!r}")
    return parts


def _numbers(text: str, flag: str) -> List[float]:
    entries = _entries(text, flag)
    try:
        values = [float(v) for v in entries]
    except ValueError:
        raise OccludeError(f"{flag} takes numbers separated by commas, got {text!r}") from None
    if not values or not all(math.isfinite(v) for v in values):
        raise OccludeError(f"{flag} takes finite numbers separated by commas, got {text!r}")
    return values


def numbers(flag: str) -> Parser:
    """'0.5,0.4,0.3' -> [0.5, 0.4, 0.3]: finite numbers only."""
    return lambda text: _numbers(text, flag)


def pair(flag: str, form: str) -> Parser:
    """'LO,HI' -> (lo, hi) (``form`` names the two numbers in the message)."""

    def parse(text: str) -> Tuple[float, float]:
        values = _numbers(text, flag)
        if len(values) != 2:
            raise OccludeError(f"{flag} takes {form}, got {text!r}")
        return values[0], values[1]

    return parse


def box(flag: str) -> Parser:
    """'x0,y0,x1,y1' -> four floats (original image pixels); whether the box is empty the library says."""

    def parse(text: str) -> Tuple[float, float, float, float]:
        try:
            values = [float(v) for v in _entries(text, flag)]
        except ValueError:
            raise OccludeError(f"{flag} takes x0,y0,x1,y1 in image pixels, got {text!r}") from None
        if len(values) != 4 or not all(math.isfinite(v) for v in values):
            raise OccludeError(f"{flag} takes four numbers x0,y0,x1,y1 in image pixels, got {text!r}")
        return values[0], values[1], values[2], values[3]

    return parse


def mask(text: str) -> Union[str, Tuple[float, float, float, float]]:
    """--mask: 'auto', a box 'x0,y0,x1,y1' (original image pixels) or a mask file's path."""
    if text.strip().lower() == "auto":
        return "auto"
    if re.fullmatch(r"\s*[-+0-9.eE]+(\s*,\s*[-+0-9.eE]+){3}\s*", text):
        return box("--mask")(text)
    if re.fullmatch(r"[-+0-9.eE,\s]+", text):
        raise OccludeError(f"--mask takes auto, a mask file or four numbers x0,y0,x1,y1, got {text!r}")
    return text


def region(flag: str) -> Parser:
    """'x0,y0,x1,y1' (image or slice pixels) or 'x0,y0,z0,x1,y1,z1' (a volume: world millimetres) -> floats."""

    def parse(text: str) -> Tuple[float, ...]:
        try:
            values = [float(v) for v in _entries(text, flag)]
        except ValueError:
            values = []
        if len(values) not in (4, 6) or not all(math.isfinite(v) for v in values):
            raise OccludeError(
                f"{flag} takes four numbers x0,y0,x1,y1 in pixels (a volume: six, x0,y0,z0,x1,y1,z1 in mm), "
                f"got {text!r}"
            )
        return tuple(values)

    return parse


def fraction(flag: str) -> Parser:
    """'2/255' or '0.008' -> a float (the library checks its range)."""

    def parse(text: str) -> float:
        try:
            if "/" in text:
                num, den = text.split("/", 1)
                return float(num) / float(den)
            return float(text)
        except (ValueError, ZeroDivisionError):
            raise OccludeError(f"{flag} must be a number or a fraction like 2/255, got {text!r}") from None

    return parse


def color_limit(text: str) -> Union[float, str]:
    """'shared' or a positive number -> the RenderStyle's color_limit (the library checks the number's range)."""
    if str(text).strip().lower() == "shared":
        return "shared"
    try:
        return float(text)
    except ValueError:
        raise OccludeError(f"--color-limit takes a positive number or 'shared', got {text!r}") from None


def channels(flag: str) -> Parser:
    """'0,5,9-12' -> [0, 5, 9, 10, 11, 12]."""

    def parse(text: str) -> List[int]:
        out: List[int] = []
        try:
            for part in _entries(text, flag):
                if "-" in part:
                    a, b = (int(v) for v in part.split("-", 1))
                    out.extend(range(a, b + 1))
                else:
                    out.append(int(part))
        except ValueError:
            raise OccludeError(f"{flag} takes indices and ranges like 0,5,9-12, got {text!r}") from None
        if not out:
            raise OccludeError(f"{flag} names no channel: {text!r}")
        return out

    return parse


def layers(flag: str) -> Parser:
    """'1,2,5-8' -> [1, 2, 5, 6, 7, 8] (positions); an item that is not a number or a range is a name:
    'node_linear,3' -> ['node_linear', 3]."""

    def parse(text: str) -> List[Union[int, str]]:
        out: List[Union[int, str]] = []
        for part in (p.strip() for p in str(text).split(",")):
            if re.fullmatch(r"[0-9]+", part):
                out.append(int(part))
            elif re.fullmatch(r"[0-9]+-[0-9]+", part):
                a, b = (int(v) for v in part.split("-"))
                if b < a:
                    raise OccludeError(f"{flag}: the range {part!r} runs backwards")
                out.extend(range(a, b + 1))
            elif part:
                out.append(part)
        if not out:
            raise OccludeError(f"{flag} names no layer: {text!r}")
        return out

    return parse


def percents(flag: str) -> Parser:
    """'1,2,5,10' (percentages) -> (0.01, 0.02, 0.05, 0.1), checked increasing in (0, 1]; '' -> ()."""

    def parse(text: str) -> Tuple[float, ...]:
        from ..analyses.validate import check_fractions

        entries = _entries(text, flag)
        try:
            values = [float(v) for v in entries]
        except ValueError:
            raise OccludeError(f"{flag} takes percentages separated by commas, got {text!r}") from None
        try:
            return check_fractions([v / 100.0 for v in values]) if values else ()
        except OccludeError:
            raise OccludeError(f"{flag} must be increasing percentages in (0, 100], got {text!r}") from None

    return parse


def shard(text: str) -> Tuple[int, int]:
    """'K/N' -> (K, N) with 1 <= K <= N (--shard)."""
    from ..batch.inputs import check_shard

    try:
        k, n = (int(v) for v in str(text).split("/"))
    except ValueError:
        raise OccludeError(f"--shard must be K/N (e.g. 2/4), got {text!r}") from None
    checked = check_shard((k, n))
    assert checked is not None
    return checked


_UNITS = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def memory(text: str) -> int:
    """'2G', '512M', '1.5G', '300000000' (bytes), '64MiB' -> bytes (binary units); at least 16 MiB (--max-memory)."""
    from ..loaders.limits import SMALLEST, human

    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([KMGT]?)(?:I?B)?\s*", str(text).upper())
    if not match:
        raise OccludeError(f"--max-memory must be a size such as 2G, 512M or 1.5G, got {text!r}")
    value = float(match.group(1)) * _UNITS[match.group(2)]
    if not math.isfinite(value) or value < SMALLEST:
        raise OccludeError(f"--max-memory must be at least {human(SMALLEST)}, got {text!r}")
    return int(value)


def labels(text: str) -> Union[str, Path]:
    """--labels: 'imagenet' (the ImageNet-1k names shipped with occlude), else a labels file ('./imagenet' for
    a file of that name)."""
    from ..loaders.modelfiles import IMAGENET

    return IMAGENET if text == IMAGENET else Path(text)


def ray_address(text: str) -> str:
    """--ray's value: 'local' (a Ray instance on this machine), 'auto', HOST:PORT or ray://HOST:PORT."""
    if text in ("local", "auto") or text.startswith("ray://") or re.fullmatch(r"[\w.-]+:\d+", text):
        return text
    raise OccludeError(
        f"--ray takes local, auto, HOST:PORT or ray://HOST:PORT, got {text!r} "
        "(put --ray after the inputs, or write --ray=ADDRESS)"
    )


def optional(parser: Parser) -> Callable[[Optional[str]], Any]:
    """``parser`` for a value that may be absent (None stays None)."""
    return lambda text: None if text is None else parser(text)

"""A PNG whose pixel data ends early: Pillow fills the missing rows with zeros without a word when the data is
a complete zlib stream that is too short; :func:`check_png_rows` refuses it (see
:func:`occlude_cli.loaders.images.open_image`)."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

from ..errors import OccludeError

_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # by colour type
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))


def check_png_rows(path: Path) -> None:
    """Refuse a PNG whose compressed pixel data ends before its last row. Pillow fills the missing rows with
    zeros without a word when the data is a complete zlib stream that is too short (a crafted or badly
    written file; a file cut short is refused by Pillow itself). The data is decompressed once more in
    1 MiB pieces that are counted and dropped, so memory stays flat."""
    with open(path, "rb") as handle:
        data = handle.read()
    if data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        return
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", data[16:29])
    bits = _PNG_CHANNELS.get(colour, 0) * depth
    if not bits:
        return

    def rows(w: int, h: int) -> int:  # bytes of h rows of w pixels, each with its filter byte
        return h * (1 + (w * bits + 7) // 8) if w and h else 0

    if interlace:
        expected = sum(rows((width - x0 + dx - 1) // dx, (height - y0 + dy - 1) // dy) for x0, y0, dx, dy in _ADAM7)
    else:
        expected = rows(width, height)
    inflate = zlib.decompressobj()
    got = 0
    position = 8
    while position + 8 <= len(data) and got < expected:
        length, kind = struct.unpack(">I4s", data[position : position + 8])
        if kind == b"IDAT":
            piece = inflate.decompress(data[position + 8 : position + 8 + length], 1 << 20)
            got += len(piece)
            while inflate.unconsumed_tail and got < expected:
                got += len(inflate.decompress(inflate.unconsumed_tail, 1 << 20))
        elif kind == b"IEND":
            break
        position += 12 + length
    if got < expected:
        if interlace:
            raise OccludeError(f"cannot read image {path}: its PNG pixel data ends early ({got} of {expected} bytes)")
        raise OccludeError(
            f"cannot read image {path}: its PNG pixel data ends after {got // (expected // height)} of {height} "
            "rows (a truncated or badly written file)"
        )

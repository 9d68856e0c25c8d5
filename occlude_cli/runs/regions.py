"""Where each input's region comes from, for ``check`` and ``bias``: one box for every input, one mask image for
every input, a folder of per-input masks, or by convention the ``NAME.mask.png`` next to each input. One
mechanism: the same checks before any image, the same rule that masks are never inputs, the same lookup."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional, Tuple, Union

from ..errors import OccludeError
from ..loaders.maps import (
    check_box,
    check_mask_file,
    convention_mask_path,
    is_mask_file,
    is_medical_name,
    masks_folder_path,
)


@dataclass(frozen=True)
class RegionSource:
    """At most one of ``box`` (x0, y0, x1, y1 in original image pixels; a volume: x0, y0, z0, x1, y1, z1 in
    world mm), ``mask`` (a mask image: white = region, transparent = outside; for medical inputs a NIfTI mask,
    a DICOM SEG or an RT-STRUCT) and ``masks`` (a folder: ``masks/<relative name>.png`` per input, or
    ``.nii.gz``, ``.seg.dcm``... for medical inputs); none given: the ``NAME.mask.png`` (``NAME.mask.nii.gz``,
    ``NAME.seg.dcm``...) next to each input."""

    box: Optional[Tuple[float, ...]] = None
    mask: Optional[Path] = None
    masks: Optional[Path] = None

    def checked(self) -> RegionSource:
        """Checked before any image: one source, a non-empty box, a readable mask, a folder of masks."""
        given = [name for name in ("box", "mask", "masks") if getattr(self, name) is not None]
        if len(given) > 1:
            raise OccludeError(f"give one region source, not {' and '.join(given)}", params=tuple(given))
        box = check_box(self.box) if self.box is not None else None
        if self.mask is not None:
            check_mask_file(self.mask)  # one mask for every image: a bad one is an error before any image
        if self.masks is not None and not Path(self.masks).is_dir():
            raise OccludeError(f"masks must be a folder: {self.masks}", params=("masks",))
        return replace(
            self,
            box=box,
            mask=Path(self.mask) if self.mask is not None else None,
            masks=Path(self.masks) if self.masks is not None else None,
        )

    def fits(self, preprocessing) -> RegionSource:
        """Refuse, before any input, a box of the wrong form for the model: a 3-D model's box is six numbers
        in world millimetres."""
        if self.box is not None and len(getattr(preprocessing, "size", ())) == 3 and len(self.box) != 6:
            raise OccludeError(
                "box of a volume is x0, y0, z0, x1, y1, z1 in world millimetres (RAS+, as the JSON's "
                f"peak.world_mm), got {len(self.box)} numbers",
                params=("box",),
            )
        return self

    def describe(self) -> str:
        """The region in a few words, for the documents and the tables."""
        if self.box is not None:
            return "box " + ",".join(f"{v:g}" for v in self.box)
        if self.mask is not None:
            return f"mask {self.mask}"
        if self.masks is not None:
            return f"masks {self.masks}/<name>.png (.nii.gz, .seg.dcm)"
        return "masks <image>.mask.png (.mask.nii.gz, .seg.dcm)"

    def is_input(self, path: Path) -> bool:
        """Masks are never inputs: files named ``*.mask.png``, files under ``masks``, the ``mask`` file."""
        resolved = Path(path).resolve()
        return not (
            is_mask_file(path)
            or (self.masks is not None and self.masks.resolve() in resolved.parents)
            or (self.mask is not None and resolved == self.mask.resolve())
        )

    def for_image(self, item) -> Union[dict, Tuple[str, Path]]:
        """The region of one input (an InputImage) as ``{"box": ...}`` or ``{"mask": path}``, or, when its mask
        is missing, (the error, the mask path that was expected)."""
        if self.box is not None:
            return {"box": self.box}
        if self.mask is not None:
            path = self.mask
        elif self.masks is not None:
            path = masks_folder_path(self.masks, item.source_stem, is_medical_name(item.path))
        else:
            path = convention_mask_path(item.path)
        if not path.is_file():
            return f"no mask for this image: expected {path}", path
        return {"mask": path}

"""The CUDA execution provider made to load, and said when it does not.

``onnxruntime-gpu`` 1.31 is a CUDA 13 build: its ``libonnxruntime_providers_cuda.so`` links cuBLAS 13, cuRAND 10
and the CUDA 13 runtime, and loads cuDNN 9 for CUDA 13. The ``occlude[cuda]`` extra installs the wheel with its
own ``cuda`` and ``cudnn`` extras, which bring those libraries as ``nvidia-*`` packages; they are not on the
loader's path, so :func:`prepare_cuda` calls ``onnxruntime.preload_dlls()`` once before the first session (a
matching torch imported first does the same). When the provider still cannot load, onnxruntime quietly runs on
the CPU: :func:`cuda_load_error` finds the reason (the library the dynamic loader could not open), which the
model turns into one ``error:`` line (device cuda) or one note (device auto).

:func:`cuda_facts` names what was loaded: CUDA runtime, cuDNN, the driver and the GPU (through NVML), for
``occlude info``. Everything here is read through ``ctypes`` from the libraries already in the process.
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import os
from typing import Any, Dict, List, Optional

CUDA = "CUDAExecutionProvider"
_prepared: Dict[str, Any] = {}


def prepare_cuda(ort) -> List[str]:
    """Load the CUDA and cuDNN libraries of the ``nvidia-*`` packages (``onnxruntime.preload_dlls``), once per
    process; returns what it printed (warnings), one line each, instead of letting it reach stdout."""
    if "notes" in _prepared:
        return _prepared["notes"]
    notes: List[str] = []
    preload = getattr(ort, "preload_dlls", None)
    if preload is not None:
        printed = io.StringIO()
        try:
            with contextlib.redirect_stdout(printed):
                preload(cuda=True, cudnn=True, msvc=False)
        except Exception as exc:  # noqa: BLE001 -- a failed preload is reported by the session's own check
            notes.append(f"onnxruntime.preload_dlls failed: {type(exc).__name__}: {exc}")
        notes += [_plain(line) for line in printed.getvalue().splitlines() if line.strip()]
    _prepared["notes"] = notes
    return notes


def _plain(line: str) -> str:
    """A line without the terminal colour codes onnxruntime puts in its warnings."""
    import re

    return re.sub(r"\x1b\[[0-9;]*m", "", line).strip()


def cuda_load_error(ort) -> Optional[str]:
    """Why onnxruntime's CUDA provider library cannot be loaded (the dynamic loader's message, e.g. a missing
    ``libcublasLt.so.13``), or None when it loads."""
    folder = os.path.join(os.path.dirname(ort.__file__), "capi")
    shared = os.path.join(folder, "libonnxruntime_providers_shared.so")
    provider = os.path.join(folder, "libonnxruntime_providers_cuda.so")
    if not os.path.exists(provider):
        return f"this onnxruntime has no CUDA provider library ({os.path.basename(provider)})"
    try:
        if os.path.exists(shared):
            ctypes.CDLL(shared, mode=ctypes.RTLD_GLOBAL)
        ctypes.CDLL(provider)
    except OSError as exc:
        return str(exc).replace(folder + os.sep, "")
    return _no_gpu()


def _no_gpu() -> Optional[str]:
    """Why the CUDA runtime sees no GPU (no driver, no device), or None when it sees one."""
    lib = _library("libcudart.so.13", "libcudart.so.12", "libcudart.so")
    if lib is None:
        return None
    count = ctypes.c_int()
    code = lib.cudaGetDeviceCount(ctypes.byref(count))
    if code == 0 and count.value > 0:
        return None
    lib.cudaGetErrorString.restype = ctypes.c_char_p
    text = lib.cudaGetErrorString(code).decode("ascii", "replace") if code else "no device"
    return f"the CUDA runtime sees no GPU ({text})"


def _library(*names: str):
    for name in names:
        try:
            return ctypes.CDLL(name)
        except OSError:
            continue
    return None


def _cuda_runtime() -> Optional[str]:
    lib = _library("libcudart.so.13", "libcudart.so.12", "libcudart.so")
    value = ctypes.c_int()
    if lib is None or lib.cudaRuntimeGetVersion(ctypes.byref(value)) != 0:
        return None
    return f"{value.value // 1000}.{(value.value % 1000) // 10}"


def _cudnn() -> Optional[str]:
    lib = _library("libcudnn.so.9", "libcudnn.so")
    if lib is None:
        return None
    lib.cudnnGetVersion.restype = ctypes.c_size_t
    value = int(lib.cudnnGetVersion())
    return f"{value // 10000}.{(value % 10000) // 100}.{value % 100}"


def _nvml() -> Dict[str, Optional[str]]:
    lib = _library("libnvidia-ml.so.1", "libnvidia-ml.so")
    facts: Dict[str, Optional[str]] = {"gpu": None, "driver": None}
    if lib is None or lib.nvmlInit_v2() != 0:
        return facts
    try:
        buffer = ctypes.create_string_buffer(96)
        if lib.nvmlSystemGetDriverVersion(buffer, 96) == 0:
            facts["driver"] = buffer.value.decode("ascii", "replace")
        handle = ctypes.c_void_p()
        if lib.nvmlDeviceGetHandleByIndex_v2(0, ctypes.byref(handle)) == 0:
            if lib.nvmlDeviceGetName(handle, buffer, 96) == 0:
                facts["gpu"] = buffer.value.decode("utf-8", "replace")
    finally:
        lib.nvmlShutdown()
    return facts


def cuda_facts() -> Dict[str, Optional[str]]:
    """The CUDA runtime and cuDNN versions loaded in this process, the driver and the first GPU's name
    (None where a library is absent)."""
    return {"cuda_runtime": _cuda_runtime(), "cudnn": _cudnn(), **_nvml()}


def device_description(provider: str, available: List[str], notes: List[str]) -> Dict[str, Any]:
    """``occlude info``'s ``device``: the provider the session runs on; on CUDA the runtime, cuDNN, driver and
    GPU; on the CPU why CUDA is not used (a CPU build of onnxruntime, or the reason it did not load)."""
    if provider == CUDA:
        return {"provider": provider, **cuda_facts()}
    if CUDA not in available:
        why = "this onnxruntime is a CPU build (pip install 'occlude[cuda]' for NVIDIA GPUs)"
    else:
        why = "; ".join(notes) or "device cpu was asked for"
    return {"provider": provider, "cuda": why}

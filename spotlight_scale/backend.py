"""The one place that picks CPU (numpy/scipy/scikit-image) or GPU (cupy/cucim).

Algorithm code asks this module for the array namespace and the ndimage /
skimage implementations matching its input (dask-image's dispatcher idea, keyed
on the array type) and never says ``if use_gpu:``. cupy and cucim are imported
lazily, only when a cupy array is seen or a GPU is explicitly requested, so a
CPU-only install never touches them.
"""

from __future__ import annotations

import functools
import importlib
import logging
from types import ModuleType
from typing import Any

import numpy as np

from .errors import SetupError

log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=1)
def gpu_available() -> bool:
    """True when cupy imports and sees at least one CUDA device."""
    try:
        cupy = importlib.import_module("cupy")
        return bool(cupy.is_available())
    except Exception:  # ImportError, CUDA driver errors
        return False


def is_gpu_array(x: Any) -> bool:
    return type(x).__module__.split(".")[0] == "cupy"


def array_module(x: Any = None) -> ModuleType:
    """numpy for host arrays, cupy for device arrays."""
    if x is not None and is_gpu_array(x):
        return importlib.import_module("cupy")
    return np


def ndimage_module(x: Any = None) -> ModuleType:
    """scipy.ndimage or cupyx.scipy.ndimage, matching ``x``."""
    if x is not None and is_gpu_array(x):
        return importlib.import_module("cupyx.scipy.ndimage")
    return importlib.import_module("scipy.ndimage")


def skimage_module(submodule: str, x: Any = None) -> ModuleType:
    """``skimage.<submodule>`` or ``cucim.skimage.<submodule>``, matching ``x``."""
    if x is not None and is_gpu_array(x):
        return importlib.import_module(f"cucim.skimage.{submodule}")
    return importlib.import_module(f"skimage.{submodule}")


def to_device(x: np.ndarray, device: str = "auto"):
    """Move a host array to the chosen device: ``cpu``, ``cuda`` or ``auto``."""
    if device == "cpu" or (device == "auto" and not gpu_available()):
        return x
    if device in ("cuda", "auto"):
        if not gpu_available():
            raise SetupError("device 'cuda' requested but no CUDA GPU is visible (cupy)")
        return importlib.import_module("cupy").asarray(x)
    raise ValueError(f"unknown device {device!r}; expected cpu, cuda or auto")


def to_host(x: Any) -> np.ndarray:
    """Return a numpy array whatever the input's device."""
    if is_gpu_array(x):
        return x.get()
    return np.asarray(x)


def torch_device(device: str = "auto") -> str:
    """Resolve ``auto``/``cpu``/``cuda`` for torch, with a clear error when CUDA is absent."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SetupError("--device cuda requested but torch sees no CUDA GPU")
    if device not in ("cpu",) and not device.startswith("cuda"):
        raise ValueError(f"unknown device {device!r}; expected cpu, cuda or auto")
    return device

"""Device and precision choice: cuda -> mps -> cpu, bf16 where the hardware runs it fast."""
from __future__ import annotations

import contextlib
import functools
import logging
import os

import torch

log = logging.getLogger(__name__)


class DeviceError(RuntimeError):
    """The device asked for does not exist here; the message says what to use instead."""


DEVICE_NAMES = ("auto", "cpu", "cuda", "mps")


def select_device(name: str = "auto") -> torch.device:
    base = name.split(":", 1)[0]
    if base not in DEVICE_NAMES or (":" in name and base != "cuda"):
        raise DeviceError(f"unknown device {name!r}; use auto, cpu, cuda (or cuda:N) or mps")
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if base == "cuda" and not torch.cuda.is_available():
        raise DeviceError("device 'cuda' was asked for, but torch sees no CUDA GPU; use --device cpu or auto")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise DeviceError("device 'mps' was asked for, but this machine has no Apple GPU; use --device cpu or auto")
    return torch.device(name)


@functools.cache
def cpu_has_fast_bf16() -> bool:
    """True when the CPU has native bf16 matrix instructions (AVX-512 BF16 or AMX)."""
    try:
        capability = torch.backends.cpu.get_cpu_capability()
    except AttributeError:
        return False
    if "AVX512" not in capability.upper():
        return False
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="ignore") as handle:
            flags = handle.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for a run, or None for plain fp32."""
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp16":
        return torch.float16 if device.type == "cuda" else torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and cpu_has_fast_bf16():
        return torch.bfloat16
    return None


def channels_last_pays(device: torch.device) -> bool:
    """Whether NHWC convolutions run faster here: on CPUs (oneDNN) and CUDA, not on MPS."""
    return device.type in ("cpu", "cuda")


def autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def describe_device(name: str = "auto") -> str:
    """One line for the About box and logs, e.g. 'NVIDIA H200 (CUDA 13.0)' or 'CPU (2 threads, bf16)'."""
    device = select_device(name)
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    if device.type == "mps":
        return "Apple GPU (MPS)"
    extra = ", bf16" if cpu_has_fast_bf16() else ""
    return f"CPU ({torch.get_num_threads()} threads{extra})"


def default_num_threads() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))

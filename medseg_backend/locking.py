"""Inter-process locks for the shared weights store and the example-library collection.

Several processes may touch the cache at once (the command line, Slicer's worker, a batch job, two Slicer
versions). :class:`FileLock` serialises them with an OS lock on a small lock file: ``fcntl.flock`` on Linux and
macOS, ``msvcrt.locking`` on Windows. The OS drops the lock when its holder exits or crashes, so a lock can
never go stale; the holder's pid is written into the file only to be named in messages. The lock files are
never deleted (deleting one while another process waits on it would let a third one in).

:meth:`FileLock.held_elsewhere` looks without waiting (a model being installed by another process is named as such,
not as missing). A process that finds the lock taken says so once (``on_wait(message)``), then waits, checking its cancel
token, until the holder is done or ``timeout`` runs out (then :class:`~medseg_backend.errors.WeightsError`).
"""
from __future__ import annotations

import os
import sys
import time
from typing import Callable, Optional, Union

from .errors import WeightsError
from .progress import CancelToken, check

__all__ = ["FileLock"]

PathLike = Union[str, os.PathLike]

if sys.platform.startswith("win"):  # pragma: no cover - exercised on Windows only
    import msvcrt

    def _try_lock(fd: int) -> bool:
        try:
            os.lseek(fd, 0, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False

    def _unlock(fd: int) -> None:
        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
else:
    import fcntl

    def _try_lock(fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except (BlockingIOError, PermissionError):
            return False

    def _unlock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)


class FileLock:
    """``with FileLock(path, what="installing lite-medsam"):`` - exclusive across processes and threads.

    ``what`` completes "waiting for another process <what>". ``on_wait`` receives that message once, when the
    lock is found taken. ``timeout`` in seconds (None: wait as long as it takes); ``cancel`` is checked while
    waiting."""

    def __init__(self, path: PathLike, *, what: str, on_wait: Optional[Callable[[str], None]] = None,
                 timeout: Optional[float] = None, cancel: Optional[CancelToken] = None, poll: float = 0.05) -> None:
        self.path = os.fspath(path)
        self.what = what
        self.on_wait = on_wait
        self.timeout = timeout
        self.cancel = cancel
        self.poll = poll
        self._fd: Optional[int] = None
        self.waited = False

    def _holder(self) -> str:
        try:
            with open(self.path, "r", encoding="ascii", errors="replace") as f:
                pid = f.read(32).strip().split()[0]
            return f" (pid {pid})" if pid.isdigit() else ""
        except (OSError, IndexError):
            return ""

    def held_elsewhere(self) -> Optional[str]:
        """None when nobody holds the lock now (or its file does not exist), else `` (pid N)`` (or ``""`` when the
        holder is not named): a look without waiting and without creating anything."""
        try:
            fd = os.open(self.path, os.O_RDWR)
        except OSError:
            return None
        try:
            if _try_lock(fd):
                _unlock(fd)
                return None
            return self._holder()
        finally:
            os.close(fd)

    def acquire(self) -> "FileLock":
        folder = os.path.dirname(self.path)
        try:
            os.makedirs(folder, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as e:
            raise WeightsError(f"Cannot create the lock file {self.path} ({e.strerror}): the folder {folder} must be "
                               "writable; set MEDSEG_HOME to a writable folder.") from None
        start = time.monotonic()
        try:
            while not _try_lock(fd):
                if not self.waited:
                    self.waited = True
                    if self.on_wait is not None:
                        self.on_wait(f"waiting for another process{self._holder()} {self.what}")
                check(self.cancel)
                if self.timeout is not None and time.monotonic() - start > self.timeout:
                    raise WeightsError(f"Another process{self._holder()} has been {self.what} for more than "
                                       f"{self.timeout:g} s: wait for it to finish (or end it) and try again.")
                time.sleep(self.poll)
        except BaseException:
            os.close(fd)
            raise
        try:  # name the holder for waiting processes (informational only)
            os.lseek(fd, 0, os.SEEK_SET)
            if not sys.platform.startswith("win"):
                os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode("ascii"))
        except OSError:
            pass
        self._fd = fd
        return self

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            _unlock(fd)
        finally:
            os.close(fd)

    def __enter__(self) -> "FileLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

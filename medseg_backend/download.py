"""Safe, resumable file downloads with requests.

:func:`download` streams a URL into ``dest + ".part"`` (same folder as ``dest``), checks the byte count against
the server's ``Content-Length`` / ``Content-Range`` and the optional expected size and sha256, and only then
renames the part file onto ``dest`` with :func:`os.replace` (atomic on one file system). So ``dest`` either does
not appear at all or holds the complete, verified file.

Part-file policy (kept simple and safe):

* a ``.part`` found at the start is resumed with an HTTP ``Range`` request; a server that answers ``206`` with
  the matching ``Content-Range`` continues it, one that answers ``200`` (ignores ``Range``), ``416`` or a
  mismatching range makes the download restart cleanly from byte 0; the sha256 covers the whole file, so a bad
  part file is caught at the end;
* on bad data (wrong sha256, wrong size, a web page instead of the file), on an HTTP error and on cancel the
  ``.part`` is deleted;
* on an *interrupted transfer* (connection dropped, read timeout, short read) the ``.part`` is deleted too,
  unless the caller passes ``keep_partial=True``; the weights store does that, for its own download folder
  inside the cache only, so that ``medseg models fetch NAME`` run again resumes where it stopped.

Errors: unreachable host (connection refused, DNS failure, connect timeout, proxy) ->
:class:`~medseg_backend.errors.OfflineError`; everything else -> :class:`~medseg_backend.errors.DownloadError`;
cancel -> :class:`~medseg_backend.errors.CancelledError`. All messages are one line with the fix.
"""
from __future__ import annotations

import hashlib
import os
import re
from typing import Optional, Tuple, Union
from urllib.parse import urlsplit

from .errors import CancelledError, DownloadError, OfflineError
from .progress import CancelToken, ProgressCallback, check, report

__all__ = ["download", "sha256_file", "USER_AGENT"]

USER_AGENT = "medseg-backend (MedSegSlicer weights downloader)"
_MB = 1e6
_CONTENT_RANGE = re.compile(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$", re.IGNORECASE)


def sha256_file(path: Union[str, os.PathLike], chunk_size: int = 1 << 20, cancel: Optional[CancelToken] = None) -> str:
    """Hex sha256 of a file, read in chunks (cancel checked between chunks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            check(cancel)
            block = f.read(chunk_size)
            if not block:
                break
            h.update(block)
    return h.hexdigest()


def _mb(n: Optional[int]) -> str:
    return "?" if n is None else f"{n / _MB:.1f}"


def _host(url: str) -> str:
    try:
        return urlsplit(url).hostname or url
    except ValueError:
        return url


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError:
        pass


def _chain(exc: BaseException):
    """Yield ``exc`` and every exception it wraps (cause, context, ``reason``, exception ``args``)."""
    seen = set()
    stack = [exc]
    while stack:
        e = stack.pop()
        if not isinstance(e, BaseException) or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        stack.extend([getattr(e, "reason", None), e.__cause__, e.__context__])
        stack.extend(a for a in getattr(e, "args", ()) if isinstance(a, BaseException))


def _is_unreachable(exc: BaseException) -> bool:
    """True when a requests ConnectionError comes from failing to *open* a connection (refused, DNS, no route),
    as opposed to a server that accepted and then dropped it."""
    import socket

    import urllib3.exceptions as u3

    for e in _chain(exc):
        if isinstance(e, (u3.NewConnectionError, u3.ConnectTimeoutError, u3.ProxyError, socket.gaierror,
                          ConnectionRefusedError)):
            return True
        if isinstance(e, OSError) and getattr(e, "errno", None) in _UNREACHABLE_ERRNOS:
            return True
    return False


def _is_short_read(exc: BaseException) -> bool:
    import http.client

    import urllib3.exceptions as u3

    return any(isinstance(e, (u3.IncompleteRead, http.client.IncompleteRead)) for e in _chain(exc))


def _is_timeout(exc: BaseException) -> bool:
    import urllib3.exceptions as u3

    return any(isinstance(e, (u3.TimeoutError, TimeoutError)) for e in _chain(exc))


def _errnos() -> frozenset:
    import errno

    names = ("ECONNREFUSED", "ENETUNREACH", "EHOSTUNREACH", "ENETDOWN", "EHOSTDOWN", "EADDRNOTAVAIL")
    return frozenset(getattr(errno, n) for n in names if hasattr(errno, n))


_UNREACHABLE_ERRNOS = _errnos()


def _offline(url: str, exc: BaseException) -> OfflineError:
    return OfflineError(
        f"Cannot reach {_host(url)} ({type(exc).__name__}): the machine seems offline or a firewall/proxy blocks "
        "it; get the file on another machine and install it with `medseg models import NAME FILE`.")


def _interrupted(msg: str) -> DownloadError:
    err = DownloadError(msg)
    err.resumable = True  # the caller may keep the .part for a later resume
    return err


def download(url: str, dest: Union[str, os.PathLike], *, expected_sha256: Optional[str] = None,
             expected_size: Optional[int] = None, progress: Optional[ProgressCallback] = None,
             cancel: Optional[CancelToken] = None, timeout: Tuple[float, float] = (10, 60), session=None,
             chunk_size: int = 1 << 20, keep_partial: bool = False, max_size: Optional[int] = None) -> str:
    """Download ``url`` to ``dest`` atomically and return the file's sha256 (hex).

    ``max_size`` bounds what is accepted when neither ``expected_size`` nor the server gives the length (a server
    that sends no ``Content-Length`` and never stops): more bytes than that end the download with an error.

    ``progress(fraction, message)`` gets MB counts; ``cancel`` is checked between chunks. ``timeout`` is
    requests' ``(connect, read)`` pair. ``session`` is an optional ``requests.Session`` (one is created and
    closed otherwise). See the module docstring for the part-file policy and the errors raised.
    """
    import requests

    dest = os.fspath(dest)
    part = dest + ".part"
    name = os.path.basename(dest)
    folder = os.path.dirname(os.path.abspath(dest))
    if expected_sha256 is not None:
        expected_sha256 = expected_sha256.strip().lower()
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as e:
        raise DownloadError(f"Cannot create the download folder {folder} ({e.strerror}): choose a writable "
                            "folder (set MEDSEG_HOME for the weights cache).") from None

    own_session = session is None
    if own_session:
        session = requests.Session()
    keep = False
    try:
        check(cancel)
        offset = os.path.getsize(part) if os.path.isfile(part) else 0
        if offset and expected_size is not None and offset >= expected_size:
            if offset == expected_size and expected_sha256 and sha256_file(part, cancel=cancel) == expected_sha256:
                report(progress, 1.0, f"Downloaded {name}: {_mb(offset)} of {_mb(offset)} MB (already complete)")
                os.replace(part, dest)
                return expected_sha256
            _unlink(part)
            offset = 0

        for _attempt in range(3):  # a rejected resume restarts from 0; that cannot happen twice
            headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
            if offset:
                headers["Range"] = f"bytes={offset}-"
            try:
                resp = session.get(url, stream=True, timeout=timeout, headers=headers, allow_redirects=True)
            except requests.exceptions.SSLError as e:
                raise DownloadError(f"Secure connection to {_host(url)} failed ({type(e).__name__}): check the "
                                    "system certificates or proxy, or use `medseg models import NAME FILE`.") from None
            except (requests.exceptions.ConnectTimeout, requests.exceptions.ProxyError) as e:
                raise _offline(url, e) from None
            except requests.exceptions.ConnectionError as e:
                if _is_unreachable(e):
                    raise _offline(url, e) from None
                raise _interrupted(f"The connection to {_host(url)} was dropped before the download of {name} "
                                   "started: try again later.") from None
            except requests.exceptions.Timeout:
                raise _interrupted(f"{_host(url)} did not answer within {timeout} s: try again later or with a "
                                   "longer timeout.") from None
            except requests.exceptions.RequestException as e:
                raise DownloadError(f"Cannot download {url!r} ({type(e).__name__}: {e}): check the URL.") from None

            with resp:
                status = resp.status_code
                if offset and status == 416:
                    _unlink(part)
                    offset = 0
                    continue
                if status >= 400:
                    raise DownloadError(f"Download of {name} failed: {_host(url)} answered HTTP {status} "
                                        f"{resp.reason or ''}".rstrip() + "; check the URL or try again later.")
                clen = resp.headers.get("Content-Length")
                clen = int(clen) if clen and clen.strip().isdigit() else None
                if status == 206 and offset:
                    m = _CONTENT_RANGE.match(resp.headers.get("Content-Range", ""))
                    if not m or int(m.group(1)) != offset:
                        _unlink(part)  # a range we did not ask for: start again from 0
                        offset = 0
                        continue
                    total = int(m.group(3)) if m.group(3) != "*" else (offset + clen if clen is not None else None)
                elif status == 200:
                    if offset:
                        _unlink(part)  # the server ignores Range: restart cleanly
                        offset = 0
                    total = clen
                else:
                    raise DownloadError(f"Download of {name} failed: unexpected HTTP {status} from {_host(url)}; "
                                        "check the URL.")
                ctype = resp.headers.get("Content-Type", "").lower()
                if ctype.startswith("text/html"):
                    raise DownloadError(f"{_host(url)} sent a web page instead of {name} (a login or confirmation "
                                        "page?): download it in a browser and use `medseg models import NAME FILE`.")
                if expected_size is not None and total is not None and total != expected_size:
                    raise DownloadError(f"{_host(url)} offers {total} bytes for {name} but {expected_size} are "
                                        "expected: the file on the server is not the expected one; check the URL.")
                if max_size is not None and total is not None and total > max_size:
                    raise DownloadError(f"{_host(url)} offers {total} bytes for {name}, more than the {max_size} "
                                        "a file of this kind can have: it is not the expected file; check the URL.")

                hasher = hashlib.sha256()
                if offset:
                    with open(part, "rb") as f:
                        for block in iter(lambda: f.read(1 << 20), b""):
                            hasher.update(block)
                received = offset
                report(progress, received / total if total else 0.0,
                       f"Downloading {name}: {_mb(received)} of {_mb(total)} MB")
                try:
                    f = open(part, "ab" if offset else "wb")
                except OSError as e:
                    raise DownloadError(f"Cannot write {part} ({e.strerror}): choose a writable folder.") from None
                with f:
                    chunks = resp.iter_content(chunk_size=chunk_size)
                    while True:
                        check(cancel)
                        try:
                            chunk = next(chunks)
                        except StopIteration:
                            break
                        except (requests.exceptions.RequestException, OSError) as e:
                            if _is_timeout(e):
                                raise _interrupted(f"{_host(url)} stopped sending {name} after {_mb(received)} of "
                                                   f"{_mb(total)} MB (timed out): try again.") from None
                            if _is_short_read(e):
                                raise _interrupted(f"The download of {name} stopped early: {_host(url)} closed the "
                                                   f"connection after {_mb(received)} of {_mb(total)} MB (truncated "
                                                   "transfer); try again.") from None
                            raise _interrupted(f"The connection to {_host(url)} dropped after {_mb(received)} of "
                                               f"{_mb(total)} MB of {name} ({type(e).__name__}): try again.") from None
                        if not chunk:
                            continue
                        try:
                            f.write(chunk)
                        except OSError as e:
                            raise DownloadError(f"Cannot write {part} ({e.strerror}): free some disk space or "
                                                "choose another folder.") from None
                        hasher.update(chunk)
                        received += len(chunk)
                        limit = expected_size if expected_size is not None else total
                        if limit is None:
                            limit = max_size
                        if limit is not None and received > limit:
                            raise DownloadError(f"{_host(url)} sent more than the {limit} bytes expected for {name}: "
                                                "the file is not the expected one; check the URL.")
                        report(progress, received / total if total else 0.0,
                               f"Downloading {name}: {_mb(received)} of {_mb(total)} MB")
                    check(cancel)
                    try:
                        f.flush()
                        os.fsync(f.fileno())
                    except OSError as e:
                        raise DownloadError(f"Cannot write {part} ({e.strerror}): free some disk space or choose "
                                            "another folder.") from None
            break
        else:  # pragma: no cover - defensive: the server keeps rejecting resumes
            raise DownloadError(f"{_host(url)} keeps rejecting the download of {name}: try again later.")

        if total is not None and received < total:
            raise _interrupted(f"The download of {name} stopped early: got {received} of {total} bytes "
                               f"(truncated transfer from {_host(url)}); try again.")
        if expected_size is not None and received != expected_size:
            raise DownloadError(f"Downloaded {name} has {received} bytes but {expected_size} are expected: the "
                                "server sent an incomplete or different file; try again or check the URL.")
        digest = hasher.hexdigest()
        if expected_sha256 and digest != expected_sha256:
            raise DownloadError(f"Downloaded {name} is damaged or not the expected file: sha256 {digest} instead "
                                f"of {expected_sha256}; it was deleted, try again or check the URL.")
        os.replace(part, dest)
        report(progress, 1.0, f"Downloaded {name}: {_mb(received)} MB")
        return digest
    except CancelledError:
        raise CancelledError(f"Download of {name} cancelled by the user: nothing was written.") from None
    except DownloadError as e:
        # keep the part only for an interrupted transfer (or an untouched one when offline), and only if asked
        keep = keep_partial and (getattr(e, "resumable", False) or isinstance(e, OfflineError))
        raise
    finally:
        if not keep:
            _unlink(part)
        if own_session:
            session.close()

"""Exceptions and warnings of the backend.

Every error a user can cause is a :class:`MedSegError` whose message is one line that names the problem and
the fix ("<what is wrong>: <what to do>"). The CLI prints ``str(error)`` and exits non-zero; the Slicer
effects show it in a message box. Nothing is written when one is raised.
"""


class MedSegError(Exception):
    """Base class: a problem the user can fix. ``str(err)`` is the one-line message."""


class InputError(MedSegError, ValueError):
    """Bad image, box, label or option."""


class WeightsError(MedSegError):
    """Missing, wrong or damaged model weights."""


class DownloadError(WeightsError):
    """A download failed; no partial file was left behind."""


class OfflineError(DownloadError):
    """The weights server cannot be reached."""


class LicenceError(WeightsError):
    """Weights under a restrictive licence that the user has not accepted yet."""


class CancelledError(MedSegError):
    """The run was cancelled by the user; nothing was written."""


class WorkerError(MedSegError):
    """The model worker could not be started, stopped unexpectedly or stopped answering."""


class MedSegWarning(UserWarning):
    """Something was adjusted (box clipped, few examples, ...) and the run went on."""


def clip_text(text: str, limit: int = 100) -> str:
    """``text`` on one line, cut at a word boundary to at most ``limit`` characters ("..." when cut), for
    quoting a library's reason inside a one-line message without cutting a word in half."""
    text = " ".join(str(text).split())
    if len(text) <= limit:
        return text
    cut = text[:limit - 3]
    if " " in cut[limit // 2:]:
        cut = cut[:cut.rfind(" ")]
    return cut.rstrip(" ,;:(") + "..."

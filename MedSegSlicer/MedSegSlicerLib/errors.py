"""Errors of the Slicer layer: the backend's classes (one-line "problem: fix" messages) plus the job runner's."""
from medseg_backend.errors import (CancelledError, DownloadError, InputError, LicenceError, MedSegError,
                                   MedSegWarning, OfflineError, WeightsError, WorkerError)

__all__ = ["CancelledError", "DownloadError", "InputError", "LicenceError", "MedSegError", "MedSegWarning",
           "OfflineError", "WeightsError", "WorkerError", "JobBusyError"]


class JobBusyError(InputError):
    """A second run was started while one is still running."""

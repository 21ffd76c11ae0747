"""The model worker seen from the Slicer application: it runs with Slicer's own Python (PythonSlicer), logs into
Slicer's temporary folder, and is stopped when Slicer exits (the process itself: ``medseg_backend.worker.client``)."""
import logging
import os
import shutil
import sys

import slicer

from medseg_backend.worker import client as worker_client
from MedSegSlicerLib import model_server


#
# Model worker: the models run in a separate process started with Slicer's own Python (medseg_backend.worker.client)
#
def workerPython():
    """Slicer's Python for the model worker: the PythonSlicer launcher (sets up Slicer's environment), else the
    interpreter of this process."""
    found = shutil.which("PythonSlicer")
    if not found:
        home = getattr(slicer.app, "slicerHome", "") or ""
        for name in ("PythonSlicer.exe", "PythonSlicer"):
            candidate = os.path.join(home, "bin", name)
            if home and os.path.isfile(candidate):
                found = candidate
                break
    return found or sys.executable


def workerLogPath():
    """The worker's log file (its output, errors and tracebacks), in Slicer's temporary folder."""
    return os.path.join(slicer.app.temporaryPath, worker_client.LOG_NAME)


def configureWorker():
    worker_client.configure(python=workerPython(), log_path=workerLogPath())


def shutdownWorker():
    """Stop the model worker (Slicer exits, or the module is cleaned up)."""
    try:
        worker_client.shutdown_shared()
        model_server.shutdown()                  # closes this Slicer's sessions on a model server
    except Exception:  # noqa: BLE001 - never block Slicer's exit
        logging.exception("MedSegSlicer: stopping the model worker failed")

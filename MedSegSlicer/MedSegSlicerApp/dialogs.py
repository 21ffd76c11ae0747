"""The dialogs behind the Qt-free logic's callbacks (``MedSegSlicerLib.logic.MedSegLogic``: ``ask``,
``accept_licence``, ``inform``, ``run_with_progress``)."""
import time

import slicer


def confirmDialog(question, title):
    return slicer.util.confirmOkCancelDisplay(question, windowTitle=title)


def licenceDialog(text, title):
    return slicer.util.confirmYesNoDisplay(text, windowTitle=title)


def infoDialog(text):
    slicer.util.infoDisplay(text, windowTitle="MedSegSlicer")


def runWithProgressDialog(work, title):
    """Run ``work(progress, cancel)`` (light in-process work: downloads) in a thread while a modal progress dialog
    spins the event loop; returns the job's outcome."""
    from MedSegSlicerLib.jobs import JobRunner

    runner = JobRunner()
    dialog = slicer.util.createProgressDialog(windowTitle=title, labelText=title, maximum=1000)
    runner.start(work, label=title)
    try:
        while True:
            slicer.app.processEvents()
            if dialog.wasCanceled:
                runner.cancel()
            fraction, message = runner.progress()
            dialog.setValue(int(1000 * fraction))
            dialog.setLabelText(message or title)
            outcome = runner.poll()
            if outcome is not None:
                break
            time.sleep(0.05)
    finally:
        dialog.close()
    return outcome

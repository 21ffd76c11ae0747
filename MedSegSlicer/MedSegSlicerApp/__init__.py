"""The module's Slicer-application code that is neither a widget nor MRML data: what runs at startup (effects and
Sample Data registration), the model worker's process settings, and the installer and dialogs the Qt-free logic
(``MedSegSlicerLib.logic``) asks through. It imports ``slicer`` / ``qt`` and runs only inside Slicer; the Qt-free
layer, tested headless, is ``MedSegSlicerLib``.

* :mod:`.startup` - register the Segment Editor effects and the sample CT once Slicer has started;
* :mod:`.worker` - Slicer's Python and the log file for the model worker, stopping it on exit;
* :mod:`.installer` - installs into Slicer's Python (PyTorch extension, pip);
* :mod:`.dialogs` - the questions, messages and progress dialog the logic's callbacks show.
"""

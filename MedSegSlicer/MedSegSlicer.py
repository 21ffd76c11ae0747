"""MedSegSlicer: MedSAM / LiteMedSAM (box prompts) and UniverSeg (example segmentations) in 3D Slicer.

This file holds what Slicer looks for in a scripted module's file: the module (registers the two Segment Editor
effects and the sample CT after startup), the settings panel (widget code only), :class:`MedSegSlicerLogic` (the
Qt-free ``MedSegSlicerLib.logic.MedSegLogic`` with Slicer's dialogs, settings and installers) and the self-test.
The application glue they use (startup registration, the worker's process settings, the installer, the dialogs)
lives in ``MedSegSlicerApp``; everything that touches MRML data lives in the Qt-free package ``MedSegSlicerLib``
(tested headless with slicer-core); the models live in the bundled ``medseg_backend`` package. Nothing is installed at import time: dependencies and weights are installed on first
use, after one confirmation.
"""
import logging
import os
import sys
import unittest

import ctk
import qt
import slicer
from slicer.ScriptedLoadableModule import (ScriptedLoadableModule, ScriptedLoadableModuleLogic,
                                           ScriptedLoadableModuleTest, ScriptedLoadableModuleWidget)

from MedSegSlicerApp.dialogs import confirmDialog, infoDialog, licenceDialog, runWithProgressDialog
from MedSegSlicerApp.installer import SlicerInstaller
from MedSegSlicerApp.startup import EFFECT_NAMES, registerEffects, registerSampleData
from MedSegSlicerApp.worker import configureWorker, shutdownWorker
from MedSegSlicerLib import deps, model_server, service
from MedSegSlicerLib.errors import MedSegError
from MedSegSlicerLib.logic import MedSegLogic

try:  # Slicer's translation functions (slicer.i18n, Slicer >= 5.4); plain strings where they are missing
    from slicer.i18n import tr as _
    from slicer.i18n import translate
except ImportError:
    def _(text):
        return text

    def translate(context, text):
        return text

SETTINGS_DEVICE = MedSegLogic.SETTINGS_DEVICE
SETTINGS_CACHE = MedSegLogic.SETTINGS_CACHE

#
# Module
#
class MedSegSlicer(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("MedSeg (MedSAM / UniverSeg)")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        self.parent.dependencies = ["Segmentations", "SegmentEditor", "Markups"]
        self.parent.contributors = ["MedSegSlicer developers"]
        self.parent.helpText = _(
            "Segment structures with foundation models: <b>MedSAM box</b> (LiteMedSAM or MedSAM ViT-B from a 3D "
            "ROI box) and <b>UniverSeg examples</b> (from a few labelled slices, other segmentations or an example "
            "library). Both are Segment Editor effects with Preview / Apply / Cancel; Apply is undoable and respects "
            "the editable area, intensity masking and overwrite settings. This panel holds the settings: device, "
            "weights cache, model downloads and licences.")
        self.parent.acknowledgementText = _(
            "MedSAM / LiteMedSAM (Ma et al., Nature Communications 2024; Apache-2.0 weights), UniverSeg (Butoi et "
            "al., ICCV 2023; weights under OpenRAIL++-M, research use only). Models re-implemented in the bundled "
            "medseg_backend package.")
        # the effects reach the shared logic through MedSegSlicerLib.service (they do not import this module)
        service.register_logic_factory(lambda: MedSegSlicerLogic.shared())
        slicer.app.connect("startupCompleted()", registerEffects)
        slicer.app.connect("startupCompleted()", registerSampleData)
        slicer.app.connect("aboutToQuit()", shutdownWorker)


#
# Widget (settings panel)
#
class MedSegSlicerWidget(ScriptedLoadableModuleWidget):
    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        ui_widget = slicer.util.loadUI(self.resourcePath("UI/MedSegSlicer.ui"))
        self.layout.addWidget(ui_widget)
        self.ui = slicer.util.childWidgetVariables(ui_widget)
        ui_widget.setMRMLScene(slicer.mrmlScene)
        self.logic = MedSegSlicerLogic.shared()

        self.ui.deviceComboBox.clear()
        from medseg_backend.choices import DEVICES

        for device in DEVICES:
            self.ui.deviceComboBox.addItem(device)
        self.ui.deviceComboBox.currentText = self.logic.device
        self.ui.cacheFolderPathLineEdit.filters = ctk.ctkPathLineEdit.Dirs
        self.ui.cacheFolderPathLineEdit.currentPath = self.logic.cacheFolder()

        self.ui.deviceComboBox.connect("currentIndexChanged(int)", self.onDeviceChanged)
        self.ui.cacheFolderPathLineEdit.connect("currentPathChanged(QString)", self.onCacheFolderChanged)
        self.ui.installDependenciesButton.connect("clicked()", self.onInstallDependencies)
        self.ui.downloadButton.connect("clicked()", lambda: self.onModelAction("download"))
        self.ui.importButton.connect("clicked()", lambda: self.onModelAction("import"))
        self.ui.verifyButton.connect("clicked()", lambda: self.onModelAction("verify"))
        self.ui.deleteButton.connect("clicked()", lambda: self.onModelAction("delete"))
        self.ui.acceptLicenceButton.connect("clicked()", lambda: self.onModelAction("licence"))
        self.ui.refreshButton.connect("clicked()", self.refresh)
        self.ui.openSegmentEditorButton.connect("clicked()", self.onOpenSegmentEditor)
        self.setupSeveralStructures()
        self.setupWhereModelsRun()
        self.setupTaskRow()
        self.refresh()

    def setupTaskRow(self):
        """Progress, status and Cancel of the panel's runs (Segment them, Verify, Import): they start at once and
        finish through this timer (MedSegLogic.pollTask), so Slicer never waits on the model worker."""
        self.taskTimer = qt.QTimer()
        self.taskTimer.setInterval(100)
        self.taskTimer.connect("timeout()", self.onTaskPoll)
        self.taskProgress = qt.QProgressBar()
        self.taskProgress.setRange(0, 1000)
        self.taskProgress.visible = False
        self.taskCancelButton = qt.QPushButton("Cancel")
        self.taskCancelButton.setToolTip("Stop the run: nothing is written.")
        self.taskCancelButton.visible = False
        self.taskCancelButton.connect("clicked()", self.logic.cancelTask)
        self.taskStatusLabel = qt.QLabel("")
        self.taskStatusLabel.wordWrap = True
        row = qt.QHBoxLayout()
        row.addWidget(self.taskProgress)
        row.addWidget(self.taskCancelButton)
        self.layout.addLayout(row)
        self.layout.addWidget(self.taskStatusLabel)

    def startTask(self, start):
        """Start a panel run (``start()`` returns its label or raises MedSegError) and poll it."""
        try:
            label = start()
        except MedSegError as e:
            self.showTaskStatus(str(e), error=True)
            return
        self.showTaskStatus(f"{label}: running...")
        self.taskProgress.value = 0
        self.taskProgress.visible = self.taskCancelButton.visible = True
        self.taskTimer.start()

    def onTaskPoll(self):
        state = self.logic.pollTask()
        if state is not None and state[2] is None:
            fraction, message, _ = state
            self.taskProgress.value = int(1000 * fraction)
            self.taskProgress.setFormat(message or "%p%")
            return
        self.taskTimer.stop()
        self.taskProgress.visible = self.taskCancelButton.visible = False
        if state is not None:
            self.showTaskStatus(state[1], error=not state[2])
        self.refresh()

    def showTaskStatus(self, text, error=False):
        self.taskStatusLabel.text = text
        self.taskStatusLabel.setStyleSheet("color: #c00000;" if error else "")

    def setupWhereModelsRun(self):
        """This computer (the local model worker) or a department model server (URL + token, SERVER.md); the
        logic is MedSegSlicerLib.model_server (Qt-free)."""
        section = ctk.ctkCollapsibleButton()
        section.text = "Where models run"
        section.collapsed = model_server.mode() == model_server.MODE_LOCAL
        form = qt.QFormLayout(section)
        self.runLocalRadio = qt.QRadioButton("This computer")
        self.runServerRadio = qt.QRadioButton("Model server")
        self.runServerRadio.setToolTip("A department server running 'medseg serve' (see SERVER.md); Slicer then "
                                       "needs no torch, the volume is sent once per session.")
        (self.runServerRadio if model_server.mode() == model_server.MODE_SERVER else self.runLocalRadio).checked = True
        row = qt.QHBoxLayout()
        row.addWidget(self.runLocalRadio)
        row.addWidget(self.runServerRadio)
        form.addRow(row)
        self.serverUrlEdit = qt.QLineEdit(slicer.util.settingsValue(model_server.SETTINGS_URL, ""))
        self.serverUrlEdit.setPlaceholderText("https://medseg.example.org")
        self.serverTokenEdit = qt.QLineEdit(slicer.util.settingsValue(model_server.SETTINGS_TOKEN, ""))
        self.serverTokenEdit.echoMode = qt.QLineEdit.Password
        self.serverTokenEdit.setToolTip("Your token from the server's admin ('medseg serve-token add USER').")
        form.addRow("Server URL:", self.serverUrlEdit)
        form.addRow("Token:", self.serverTokenEdit)
        self.testConnectionButton = qt.QPushButton("Test connection")
        self.serverStatusLabel = qt.QLabel(model_server.describe())
        self.serverStatusLabel.wordWrap = True
        form.addRow(self.testConnectionButton)
        form.addRow(self.serverStatusLabel)
        self.runLocalRadio.connect("toggled(bool)", lambda on: self.onWhereModelsRun())
        self.serverUrlEdit.connect("editingFinished()", self.onWhereModelsRun)
        self.serverTokenEdit.connect("editingFinished()", self.onWhereModelsRun)
        self.testConnectionButton.connect("clicked()", self.onTestConnection)
        self.layout.addWidget(section)

    def onWhereModelsRun(self):
        mode = model_server.MODE_SERVER if self.runServerRadio.checked else model_server.MODE_LOCAL
        url, token = self.serverUrlEdit.text.strip(), self.serverTokenEdit.text.strip()
        settings = qt.QSettings()
        settings.setValue(model_server.SETTINGS_URL, url)
        settings.setValue(model_server.SETTINGS_TOKEN, token)
        try:
            text = model_server.configure(mode, url, token)
        except MedSegError as e:
            text = f"{e} Models run on this computer meanwhile."
            model_server.configure(model_server.MODE_LOCAL)
        settings.setValue(model_server.SETTINGS_MODE, model_server.mode())
        self.serverStatusLabel.text = text

    def onTestConnection(self):
        # the check runs in a thread (model_server.ConnectionCheck): the panel polls it, nothing waits here
        self.connectionCheck = model_server.start_check(self.serverUrlEdit.text.strip(),
                                                        self.serverTokenEdit.text.strip())
        self.testConnectionButton.enabled = False
        self.serverStatusLabel.text = "Connecting..."
        self.serverStatusLabel.setStyleSheet("")
        qt.QTimer.singleShot(100, self.onConnectionCheckPoll)

    def onConnectionCheckPoll(self):
        if self.connectionCheck.result is None:
            qt.QTimer.singleShot(100, self.onConnectionCheckPoll)
            return
        ok, text = self.connectionCheck.result
        self.testConnectionButton.enabled = True
        self.serverStatusLabel.text = text
        self.serverStatusLabel.setStyleSheet("" if ok else "color: #c00000;")

    def setupSeveralStructures(self):
        """Several structures at once: every ROI of the scene -> its own segment, named, coloured and coded from
        the standard list (MedSegSlicerLib.terminology), in one MedSAM run."""
        from MedSegSlicerLib import terminology

        section = ctk.ctkCollapsibleButton()
        section.text = "Several structures at once (MedSAM)"
        section.collapsed = True
        form = qt.QFormLayout(section)
        self.multiVolumeSelector = slicer.qMRMLNodeComboBox()
        self.multiVolumeSelector.nodeTypes = ["vtkMRMLScalarVolumeNode"]
        self.multiVolumeSelector.addEnabled = False
        self.multiVolumeSelector.removeEnabled = False
        self.multiVolumeSelector.setMRMLScene(slicer.mrmlScene)
        self.multiVolumeSelector.setToolTip("The image to segment.")
        form.addRow("Volume:", self.multiVolumeSelector)
        self.multiTable = qt.QTableWidget(0, 2)
        self.multiTable.setHorizontalHeaderLabels(["ROI", "Structure"])
        self.multiTable.horizontalHeader().setStretchLastSection(True)
        self.multiTable.setToolTip("One row per ROI (box) of the scene: pick the structure each one holds. Rows set "
                                   "to '(skip)' are not run.")
        form.addRow(self.multiTable)
        self.multiStructureNames = ["(skip)"] + terminology.names()
        refresh = qt.QPushButton("List the ROIs")
        refresh.setToolTip("Fill the table with the ROIs (boxes) of the scene.")
        run = qt.QPushButton("Segment them")
        run.setToolTip("One MedSAM run for all rows: each ROI becomes a new segment with the structure's standard "
                       "name, colour and terminology codes, in a new segmentation.")
        row = qt.QHBoxLayout()
        row.addWidget(refresh)
        row.addWidget(run)
        form.addRow(row)
        refresh.connect("clicked()", self.onListRois)
        run.connect("clicked()", self.onSegmentSeveral)
        self.layout.addWidget(section)

    def onListRois(self):
        from MedSegSlicerLib import terminology

        rois = list(slicer.util.getNodesByClass("vtkMRMLMarkupsROINode"))
        self.multiTable.setRowCount(len(rois))
        for r, roi in enumerate(rois):
            item = qt.QTableWidgetItem(roi.GetName())
            item.setData(qt.Qt.UserRole, roi.GetID())
            self.multiTable.setItem(r, 0, item)
            combo = qt.QComboBox()
            combo.addItems(self.multiStructureNames)
            guess = terminology.lookup(roi.GetName())
            combo.currentText = guess.name if guess else "(skip)"
            self.multiTable.setCellWidget(r, 1, combo)

    def onSegmentSeveral(self):
        volume = self.multiVolumeSelector.currentNode()
        rois, structures = [], []
        for r in range(self.multiTable.rowCount):
            structure = self.multiTable.cellWidget(r, 1).currentText
            if structure != "(skip)":
                rois.append(slicer.mrmlScene.GetNodeByID(self.multiTable.item(r, 0).data(qt.Qt.UserRole)))
                structures.append(structure)
        self.startTask(lambda: self.logic.startSegmentSeveral(volume, rois, structures))

    def cleanup(self):
        self.taskTimer.stop()
        shutdownWorker()

    def refresh(self):
        self.ui.dependenciesLabel.text = self.logic.dependencyStatus()
        self.ui.cpuWarningLabel.text = self.logic.deviceWarning()
        self.ui.cpuWarningLabel.visible = bool(self.ui.cpuWarningLabel.text)
        table = self.ui.modelsTableWidget
        rows = self.logic.modelRows()
        table.setRowCount(len(rows))
        for r, row in enumerate(rows):
            for c, key in enumerate(("name", "installed", "licence", "accepted", "path")):
                item = qt.QTableWidgetItem(str(row.get(key, "")))
                item.setToolTip(str(row.get("notes", "")))
                table.setItem(r, c, item)
        if rows and table.currentRow() < 0:
            table.selectRow(0)

    def selectedModel(self):
        row = self.ui.modelsTableWidget.currentRow()
        item = self.ui.modelsTableWidget.item(row, 0) if row >= 0 else None
        return item.text() if item else None

    def onDeviceChanged(self, _index):
        self.logic.setDevice(self.ui.deviceComboBox.currentText)
        self.refresh()

    def onCacheFolderChanged(self, path):
        self.logic.setCacheFolder(path)
        self.refresh()

    def onInstallDependencies(self):
        with slicer.util.tryWithErrorDisplay("Installing dependencies failed.", waitCursor=True):
            self.logic.ensureDependencies(ask=True)
        self.refresh()

    def onModelAction(self, action):
        name = self.selectedModel()
        if not name:
            slicer.util.warningDisplay("Select a model in the table first.")
            return
        try:
            if action == "download":
                self.logic.ensureWeights(name, ask=True)
            elif action == "import":
                path = qt.QFileDialog.getOpenFileName(None, f"Import weights for {name}", "",
                                                      "PyTorch checkpoints (*.pth *.pt);;All files (*)")
                if path:
                    accepted = self.logic.askLicence(name)
                    self.startTask(lambda: self.logic.startImportWeights(name, path, acceptLicence=accepted))
            elif action == "verify":
                self.startTask(lambda: self.logic.startVerify(name))
            elif action == "delete":
                if slicer.util.confirmOkCancelDisplay(f"Delete the cached weights of {name}?"):
                    self.logic.deleteWeights(name)
            elif action == "licence":
                self.logic.askLicence(name, force=True)
        except MedSegError as e:
            slicer.util.errorDisplay(str(e))
        self.refresh()

    def onOpenSegmentEditor(self):
        slicer.util.selectModule("SegmentEditor")
        try:
            editor = slicer.modules.segmenteditor.widgetRepresentation().self().editor
            editor.setActiveEffectByName(EFFECT_NAMES[0])
        except Exception:  # noqa: BLE001 - the editor still opens
            logging.debug("could not activate the MedSAM box effect", exc_info=True)


#
# Logic: MedSegSlicerLib.logic.MedSegLogic with Slicer's dialogs, settings and installers (MedSegSlicerApp)
#
class MedSegSlicerLogic(MedSegLogic, ScriptedLoadableModuleLogic):
    """:class:`MedSegSlicerLib.logic.MedSegLogic` (the batch API, see there) asking through Slicer's dialogs and
    keeping the device and cache folder in Slicer's settings."""

    _shared = None

    @classmethod
    def shared(cls):
        """The instance shared by the panel and the effects (one set of loaded models)."""
        if cls._shared is None:
            cls._shared = cls()
        return cls._shared

    def __init__(self):
        ScriptedLoadableModuleLogic.__init__(self)
        folder = slicer.util.settingsValue(SETTINGS_CACHE, "")
        if folder:
            os.environ["MEDSEG_HOME"] = folder
        MedSegLogic.__init__(self, slicer.util.settingsValue(SETTINGS_DEVICE, "auto"), ask=confirmDialog,
                             accept_licence=licenceDialog, inform=infoDialog, run_with_progress=runWithProgressDialog,
                             installer=SlicerInstaller())
        configureWorker()
        problem = model_server.from_settings(slicer.util.settingsValue)
        if problem:
            logging.warning("MedSegSlicer: %s", problem)

    def _remember(self, key, value):
        qt.QSettings().setValue(key, value)


#
# Self-test: the same scenarios as the headless pytest suite. They are test code, kept in the module's test folder
# (Testing/Python/MedSegSlicerScenarios.py; copied to <build>/.../MedSegSlicerTesting/Python by
# Testing/Python/CMakeLists.txt when BUILD_TESTING is on) and not shipped: only this class imports them.
#
SCENARIOS_MODULE = "MedSegSlicerScenarios"


def findScenariosDir(start=None):
    """The folder holding the self-test's scenarios: ``Testing/Python`` of the module's source tree or
    ``MedSegSlicerTesting/Python`` of the build tree, searched from this file's folder up; ``None`` if absent."""
    d = os.path.dirname(os.path.abspath(start or __file__))
    for _ in range(5):
        for candidate in (os.path.join(d, "Testing", "Python"), os.path.join(d, "MedSegSlicerTesting", "Python")):
            if os.path.isfile(os.path.join(candidate, SCENARIOS_MODULE + ".py")):
                return candidate
        d = os.path.dirname(d)
    return None


class MedSegSlicerTest(ScriptedLoadableModuleTest):
    def setUp(self):
        slicer.mrmlScene.Clear(0)

    def runTest(self):
        for test in (self.test_UndoRestores, self.test_CancelLeavesUntouched, self.test_UniverSegPlumbing,
                     self.test_MedSAMBox, self.test_SubrangeRerunKeepsRest, self.test_CorrectAndRepropagate,
                     self.test_WorkerCrashLeavesUntouched, self.test_ViewJourney):
            self.setUp()
            try:
                test()
            except unittest.SkipTest as skipped:
                self.delayDisplay(f"{test.__name__} skipped: {skipped}")

    def _scenarios(self):
        """The scenarios module from the module's test folder (a source or build tree; an installed extension
        ships no test code, so there the self-test is skipped with this reason)."""
        folder = findScenariosDir(__file__)
        if folder is None:
            self.skipTest(f"the self-test scenarios ({SCENARIOS_MODULE}.py) are not here: run the self-test from a "
                          "source or build tree of MedSegSlicer (they live in MedSegSlicer/Testing/Python)")
        if folder not in sys.path:
            sys.path.insert(0, folder)
        import importlib

        return importlib.import_module(SCENARIOS_MODULE)

    def _context(self):
        from MedSegSlicerLib.sample_data import find_sample_dir
        from MedSegSlicerLib.scene import SceneContext

        sampleDir = find_sample_dir(__file__)
        self.assertIsNotNone(sampleDir, "bundled sample (Testing/Data/totalseg_ct_sm) not found")
        return SceneContext.from_slicer(), sampleDir

    def _needsBackend(self):
        if not deps.install_plan().empty:
            self.skipTest("torch / backend dependencies are not installed (install them from the MedSeg panel)")

    def test_UndoRestores(self):
        scenarios = self._scenarios()
        ctx, sampleDir = self._context()
        result = scenarios.scenario_undo_restores(ctx, sampleDir)
        self.delayDisplay(f"Undo restores the segment: {result}")

    def test_CancelLeavesUntouched(self):
        scenarios = self._scenarios()
        ctx, sampleDir = self._context()
        result = scenarios.scenario_cancel_leaves_untouched(ctx, sampleDir)
        self.delayDisplay(f"Cancel leaves the segment untouched: {result}")

    def test_UniverSegPlumbing(self):
        self._needsBackend()
        scenarios = self._scenarios()
        ctx, sampleDir = self._context()
        result = scenarios.scenario_universeg_plumbing(ctx, sampleDir)
        self.delayDisplay(f"UniverSeg plumbing (stand-in network): {result}")

    def test_MedSAMBox(self):
        self._needsBackend()
        from medseg_backend import weights
        scenarios = self._scenarios()
        if not weights.status("lite-medsam")["installed"]:
            self.skipTest("LiteMedSAM weights are not installed (MedSeg panel > download lite-medsam)")
        ctx, sampleDir = self._context()
        result = scenarios.scenario_medsam_box(ctx, sampleDir, segmenter=MedSegSlicerLogic.shared().segmenter)
        self.delayDisplay(f"LiteMedSAM box: Dice {result['dice']:.3f} on {result['slices']} slices, "
                          f"{result['seconds']:.1f} s")

    def test_SubrangeRerunKeepsRest(self):
        self._needsBackend()
        from medseg_backend import weights
        scenarios = self._scenarios()
        if not weights.status("lite-medsam")["installed"]:
            self.skipTest("LiteMedSAM weights are not installed (MedSeg panel > download lite-medsam)")
        for through in ("effect", "batch"):
            ctx, sampleDir = self._context()
            result = scenarios.scenario_subrange_rerun_keeps_rest(ctx, sampleDir, through=through,
                                                                  segmenter=MedSegSlicerLogic.shared().segmenter)
            self.delayDisplay(f"Re-run on slices {result['slab']} ({through}): {result['voxels_kept_outside']} "
                              "voxels outside kept")

    def test_CorrectAndRepropagate(self):
        self._needsBackend()
        from medseg_backend import weights
        scenarios = self._scenarios()
        if not weights.status("lite-medsam")["installed"]:
            self.skipTest("LiteMedSAM weights are not installed (MedSeg panel > download lite-medsam)")
        ctx, sampleDir = self._context()
        result = scenarios.scenario_correct_and_repropagate(ctx, sampleDir,
                                                            segmenter=MedSegSlicerLogic.shared().segmenter)
        self.delayDisplay(f"Propagated from corrected slice {result['slice']} over {result['slab']}: Dice "
                          f"{result['dice_walk_before']:.3f} -> {result['dice_walk_after']:.3f}, "
                          f"{result['voxels_kept_outside']} voxels outside kept")

    def test_WorkerCrashLeavesUntouched(self):
        self._needsBackend()
        scenarios = self._scenarios()
        ctx, sampleDir = self._context()
        result = scenarios.scenario_worker_crash_leaves_untouched(ctx, sampleDir,
                                                                  segmenter=MedSegSlicerLogic.shared().segmenter)
        self.delayDisplay(f"Worker crash: {result['message']}")

    def test_ViewJourney(self):
        """Issue 26's one-organ journey through the real views: drag a box in the Red view, Enter."""
        self._needsBackend()
        from medseg_backend import weights
        scenarios = self._scenarios()
        if not weights.status("lite-medsam")["installed"]:
            self.skipTest("LiteMedSAM weights are not installed (MedSeg panel > download lite-medsam)")
        _ctx, sampleDir = self._context()
        result = scenarios.app_journey_one_organ(sampleDir)
        self.assertGreater(result["dice"], 0.8)
        self.delayDisplay(f"journey one-organ (application): {result['actions']} actions, Dice {result['dice']:.3f}, "
                          f"{result['seconds']:.1f} s")

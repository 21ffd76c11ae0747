"""Shared Qt plumbing of the two effects: Preview / Apply / Cancel buttons, the progress bar and the timer that polls
the model worker process. The effects only read their widgets and call the Qt-free layer (MedSegSlicerLib)."""
import logging
import os

import qt
import slicer

from SegmentEditorEffects import AbstractScriptedSegmentEditorEffect

from MedSegSlicerLib import segments
from MedSegSlicerLib.errors import MedSegError
from MedSegSlicerLib.jobs import poll_step

INTENSITY_CHOICES = ("volume window/level", "auto", "ct-abdomen", "ct-lung", "ct-brain", "ct-mediastinum", "mr",
                     "raw")


class MedSegEffectBase(AbstractScriptedSegmentEditorEffect):
    """Preview runs the model in the worker process and shows the result in a preview segmentation; Apply writes it
    through the editor's modify-segment path after saving an undo state; Cancel stops a run or drops the preview."""

    effectName = "MedSeg"
    iconFile = ""

    def __init__(self, scriptedEffect):
        scriptedEffect.name = self.effectName
        scriptedEffect.perSegment = True
        scriptedEffect.requireSegments = True
        AbstractScriptedSegmentEditorEffect.__init__(self, scriptedEffect)
        self.timer = qt.QTimer()
        self.timer.setInterval(100)
        self.timer.connect("timeout()", self.onPoll)
        self.pending = None        # dict(mask, volumeID, segmentationID, segmentID, messages) of the preview
        self.running = None        # dict(volumeID, segmentationID, segmentID) of the run in flight

    # ---- Slicer effect hooks ----------------------------------------------------------------------------------
    def icon(self):
        path = os.path.join(os.path.dirname(__file__), self.iconFile)
        return qt.QIcon(path) if os.path.exists(path) else qt.QIcon()

    def createCursor(self, widget):
        return slicer.util.mainWindow().cursor

    def interactionNodeModified(self, interactionNode):
        # Placing an ROI must not deactivate the effect.
        pass

    def cleanup(self):
        self.timer.stop()
        self.timer.disconnect("timeout()", self.onPoll)

    def deactivate(self):
        runner = self.logic.core.runner
        if runner.running:
            runner.cancel()        # the timer's next polls end the job (within a second)
        self.dropPreview()

    # ---- shared widgets ----------------------------------------------------------------------------------------
    @property
    def logic(self):
        import MedSegSlicer

        return MedSegSlicer.MedSegSlicerLogic.shared()

    def addIntensityCombo(self, tooltip):
        combo = qt.QComboBox()
        combo.editable = True
        for choice in INTENSITY_CHOICES:
            combo.addItem(choice)
        combo.setToolTip(tooltip + " Type window:LEVEL,WIDTH for a custom window.")
        return combo

    @staticmethod
    def intensityValue(combo):
        text = combo.currentText.strip()
        return None if text in ("", INTENSITY_CHOICES[0]) else text

    def setupRunButtons(self):
        self.progressBar = qt.QProgressBar()
        self.progressBar.setRange(0, 1000)
        self.progressBar.visible = False
        self.scriptedEffect.addOptionsWidget(self.progressBar)
        self.statusLabel = qt.QLabel("")
        self.statusLabel.wordWrap = True
        self.scriptedEffect.addOptionsWidget(self.statusLabel)

        self.previewButton = qt.QPushButton("Preview")
        self.previewButton.objectName = self.__class__.__name__ + "Preview"
        self.previewButton.setToolTip("Run the model and show the result without changing the segment.")
        self.cancelButton = qt.QPushButton("Cancel")
        self.cancelButton.objectName = self.__class__.__name__ + "Cancel"
        self.cancelButton.setToolTip("Stop the run, or drop the preview. The segment is left as it was.")
        self.applyButton = qt.QPushButton("Apply")
        self.applyButton.objectName = self.__class__.__name__ + "Apply"
        self.applyButton.setToolTip("Write the previewed result into the selected segment (undoable). Editable area, "
                                    "intensity masking and overwrite settings are respected.")
        self.addToSegmentCheckBox = qt.QCheckBox("Add to segment")
        self.addToSegmentCheckBox.setToolTip("Checked: add the result to the segment. Unchecked: replace it.")
        row = qt.QHBoxLayout()
        row.addWidget(self.previewButton)
        row.addWidget(self.cancelButton)
        row.addWidget(self.applyButton)
        self.scriptedEffect.addOptionsWidget(self.addToSegmentCheckBox)
        self.scriptedEffect.addOptionsWidget(row)
        self.previewButton.connect("clicked()", self.onPreview)
        self.cancelButton.connect("clicked()", self.onCancel)
        self.applyButton.connect("clicked()", self.onApply)
        self.updateButtons()

    def updateButtons(self):
        running = self.logic.core.runner.running
        self.previewButton.enabled = not running
        self.applyButton.enabled = (not running) and self.pending is not None
        self.cancelButton.enabled = running or self.pending is not None
        self.progressBar.visible = running

    def setStatus(self, text, error=False):
        self.statusLabel.text = text
        self.statusLabel.setStyleSheet("color: #c00000;" if error else "")

    # ---- inputs ------------------------------------------------------------------------------------------------
    def inputs(self):
        """(volume, segmentation, segment ID) of the editor; raises MedSegError with a fix when one is missing."""
        params = self.scriptedEffect.parameterSetNode()
        volume = params.GetSourceVolumeNode() if params else None
        segmentation = params.GetSegmentationNode() if params else None
        segment_id = params.GetSelectedSegmentID() if params else None
        from MedSegSlicerLib import geometry

        geometry.check_scalar_volume(volume)
        segments.check_segmentation(segmentation)
        if not segment_id:
            raise MedSegError("No segment selected: add or select the segment to fill in the segment list.")
        return volume, segmentation, segment_id

    def prepareRun(self, volume, segmentation, segment_id):
        """Subclasses: return a MedSegSlicerLib.core.PreparedRun (raise MedSegError on bad input)."""
        raise NotImplementedError

    def maskFromResult(self, result):
        raise NotImplementedError

    def modelName(self):
        raise NotImplementedError

    # ---- buttons -----------------------------------------------------------------------------------------------
    def onPreview(self):
        core = self.logic.core
        if core.runner.running:
            self.setStatus(f"'{core.runner.label}' is still running: wait for it or press Cancel.", error=True)
            return
        try:
            if not self.logic.ensureDependencies(ask=True):
                self.setStatus("Dependencies not installed: nothing was run.", error=True)
                return
            self.logic.ensureWeights(self.modelName(), ask=True)
            volume, segmentation, segment_id = self.inputs()
            prepared = self.prepareRun(volume, segmentation, segment_id)
            core.start(prepared)
        except MedSegError as e:
            self.setStatus(str(e), error=True)
            return
        except Exception as e:  # noqa: BLE001 - show, do not crash the editor
            logging.exception("MedSegSlicer: preparing the run failed")
            self.setStatus(f"Could not start: {e}", error=True)
            return
        self.running = dict(volumeID=volume.GetID(), segmentationID=segmentation.GetID(), segmentID=segment_id,
                            messages=list(prepared.messages))
        self.progressBar.value = 0
        self.setStatus("; ".join(prepared.messages + [f"{prepared.label}: running..."]))
        self.timer.start()
        self.updateButtons()

    def onPoll(self):
        # Never blocks: reads only what the worker has already sent (progress, result, error, or its death).
        runner = self.logic.core.runner
        fraction, message, outcome = poll_step(runner)
        self.progressBar.value = int(1000 * fraction)
        self.progressBar.setFormat(message or "%p%")
        if outcome is None:
            if not runner.running:
                self.timer.stop()
                self.updateButtons()
            return
        self.timer.stop()
        run, self.running = self.running, None
        if outcome.ok and run is not None:
            scene = slicer.mrmlScene
            volume = scene.GetNodeByID(run["volumeID"])
            segmentation = scene.GetNodeByID(run["segmentationID"])
            try:
                mask = self.maskFromResult(outcome.result)
                segment = segmentation.GetSegmentation().GetSegment(run["segmentID"])
                segments.show_preview(scene, segmentation, mask, volume,
                                      name=segment.GetName() if segment else "preview",
                                      color=segment.GetColor() if segment else None)
            except MedSegError as e:
                self.setStatus(str(e), error=True)
            else:
                messages = run["messages"] + list(getattr(outcome.result, "messages", []) or [])
                self.pending = dict(run, mask=mask)
                self.setStatus("; ".join(messages + [f"Preview ready ({int(mask.sum())} voxels, "
                                                     f"{outcome.seconds:.1f} s): Apply writes it into the segment."]))
        elif outcome.status == "cancelled":
            self.setStatus(outcome.message or "Cancelled: nothing was written.")
        else:
            self.setStatus(outcome.message, error=True)
        self.updateButtons()

    def onCancel(self):
        runner = self.logic.core.runner
        if runner.running:
            runner.cancel()
            self.setStatus("Cancelling...")
            return
        self.dropPreview()
        self.setStatus("Preview dropped: the segment is unchanged.")
        self.updateButtons()

    def dropPreview(self):
        if self.pending is not None:
            segmentation = slicer.mrmlScene.GetNodeByID(self.pending["segmentationID"])
            if segmentation is not None:
                segments.remove_preview(slicer.mrmlScene, segmentation)
        self.pending = None

    def onApply(self):
        if self.pending is None:
            self.setStatus("Nothing to apply: press Preview first.", error=True)
            return
        scene = slicer.mrmlScene
        pending = self.pending
        try:
            volume, segmentation, segment_id = self.inputs()
            if (volume.GetID(), segmentation.GetID()) != (pending["volumeID"], pending["segmentationID"]):
                raise MedSegError("The source volume or segmentation changed since the preview: press Preview again.")
            if segment_id != pending["segmentID"]:
                raise MedSegError("Another segment is selected than the one previewed: select it again or press "
                                  "Preview for this segment.")
            allow_locked = False
            if segments.is_segment_locked(segmentation, segment_id):
                allow_locked = slicer.util.confirmYesNoDisplay(
                    "The selected segment is marked Completed (locked). Overwrite it anyway?")
                if not allow_locked:
                    return
            if not segments.is_segment_visible(segmentation, segment_id):
                if self.scriptedEffect.confirmCurrentSegmentVisible() == 0:  # NotConfirmed
                    return
            segments.check_segment_writable(segmentation, segment_id, allow_hidden=True, allow_locked=allow_locked)
            modifier = segments.modifier_labelmap(pending["mask"], volume, segmentation,
                                                  self.scriptedEffect.defaultModifierLabelmap())
        except MedSegError as e:
            self.setStatus(str(e), error=True)
            return
        self.scriptedEffect.saveStateForUndo()
        mode = (slicer.qSlicerSegmentEditorAbstractEffect.ModificationModeAdd if self.addToSegmentCheckBox.checked
                else slicer.qSlicerSegmentEditorAbstractEffect.ModificationModeSet)
        self.scriptedEffect.modifySelectedSegmentByLabelmap(modifier, mode)
        segments.remove_preview(scene, segmentation)
        self.pending = None
        self.setStatus("Applied (Undo in the Segment Editor restores the previous segment).")
        self.updateButtons()

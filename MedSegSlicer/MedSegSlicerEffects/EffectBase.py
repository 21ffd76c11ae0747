"""Shared Qt plumbing of the two effects: Preview / Apply / Cancel buttons, the progress bar and the timer that polls
the model worker process. The effects only read their widgets and call the Qt-free layer (MedSegSlicerLib)."""
import logging
import os

import qt
import slicer

from SegmentEditorEffects import AbstractScriptedSegmentEditorEffect

from MedSegSlicerLib import editing, preview, segments
from MedSegSlicerLib.errors import MedSegError

VIEWS = ("Red", "Yellow", "Green")   # slice views whose orientation sets the slicing axis
INTENSITY_CHOICES = ("volume window/level", "auto", "ct-abdomen", "ct-lung", "ct-brain", "ct-mediastinum", "mr",
                     "raw")


#: Runs estimated longer than this on a CPU are confirmed first (with the estimate).
LONG_RUN_SECONDS = 60


class _MainWindowShortcut:
    """A QShortcut on Slicer's main window, disabled until its ShortcutSet enables it; delete() removes it. Window
    scope (Qt's default context, ``Qt.WindowShortcut``): the keys fire only while the main window is the active
    window, never from a dialog, the Python console or another application window."""

    def __init__(self, keys, callback):
        self.callback = callback
        self.shortcut = qt.QShortcut(qt.QKeySequence(keys), slicer.util.mainWindow())
        self.shortcut.setContext(qt.Qt.WindowShortcut)
        self.shortcut.setEnabled(False)
        self.shortcut.connect("activated()", callback)

    def setEnabled(self, on):
        self.shortcut.setEnabled(bool(on))

    def delete(self):
        self.shortcut.disconnect("activated()", self.callback)
        self.shortcut.setParent(None)
        self.shortcut.deleteLater()


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
        self.running = None        # dict(volumeID, segmentationID, segmentID) of the run in flight

    # ---- Slicer effect hooks ----------------------------------------------------------------------------------
    def clone(self):
        """A new instance of the concrete effect: its own source file (the subclass's module, not this one)."""
        import sys

        import qSlicerSegmentationsEditorEffectsPythonQt as effects

        cloned = effects.qSlicerSegmentEditorScriptedEffect(None)
        cloned.setPythonSource(sys.modules[type(self).__module__].__file__.replace("\\", "/"))
        return cloned

    def icon(self):
        path = os.path.join(os.path.dirname(__file__), self.iconFile)
        return qt.QIcon(path) if os.path.exists(path) else qt.QIcon()

    def createCursor(self, widget):
        return slicer.util.mainWindow().cursor


    def cleanup(self):
        # Slicer >= 5.10 only (SLICER_API.md G4); on 5.6 / 5.8 the options panel's destroyed() calls it. Safe twice.
        self.shortcutSet().delete()
        if getattr(self, "cleanedUp", False):
            return
        self.cleanedUp = True
        self.timer.stop()
        self.timer.disconnect("timeout()", self.onPoll)
        auto = getattr(self, "autoTimer", None)
        if auto is not None:
            auto.stop()
            auto.disconnect("timeout()", self.onAutoUpdate)
        self.placingRoi = False
        self.stopRoiPlacement()
        if hasattr(self, "roiObservations"):
            self.watchRoi(None)              # no observer left on the scene's ROI nodes

    def activate(self):
        self.shortcutSet().enable()        # only the shown effect's keys exist for Qt: never ambiguous

    def deactivate(self):
        # Leaving the effect (or the Segment Editor) keeps a running job and the preview: the timer goes on
        # polling (it stops itself when nothing runs), the preview lives in the scene, and both are there when the
        # user comes back.
        self.shortcutSet().disable()

    # ---- shared widgets ----------------------------------------------------------------------------------------
    @property
    def logic(self):
        from MedSegSlicerLib import service

        return service.logic()

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
        for button, action, callback in ((self.previewButton, "preview", self.onPreview),
                                         (self.applyButton, "apply", self.onApply),
                                         (self.cancelButton, "cancel", self.onCancel)):
            keys = self.addShortcut(action, callback)
            button.setToolTip(button.toolTip + f" Shortcut: {keys}.")
        # Slicer 5.6 / 5.8 never call cleanup(): the shortcuts go with the options panel
        self.scriptedEffect.optionsFrame().connect("destroyed()", self.cleanup)
        self.updateButtons()

    def shortcutSet(self):
        """This effect object's one set of shortcuts (MedSegSlicerLib.shortcuts.ShortcutSet)."""
        if getattr(self, "shortcuts", None) is None:
            from MedSegSlicerLib.shortcuts import ShortcutSet

            self.shortcuts = ShortcutSet(_MainWindowShortcut)
        return self.shortcuts

    def addShortcut(self, action, callback):
        """The keyboard shortcut of ``action`` (MedSegSlicerLib.shortcuts.KEYS); returns its keys."""
        return self.shortcutSet().add(action, lambda: self.onShortcut(callback))

    def onShortcut(self, callback):
        # one effect object per effect type: act only for the effect the editor shows
        if self.scriptedEffect.active():
            callback()


    # ---- the box (ROI): one per segment, drawn on one slice then given its depth, auto-update when moved --------
    AUTO_UPDATE_DELAY_MS = 800

    def state(self):
        from MedSegSlicerLib.effect_state import EffectState

        return EffectState(self.scriptedEffect.parameterSetNode(), self.effectName)

    def setupRoiRow(self, roiTooltip, fitText, fitTooltip):
        """ROI selector + Draw ROI + Fit button (subclasses give fitRoiBox); also the auto-update timer."""
        self.roiObservations = []
        self.placingRoi = False
        self.autoTimer = qt.QTimer()
        self.autoTimer.setSingleShot(True)
        self.autoTimer.setInterval(self.AUTO_UPDATE_DELAY_MS)
        self.autoTimer.connect("timeout()", self.onAutoUpdate)
        self.roiSelector = slicer.qMRMLNodeComboBox()
        self.roiSelector.nodeTypes = ["vtkMRMLMarkupsROINode"]
        self.roiSelector.noneEnabled = True
        self.roiSelector.addEnabled = False
        self.roiSelector.removeEnabled = False
        self.roiSelector.setMRMLScene(slicer.mrmlScene)
        self.roiSelector.setToolTip(roiTooltip)
        self.drawRoiButton = qt.QPushButton("Draw ROI")
        self.drawRoiButton.setToolTip("Draw the box on one slice: click one corner, then the opposite corner (two "
                                      "clicks, not a drag); its depth is set from its size. Re-uses this segment's "
                                      "box.")
        self.fitRoiButton = qt.QPushButton(fitText)
        self.fitRoiButton.setToolTip(fitTooltip)
        row = qt.QHBoxLayout()
        row.addWidget(self.roiSelector)
        row.addWidget(self.drawRoiButton)
        row.addWidget(self.fitRoiButton)
        self.scriptedEffect.addLabeledOptionsWidget("ROI:", row)
        self.drawRoiButton.connect("clicked()", self.onDrawRoi)
        self.fitRoiButton.connect("clicked()", self.onFitRoi)
        self.roiSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.onRoiSelected)
        keys = self.addShortcut("draw_roi", self.onDrawRoi)
        self.drawRoiButton.setToolTip(self.drawRoiButton.toolTip + f" Shortcut: {keys}.")

    def autoUpdateEnabled(self):
        box = getattr(self, "autoUpdateCheckBox", None)
        return bool(box is not None and box.checked)

    def updateRoiInfo(self):
        """Subclasses: describe the box in the panel."""

    def fitRoiBox(self, volume, segmentation, segment_id):
        """Subclasses: the voxel box that 'Fit' gives."""
        raise NotImplementedError

    def segmentRoi(self):
        params = self.scriptedEffect.parameterSetNode()
        sid = params.GetSelectedSegmentID() if params else None
        return self.state().reference(f"ROI.{sid}") if sid else None

    def updateRoiFromMRML(self):
        roi = self.segmentRoi()
        was = self.roiSelector.blockSignals(True)
        self.roiSelector.setCurrentNode(roi)
        self.roiSelector.blockSignals(was)
        self.watchRoi(roi)

    def onRoiSelected(self, roi):
        params = self.scriptedEffect.parameterSetNode()
        sid = params.GetSelectedSegmentID() if params else None
        if sid:
            self.state().set_reference(f"ROI.{sid}", roi)
        self.watchRoi(roi)
        self.updateRoiInfo()

    def watchRoi(self, roi):
        import vtk

        for node, tag in self.roiObservations:
            node.RemoveObserver(tag)
        self.roiObservations = []
        if roi is not None:
            for event in (slicer.vtkMRMLMarkupsNode.PointModifiedEvent, vtk.vtkCommand.ModifiedEvent):
                self.roiObservations.append((roi, roi.AddObserver(event, self.onRoiModified)))

    def onRoiModified(self, caller=None, event=None):
        self.updateRoiInfo()
        if not self.placingRoi:
            self.autoTimer.start()             # debounced: previews (or encodes ahead) once the box stops moving

    def prefetchRun(self, prepared):
        """Subclasses: the request that encodes ahead for a prepared run (None: nothing to prefetch)."""
        return None

    #: True for effects whose prefetchRun encodes ahead (MedSAM): the others never prepare a run for it.
    encodesAhead = False

    def startPrefetch(self):
        """Encode the box's slices in the worker while the user still adjusts the box (centre slice first)."""
        if not self.encodesAhead or self.logic.busy or not self.scriptedEffect.active():
            return
        try:
            from MedSegSlicerLib import deps

            if not deps.install_plan().empty:
                return                          # never ask about installs for a background job
            volume, segmentation, segment_id = self.inputs()
            request = self.prefetchRun(self.prepareRun(volume, segmentation, segment_id))
            if request is None:
                return
            self.logic.start(request)
        except Exception:  # noqa: BLE001 - a background convenience: Preview reports real problems
            logging.debug("MedSegSlicer: no encoding ahead", exc_info=True)
            return
        self.prefetching = True
        self.timer.start()

    def onAutoUpdate(self):
        if self.roiSelector.currentNode() is None or self.logic.busy:
            return
        if self.autoUpdateEnabled():
            self.autoTriggered = True    # a moved box: mostly cached, never a confirmation dialog
            try:
                self.onPreview()
            finally:
                self.autoTriggered = False
        else:
            self.startPrefetch()

    def newRoi(self, volume, segmentation, segment_id):
        name = segmentation.GetSegmentation().GetSegment(segment_id).GetName()
        roi = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsROINode", f"{name} box")
        roi.CreateDefaultDisplayNodes()
        roi.SetAndObserveTransformNodeID(volume.GetTransformNodeID())
        return roi

    def onDrawRoi(self):
        try:
            volume, segmentation, segment_id = self.inputs()
        except MedSegError as e:
            self.setStatus(str(e), error=True)
            return
        roi = self.segmentRoi()
        if roi is None or not slicer.mrmlScene.IsNodePresent(roi):
            roi = self.newRoi(volume, segmentation, segment_id)
        else:
            roi.RemoveAllControlPoints()
        if roi.GetDisplayNode() is not None:
            roi.GetDisplayNode().SetVisibility(True)
        self.roiSelector.setCurrentNode(roi)           # -> onRoiSelected: this segment's box
        from MedSegSlicerLib import geometry

        self.stopRoiPlacement()
        # keeps the first corner the widget defines; says when the box is complete (also with place persistence)
        self.roiPlacement = geometry.RoiPlacement(roi, on_complete=lambda: qt.QTimer.singleShot(0, self.onRoiComplete))
        self.placingRoi = True
        selection = slicer.app.applicationLogic().GetSelectionNode()
        selection.SetReferenceActivePlaceNodeClassName("vtkMRMLMarkupsROINode")
        selection.SetActivePlaceNodeID(roi.GetID())
        interaction = slicer.app.applicationLogic().GetInteractionNode()
        interaction.SetCurrentInteractionMode(interaction.Place)
        self.setStatus("Click one corner of a box around the structure on one slice, then the opposite corner: its "
                       "depth is set automatically.")

    def interactionNodeModified(self, interactionNode):
        # Placing an ROI must not deactivate the effect. The box is given its depth when its second corner is
        # defined (onRoiComplete); leaving Place mode before that (Escape, another tool) ends the placement.
        if getattr(self, "placingRoi", False) and \
                interactionNode.GetCurrentInteractionMode() != interactionNode.Place:
            placement = getattr(self, "roiPlacement", None)
            if placement is not None and placement.complete:
                self.onRoiComplete()
            else:
                self.placingRoi = False
                self.stopRoiPlacement()

    def onRoiComplete(self):
        """The second corner is placed: give the box its depth, leave Place mode (the Markups toolbar's place
        persistence would keep it, and placingRoi with it), encode ahead."""
        if not getattr(self, "placingRoi", False):
            return
        self.placingRoi = False
        interaction = slicer.app.applicationLogic().GetInteractionNode()
        if interaction.GetCurrentInteractionMode() == interaction.Place:
            interaction.SetCurrentInteractionMode(interaction.ViewTransform)
        self.onRoiPlaced()
        if not self.autoUpdateEnabled():
            self.startPrefetch()

    def stopRoiPlacement(self):
        placement = getattr(self, "roiPlacement", None)
        if placement is not None:
            placement.stop()
        self.roiPlacement = None

    def onRoiPlaced(self):
        from MedSegSlicerLib import geometry

        roi = self.roiSelector.currentNode()
        placement = getattr(self, "roiPlacement", None)
        self.stopRoiPlacement()
        try:
            volume, _segmentation, _sid = self.inputs()
            if roi is None or roi.GetNumberOfControlPoints() == 0:
                return
            # drawn on one slice: the product gives it the structure's depth (not Slicer's padding)
            placed = geometry.placed_box(roi, volume, placement.first if placement is not None else None)
            if placed is not None:
                geometry.voxel_box_to_roi(roi, volume, placed[1])
        except MedSegError as e:
            self.setStatus(str(e), error=True)
            return
        self.updateRoiInfo()
        if self.autoUpdateEnabled():
            self.onPreview()

    def onFitRoi(self):
        from MedSegSlicerLib import geometry

        try:
            volume, segmentation, segment_id = self.inputs()
            box = self.fitRoiBox(volume, segmentation, segment_id)
            roi = self.roiSelector.currentNode()
            if roi is None:
                roi = self.newRoi(volume, segmentation, segment_id)
                self.roiSelector.setCurrentNode(roi)
            geometry.voxel_box_to_roi(roi, volume, box)
            if roi.GetDisplayNode() is not None:
                roi.GetDisplayNode().SetVisibility(True)
        except MedSegError as e:
            self.setStatus(str(e), error=True)

    def afterPreview(self, result, mask, volume, segmentation, segment_id):
        """Subclasses: show more about a fresh preview (e.g. the slices to check)."""

    def afterApply(self):
        """Hide the box after Apply (Draw ROI shows it again)."""
        roi = self.roiSelector.currentNode() if hasattr(self, "roiSelector") else None
        if roi is not None and roi.GetDisplayNode() is not None:
            roi.GetDisplayNode().SetVisibility(False)

    # ---- the viewer's terms ----
    def addViewCombo(self):
        """'Slices as in view': Red / Yellow / Green; the slicing axis follows that view's orientation."""
        self.viewCombo = qt.QComboBox()
        for view in VIEWS:
            self.viewCombo.addItem(view)
        self.viewCombo.setToolTip("Segment slice by slice as this view shows the volume (Red: usually axial, "
                                  "Yellow: sagittal, Green: coronal), whatever the acquisition direction.")
        self.scriptedEffect.addLabeledOptionsWidget("Slices as in view:", self.viewCombo)

    def axis(self, volume):
        """The voxel axis of the view chosen in the panel."""
        return self.axisForView(volume, self.viewCombo.currentText)

    # ------------------------------------------------------------------------------------
    def sliceNodeForView(self, view):
        return slicer.mrmlScene.GetNodeByID(f"vtkMRMLSliceNode{view}")

    def axisForView(self, volume, view):
        """The voxel axis that shows the volume as the Red / Yellow / Green view does (Qt-free rule)."""
        from MedSegSlicerLib import geometry

        node = self.sliceNodeForView(view)
        return geometry.axis_for_slice_node(volume, node) if node is not None else "axial"

    def updateButtons(self):
        running = self.logic.busy
        self.previewButton.enabled = not running or getattr(self, "prefetching", False)  # preview pre-empts it
        pending = self.pending()
        self.applyButton.enabled = (not running) and pending is not None
        self.cancelButton.enabled = running or pending is not None
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
        """Subclasses: return a MedSegSlicerLib.segmenter.PreparedRun (raise MedSegError on bad input)."""
        raise NotImplementedError

    def maskFromResult(self, result):
        raise NotImplementedError

    def modelName(self):
        raise NotImplementedError

    # ---- buttons -----------------------------------------------------------------------------------------------
    def onPreview(self):
        if self.logic.busy and getattr(self, "prefetching", False):
            # the box's slices are being encoded ahead: stop that (what is encoded stays cached), then preview
            self.logic.cancel()
            self.previewQueued = True
            self.setStatus("Starting the preview...")
            return
        if self.logic.busy:
            self.setStatus(f"'{self.logic.running_label}' is still running: wait for it or press Cancel.", error=True)
            return
        try:
            if not self.logic.ensureDependencies(ask=True):
                self.setStatus("Dependencies not installed: nothing was run.", error=True)
                return
            self.logic.ensureWeights(self.modelName(), ask=True)
            volume, segmentation, segment_id = self.inputs()
            prepared = self.prepareRun(volume, segmentation, segment_id)
            seconds = self.logic.segmenter.estimate_seconds(prepared, self.logic.onCpu())
            if seconds is not None and seconds > LONG_RUN_SECONDS and not getattr(self, "autoTriggered", False):
                if not slicer.util.confirmOkCancelDisplay(
                        f"{prepared.label} will take about {self.duration(seconds)} on this computer's CPU "
                        "(a GPU would take seconds). Cancel stops it at any time and changes nothing. Run it?",
                        windowTitle="MedSegSlicer"):
                    self.setStatus("Not run: make the box or the slice range smaller for a quicker preview.")
                    return
            if seconds is not None:
                prepared.messages.append(f"about {self.duration(seconds)} on the CPU")
            self.logic.start(prepared)
        except MedSegError as e:
            self.setStatus(str(e), error=True)
            return
        except Exception as e:  # noqa: BLE001 - show, do not crash the editor
            logging.exception("MedSegSlicer: preparing the run failed")
            self.setStatus(f"Could not start: {e}", error=True)
            return
        self.running = dict(volumeID=volume.GetID(), segmentationID=segmentation.GetID(), segmentID=segment_id,
                            messages=list(prepared.messages), slab=prepared.info.get("slab"))
        self.progressBar.value = 0
        self.setStatus("; ".join(prepared.messages + [f"{prepared.label}: running..."]))
        self.timer.start()
        self.updateButtons()

    def showPartial(self, partials, final=False):
        """Progressive preview: the slices finished so far, shown at most every half second (the complete
        result replaces it; Apply stays off until then)."""
        import time

        import numpy as np
        from medseg_backend import slicing

        run = self.running
        volume = slicer.mrmlScene.GetNodeByID(run["volumeID"])
        segmentation = slicer.mrmlScene.GetNodeByID(run["segmentationID"])
        if volume is None or segmentation is None:
            return
        if run.get("partial") is None:
            from MedSegSlicerLib import geometry

            run["partial"] = np.zeros(geometry.volume_shape(volume), np.uint8)
            run["shownAt"] = 0.0
        for obj, axis, k, mask in partials:
            if obj == 1:
                slicing.take_slice(run["partial"], axis, k)[...] = mask
        if final or time.monotonic() - run["shownAt"] < 0.5:
            return
        run["shownAt"] = time.monotonic()
        try:
            preview.show(slicer.mrmlScene, self.scriptedEffect.parameterSetNode(), segmentation, run["segmentID"],
                         run["partial"], volume, slab=run.get("slab"), messages=["partial"], owner=self.effectName)
        except MedSegError:
            pass      # the complete result reports any problem

    @staticmethod
    def duration(seconds):
        return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"

    def onPoll(self):
        # Never blocks: reads only what the worker has already sent (progress, result, error, or its death).
        partials = self.logic.partialSlices()
        fraction, message, outcome = self.logic.poll()
        self.progressBar.value = int(1000 * fraction)
        self.progressBar.setFormat(message or "%p%")
        if partials and self.running is not None:
            self.showPartial(partials, final=outcome is not None)
        if outcome is None:
            if not self.logic.busy:
                self.timer.stop()
                self.updateButtons()
            return
        self.timer.stop()
        if not outcome.ok and self.running is not None and self.running.get("partial") is not None:
            # a cancelled or failed run leaves no partial result behind
            preview.drop(slicer.mrmlScene, self.scriptedEffect.parameterSetNode(), owner=self.effectName)
        if getattr(self, "prefetching", False):
            self.prefetching = False
            if outcome.ok:
                self.setStatus(f"{outcome.result.encoded} slice(s) encoded ahead: Preview will be quick.")
            if getattr(self, "previewQueued", False):
                self.previewQueued = False
                self.onPreview()
            self.updateButtons()
            return
        run, self.running = self.running, None
        if outcome.ok and run is not None:
            scene = slicer.mrmlScene
            volume = scene.GetNodeByID(run["volumeID"])
            segmentation = scene.GetNodeByID(run["segmentationID"])
            try:
                mask = self.maskFromResult(outcome.result)
                messages = run["messages"] + list(getattr(outcome.result, "messages", []) or [])
                preview.show(scene, self.scriptedEffect.parameterSetNode(), segmentation, run["segmentID"], mask,
                             volume, slab=run.get("slab"), messages=messages, owner=self.effectName)
            except MedSegError as e:
                self.setStatus(str(e), error=True)
            else:
                from MedSegSlicerLib import geometry

                ml = geometry.mask_volume_ml(mask, volume)
                self.setStatus("; ".join(messages + [f"Preview ready ({ml:.1f} mL, {outcome.seconds:.1f} s): Apply "
                                                     "writes it into the segment."]))
                try:
                    self.afterPreview(outcome.result, mask, volume, segmentation, run["segmentID"])
                except Exception:  # noqa: BLE001 - the preview is shown; the extras must not stop the poll loop
                    logging.exception("MedSegSlicer: showing the slices to check failed")
        elif outcome.status == "cancelled":
            self.setStatus(outcome.message or "Cancelled: nothing was written.")
        else:
            self.setStatus(outcome.message, error=True)
        self.updateButtons()

    def onCancel(self):
        if self.logic.busy:
            self.logic.cancel()
            self.setStatus("Cancelling...")
            return
        self.dropPreview()
        self.setStatus("Preview dropped: the segment is unchanged.")
        self.updateButtons()

    def pending(self):
        """The preview waiting for Apply (an MRML node referenced from the effect's parameter node), or None."""
        return preview.current(slicer.mrmlScene, self.scriptedEffect.parameterSetNode(), owner=self.effectName)

    def dropPreview(self):
        preview.drop(slicer.mrmlScene, self.scriptedEffect.parameterSetNode(), owner=self.effectName)

    def onApply(self):
        pending = self.pending()
        if pending is None:
            self.setStatus("Nothing to apply: press Preview first.", error=True)
            return
        try:
            volume, segmentation, segment_id = self.inputs()
            if (volume.GetID(), segmentation.GetID()) != (pending.volume_id, pending.segmentation_id):
                raise MedSegError("The source volume or segmentation changed since the preview: press Preview again.")
            if segment_id != pending.segment_id:
                raise MedSegError("Another segment is selected than the one previewed: select it again or press "
                                  "Preview for this segment.")
            if not segments.is_segment_visible(segmentation, segment_id):
                if self.scriptedEffect.confirmCurrentSegmentVisible() == 0:  # NotConfirmed
                    return
            # the shipped Apply: checks, undo state, the editor's modify path limited to the run's slab
            report = editing.apply_result(editing.ScriptedEffectTarget(self.scriptedEffect), pending.mask(volume),
                                          volume, mode="add" if self.addToSegmentCheckBox.checked else "set",
                                          slab=pending.slab, allow_hidden=True)
        except MedSegError as e:
            self.setStatus(str(e), error=True)
            return
        self.dropPreview()
        self.afterApply()
        from MedSegSlicerLib import geometry

        per_voxel = geometry.voxel_volume_ml(volume)
        self.setStatus(f"Applied: the segment is {report.voxels_after * per_voxel:.1f} mL (was "
                       f"{report.voxels_before * per_voxel:.1f} mL); Undo in the Segment Editor restores it.")
        self.updateButtons()

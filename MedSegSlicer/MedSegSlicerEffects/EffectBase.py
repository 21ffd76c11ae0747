"""Shared Qt plumbing of the two effects: the Preview / Apply / Cancel buttons, the ROI row, the progress bar and the
timer. Every decision lives in the Qt-free editing session (``MedSegSlicerLib.session.EditingSession``): the effect
forwards widget events to it and draws what it says (``session.drawn()``)."""
import os
import time

import qt
import slicer

from SegmentEditorEffects import AbstractScriptedSegmentEditorEffect

from MedSegSlicerLib import editing

VIEWS = ("Red", "Yellow", "Green")   # slice views whose orientation sets the slicing axis
INTENSITY_CHOICES = ("volume window/level", "auto", "ct-abdomen", "ct-lung", "ct-brain", "ct-mediastinum", "mr",
                     "raw")


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
        self.session = self.makeSession()

    # ---- the editing session -----------------------------------------------------------------------------------
    def makeSession(self):
        from MedSegSlicerLib import deps
        from MedSegSlicerLib.session import EditingSession

        def ensure(model):
            if not self.logic.ensureDependencies(ask=True):
                return False
            self.logic.ensureWeights(model, ask=True)
            return True

        return EditingSession(
            self.effectName, scene=lambda: slicer.mrmlScene, editor_node=self.scriptedEffect.parameterSetNode,
            runner=lambda: self.logic.segmenter.runner, prepare=self.prepareRun,
            encode=self.prefetchRun if self.encodesAhead else None,
            encode_around=self.encodeAround if self.encodesAhead else None,
            mask_from_result=self.maskFromResult, model_name=self.modelName, ensure=ensure,
            installed=lambda: deps.install_plan().empty,
            confirm=lambda question: slicer.util.confirmOkCancelDisplay(question, windowTitle="MedSegSlicer"),
            on_cpu=lambda: self.logic.onCpu(), app_logic=slicer.app.applicationLogic,
            defer=lambda fn: qt.QTimer.singleShot(0, fn), wake=self.onSessionWake,
            apply_target=lambda: editing.ScriptedEffectTarget(self.scriptedEffect),
            confirm_visible=lambda: self.scriptedEffect.confirmCurrentSegmentVisible() != 0,
            review_segment=self.reviewSegment, **self.sessionOptions())

    def sessionOptions(self):
        """The effect's own session options (:class:`MedSegSlicerLib.session.EditingSession`: ``strokes``,
        ``examples``, ``boxes``)."""
        return {}

    def onSessionWake(self):
        """The box moved: describe it, and tick until the session has started what is due."""
        self.updateRoiInfo()
        self.timer.start()

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
        self.session.close()                # ends a placement, no observer left on the scene's ROI nodes

    def activate(self):
        self.shortcutSet().enable()        # only the shown effect's keys exist for Qt: never ambiguous
        # first opening: offer the install now, after the panel is shown (not after the first box)
        qt.QTimer.singleShot(0, lambda: (self.session.activated(), self.session.view_at(self.sliceNodeForView("Red")),
                                         self.draw()))

    def deactivate(self):
        # Leaving the effect (or the Segment Editor) keeps a running job and the preview: the timer goes on
        # polling (it stops itself when nothing runs), the preview lives in the scene, and both are there when the
        # user comes back.
        self.shortcutSet().disable()
        self.session.drag = None           # Escape (the Segment Editor's "leave the effect" key) ends a drag
        if getattr(self, "dragView", None) is not None:    # the effect removes its actors (addActor2D's contract)
            self.scriptedEffect.removeActor2D(self.dragView, self.dragActor)
            self.dragView = None
        self.session.stop_encoding()       # encoding before the box stops with the effect (its slices stay cached)

    # ---- the views: events forwarded to the session --------------------------------------------------------------
    #: True for effects whose box is dragged in the slice views (MedSAM box).
    drawsInViews = False

    def processInteractionEvents(self, callerInteractor, eventId, viewWidget):
        """Slicer calls this for each interactor event of a view while the effect is active; True stops Slicer's
        own handling of the event (SLICER_API.md row V2). Slice views only; the session decides."""
        import vtk

        from MedSegSlicerLib.session_views import ViewEvent

        if not self.drawsInViews or viewWidget.className() != "qMRMLSliceWidget":
            return False
        if eventId == vtk.vtkCommand.MouseMoveEvent and self.session.drag is None:
            self.session.view_at(viewWidget.sliceLogic().GetSliceNode())   # encode around the slice in view
        kind = {vtk.vtkCommand.LeftButtonPressEvent: "press", vtk.vtkCommand.MouseMoveEvent: "move",
                vtk.vtkCommand.LeftButtonReleaseEvent: "release", vtk.vtkCommand.KeyPressEvent: "key"}.get(eventId)
        if kind is None:
            return False
        modifiers = tuple(name for name, on in (("shift", callerInteractor.GetShiftKey()),
                                                ("ctrl", callerInteractor.GetControlKey()),
                                                ("alt", callerInteractor.GetAltKey())) if on)
        event = ViewEvent(viewWidget.sliceLogic().GetSliceNode().GetLayoutName(), kind,
                          tuple(callerInteractor.GetEventPosition()), "left", modifiers,
                          (callerInteractor.GetKeySym() or "") if kind == "key" else "")
        used = self.session.view_event(event, time.monotonic())
        if used:
            self.drawDrag(viewWidget)
        if used and kind in ("release", "key"):
            self.updateGUIFromMRML()           # the selected segment, its box and the buttons may have changed
            self.draw()
        return used

    def drawDrag(self, viewWidget):
        """Draw what is being dragged (``session.drag_shape()``): the box's rectangle or the brush's path, as a 2-D
        line in the view's XY (SLICER_API.md row V3: ``addActor2D``, as Slicer's Draw effect draws its line)."""
        import vtk

        shape = self.session.drag_shape()
        actor = getattr(self, "dragActor", None)
        if actor is None:
            self.dragPoints = vtk.vtkPoints()
            self.dragLines = vtk.vtkCellArray()
            poly = vtk.vtkPolyData()
            poly.SetPoints(self.dragPoints)
            poly.SetLines(self.dragLines)
            mapper = vtk.vtkPolyDataMapper2D()
            mapper.SetInputData(poly)
            actor = self.dragActor = vtk.vtkActor2D()
            actor.SetMapper(mapper)
            actor.GetProperty().SetLineWidth(2)
            self.dragPoly, self.dragView = poly, None
        if self.dragView is not viewWidget:
            if self.dragView is not None:
                self.scriptedEffect.removeActor2D(self.dragView, actor)
            self.scriptedEffect.addActor2D(viewWidget, actor)
            self.dragView = viewWidget
        self.dragPoints.Reset()
        self.dragLines.Reset()
        if shape is not None:
            _view, mode, points = shape
            if mode == "box":
                (x0, y0), (x1, y1) = points
                points = [(x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0)]
            actor.GetProperty().SetColor(*{"box": (1, 1, 0), "paint": (0, 1, 0), "erase": (1, 0.3, 0.3)}[mode])
            for x, y in points:
                self.dragPoints.InsertNextPoint(x, y, 0)
            self.dragLines.InsertNextCell(len(points))
            for i in range(len(points)):
                self.dragLines.InsertCellPoint(i)
        self.dragPoints.Modified()
        self.dragPoly.Modified()
        viewWidget.sliceView().scheduleRender()

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

    # ---- the box (ROI): one per segment, kept by the session ---------------------------------------------------
    def state(self):
        return self.session.state()

    def setupRoiRow(self, roiTooltip, fitText, fitTooltip):
        """ROI selector + Draw ROI + Fit button (subclasses give fitRoiBox)."""
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

    def updateRoiInfo(self):
        """Subclasses: describe the box in the panel."""

    def fitRoiBox(self, volume, segmentation, segment_id):
        """Subclasses: the voxel box that 'Fit' gives."""
        raise NotImplementedError

    def updateRoiFromMRML(self):
        roi = self.session.roi()
        was = self.roiSelector.blockSignals(True)
        self.roiSelector.setCurrentNode(roi)
        self.roiSelector.blockSignals(was)
        self.session.watch_roi(roi)

    def onRoiSelected(self, roi):
        self.session.set_roi(roi)
        self.updateRoiInfo()
        self.draw()

    def onDrawRoi(self):
        self.session.draw_roi()
        self.updateRoiFromMRML()
        self.draw()

    def interactionNodeModified(self, interactionNode):
        # Placing an ROI must not deactivate the effect (the session ends the placement when Place mode is left).
        self.session.interaction_mode_changed(interactionNode)
        self.draw()

    def onFitRoi(self):
        self.session.fit_roi(self.fitRoiBox)
        self.updateRoiFromMRML()
        self.updateRoiInfo()
        self.draw()

    def prefetchRun(self, prepared):
        """Subclasses: the request that encodes ahead for a prepared run (None: nothing to prefetch)."""
        return None

    def encodeAround(self, volume, axis, k):
        """Subclasses that encode ahead: start encoding before the box around slice ``k`` (the handle), or None."""
        return None

    #: True for effects whose prefetchRun encodes ahead (MedSAM): the session never prepares a run for the others.
    encodesAhead = False

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

    def sliceNodeForView(self, view):
        return slicer.mrmlScene.GetNodeByID(f"vtkMRMLSliceNode{view}")

    def axisForView(self, volume, view):
        """The voxel axis that shows the volume as the Red / Yellow / Green view does (Qt-free rule)."""
        from MedSegSlicerLib import geometry

        node = self.sliceNodeForView(view)
        return geometry.axis_for_slice_node(volume, node) if node is not None else "axial"

    # ---- drawing what the session says -------------------------------------------------------------------------
    def draw(self, drawn=None):
        drawn = drawn or self.session.drawn()
        self.statusLabel.text = drawn.status
        self.statusLabel.setStyleSheet("color: #c00000;" if drawn.error else "")
        self.previewButton.enabled = drawn.preview_enabled
        self.applyButton.enabled = drawn.apply_enabled
        self.cancelButton.enabled = drawn.cancel_enabled
        self.progressBar.visible = drawn.progress_visible
        self.progressBar.value = int(1000 * drawn.progress)
        self.progressBar.setFormat(drawn.progress_text or "%p%")
        self.drawReview(drawn.review)
        if self.session.needs_polling:
            self.timer.start()

    def drawReview(self, rows):
        """Subclasses: show the doubtful slices."""

    def updateButtons(self):
        self.draw()

    def setStatus(self, text, error=False):
        self.session.set_status(text, error)
        self.draw()

    def inputs(self):
        return self.session.inputs()

    def prepareRun(self, volume, segmentation, segment_id, roi, seed=None):
        """Subclasses: return a MedSegSlicerLib.segmenter.PreparedRun (raise MedSegError on bad input)."""
        raise NotImplementedError

    def maskFromResult(self, result):
        raise NotImplementedError

    def modelName(self):
        raise NotImplementedError

    # ---- buttons and the timer: forwarded ----------------------------------------------------------------------
    def onPreview(self):
        self.session.preview()
        self.draw()

    def onPoll(self):
        # Never blocks: reads only what the worker has already sent (progress, result, error, or its death).
        drawn = self.session.poll(time.monotonic())
        if not self.session.needs_polling:
            self.timer.stop()
        self.draw(drawn)

    def onCancel(self):
        self.session.cancel()
        self.draw()

    def onApply(self):
        self.session.apply(add=self.addToSegmentCheckBox.checked)
        self.draw()

    def reviewSegment(self):
        """Subclasses: True to also write the doubtful slices into a review segment on Apply."""
        return False

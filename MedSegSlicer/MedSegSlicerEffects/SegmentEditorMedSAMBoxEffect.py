"""Segment Editor effect "MedSAM box": LiteMedSAM / MedSAM ViT-B from a 3-D ROI box.

Thin Qt: the box, the slicing direction, the slice range and the run all go through the Qt-free layer
(``MedSegSlicerLib.geometry`` for boxes and views, the logic's ``segmenter`` for the run, ``editing`` for Apply,
``effect_state`` for the saved parameters)."""
import ctk
import qt
from medseg_backend import slicing
from medseg_backend.choices import DEFAULT_PROPAGATION, MEDSAM_MODELS, PROPAGATIONS

from MedSegSlicerEffects.EffectBase import VIEWS, MedSegEffectBase
from MedSegSlicerLib import geometry, labelmaps, segments, terminology
from MedSegSlicerLib.errors import MedSegError

#: propagation modes offered in the effect (``stop`` never differed from ``official`` on any measured case)
EFFECT_PROPAGATIONS = tuple(p for p in PROPAGATIONS if p != "stop")

try:  # Slicer's translation function (slicer.i18n, Slicer >= 5.4); plain strings where it is missing
    from slicer.i18n import tr as _
except ImportError:
    def _(text):
        return text

#: directions of "Propagate from this slice", in the viewer's terms (slice numbers of the chosen view)
DIRECTION_TEXTS = (("both", _("both ways")), ("up", _("to higher slice numbers")),
                   ("down", _("to lower slice numbers")))


class SegmentEditorMedSAMBoxEffect(MedSegEffectBase):
    effectName = "MedSAM box"
    iconFile = "MedSAMBox.png"
    drawsInViews = True

    def __init__(self, scriptedEffect):
        MedSegEffectBase.__init__(self, scriptedEffect)  # sets scriptedEffect.name = effectName (never translated)
        scriptedEffect.title = _("MedSAM box")

    def helpText(self):
        return _("<html>Segment structures with MedSAM, in the slice view.<p>"
                 "<b>Drag</b> a box around the structure on one slice (left button): its depth is set from its size "
                 "(1.2 x its longer side) and the preview starts at once. Keys, with the mouse in the view: "
                 "<b>Enter</b> applies (undoable), <b>x</b> cancels the run or drops the preview, <b>n</b> applies and "
                 "adds the next segment (the structure picked below), <b>j</b> shows the next slice to check. "
                 "<b>Fix a slice</b>: after Apply, drag a box on a bad slice inside the box: that slice is prompted "
                 "again and the slices beyond it (away from the middle) are re-run from it; Enter applies only "
                 "those. <b>Ctrl-drag</b> paints on the slice, <b>Ctrl+Shift-drag</b> erases (inside the box, after "
                 "Apply): the edited slice seeds the re-run the same way. <i>Apply directly</i> skips the preview "
                 "step.<p>"
                 "The box stays as an ROI (drag its handles; with <i>Auto-update</i> the preview follows). "
                 "<b>Draw ROI</b> (Ctrl+Shift+R, two clicks) and <b>Fit to segment</b> set it from the panel; "
                 "<b>Preview</b> (Ctrl+Shift+P), <b>Apply</b> (Ctrl+Shift+Return), <b>Cancel</b> (Ctrl+Shift+X). "
                 "Paint / Erase a slice, then <b>Propagate from this slice</b> (Ctrl+Shift+G) re-runs from it; "
                 "<i>Only slices</i> limits the run and Apply to a slice range. Intensity defaults to the volume's "
                 "displayed window/level.</html>")

    # ---- panel -----------------------------------------------------------------------------------------------
    def setupOptionsFrame(self):
        self.setupRoiRow(_("The box around the structure (an ROI markup; may be rotated or transformed). Each "
                           "segment keeps its own box."),
                         _("Fit to segment"), _("Fit the box to the selected segment's extent (plus 2 voxels), or to "
                                                "the middle third of the volume if the segment is empty."))
        self.roiInfoLabel = qt.QLabel("")
        self.roiInfoLabel.wordWrap = True
        self.roiInfoLabel.setToolTip(_("The slices the box covers in the chosen view, and where propagation starts."))
        self.scriptedEffect.addOptionsWidget(self.roiInfoLabel)

        self.modelCombo = qt.QComboBox()
        for model in MEDSAM_MODELS:
            self.modelCombo.addItem(model)
        self.modelCombo.setToolTip(_("lite-medsam: fast (about 1 s per slice on a CPU, weights included). "
                                     "medsam-vit-b: the original MedSAM (about 10 s per slice on a CPU, 375 MB "
                                     "download)."))
        self.scriptedEffect.addLabeledOptionsWidget(_("Model:"), self.modelCombo)

        self.addViewCombo()

        self.limitSlicesCheckBox = qt.QCheckBox(_("Only slices"))
        self.limitSlicesCheckBox.setToolTip(_("Run (and Apply) on these slices only: the rest of the segment stays "
                                              "as it is."))
        self.rangeLabel = qt.QLabel("")
        self.firstHereButton = qt.QPushButton(_("First = current"))
        self.firstHereButton.setToolTip(_("Start the range at the slice shown in the chosen view."))
        self.lastHereButton = qt.QPushButton(_("Last = current"))
        self.lastHereButton.setToolTip(_("End the range at the slice shown in the chosen view."))
        self.thisSliceButton = qt.QPushButton(_("This slice only"))
        self.thisSliceButton.setToolTip(_("Correct one slice: run and apply on the slice shown in the chosen view."))
        rangeRow = qt.QHBoxLayout()
        rangeRow.addWidget(self.limitSlicesCheckBox)
        rangeRow.addWidget(self.rangeLabel)
        rangeRow.addWidget(self.firstHereButton)
        rangeRow.addWidget(self.lastHereButton)
        rangeRow.addWidget(self.thisSliceButton)
        self.scriptedEffect.addLabeledOptionsWidget(_("Slice range:"), rangeRow)

        self.propagateButton = qt.QPushButton(_("Propagate from this slice"))
        self.propagateButton.setToolTip(_("After correcting the segment on the slice shown in the chosen view (Paint / "
                                          "Erase), run MedSAM again from that slice: your slice is kept as drawn, "
                                          "its outline gives the box of the next slice, and only the slices it walks "
                                          "through (to the end of the box) change on Apply (Ctrl+Shift+G)."))
        self.directionCombo = qt.QComboBox()
        for key, text in DIRECTION_TEXTS:
            self.directionCombo.addItem(text, key)
        self.directionCombo.setToolTip(_("Which slices to re-run from the corrected one, by slice number in the chosen "
                                         "view."))
        propagateRow = qt.QHBoxLayout()
        propagateRow.addWidget(self.propagateButton)
        propagateRow.addWidget(self.directionCombo)
        self.scriptedEffect.addLabeledOptionsWidget(_("Correct:"), propagateRow)
        self.runAllButton = qt.QPushButton(_("Run all boxes"))
        self.runAllButton.setToolTip(_("Run the box of every segment that has one, in one job (progress and Cancel as "
                                       "for a preview); each segment gets its box's result, within its box; one "
                                       "Undo restores them all."))
        self.scriptedEffect.addOptionsWidget(self.runAllButton)

        self.intensityCombo = self.addIntensityCombo(_("How intensities are mapped to the model's 0-255 input."))
        self.scriptedEffect.addLabeledOptionsWidget(_("Intensity:"), self.intensityCombo)
        self.autoUpdateCheckBox = qt.QCheckBox(_("Auto-update"))
        self.autoUpdateCheckBox.setToolTip(_("Preview again automatically when the box moves (embeddings are cached, "
                                             "so only the prompt runs)."))
        self.applyDirectlyCheckBox = qt.QCheckBox(_("Apply directly"))
        self.applyDirectlyCheckBox.setToolTip(_("Write the result into the segment as soon as it is complete, "
                                                "without the preview step (Undo restores the segment)."))
        autoRow = qt.QHBoxLayout()
        autoRow.addWidget(self.autoUpdateCheckBox)
        autoRow.addWidget(self.applyDirectlyCheckBox)
        self.scriptedEffect.addOptionsWidget(autoRow)
        self.structureCombo = qt.QComboBox()
        self.structureCombo.addItem(_("(unnamed)"), "")
        for name in terminology.names():
            self.structureCombo.addItem(name, name)
        self.structureCombo.setToolTip(_("The next segment (key n in a slice view) gets this structure's standard "
                                         "name, colour and terminology."))
        self.scriptedEffect.addLabeledOptionsWidget(_("Next structure:"), self.structureCombo)

        self.reviewList = qt.QListWidget()
        self.reviewList.setMaximumHeight(90)
        self.reviewList.setToolTip(_("Slices where the model was unsure (low confidence, a mask mostly outside the "
                                     "object's intensity range, or an empty mask), least confident first: click one "
                                     "to show it in the chosen view."))
        self.scriptedEffect.addLabeledOptionsWidget(_("Slices to check:"), self.reviewList)
        self.reviewSegmentCheckBox = qt.QCheckBox(_("Also mark them in a review segment on Apply"))
        self.reviewSegmentCheckBox.setToolTip(_("Apply also writes the doubtful slices of the result into a separate "
                                                "'<segment> (review)' segment, to find them again later."))
        self.scriptedEffect.addOptionsWidget(self.reviewSegmentCheckBox)
        self.reviewList.connect("itemClicked(QListWidgetItem*)", self.onReviewItem)

        advanced = ctk.ctkCollapsibleButton()
        advanced.text = _("Advanced")
        advanced.collapsed = True
        advancedLayout = qt.QFormLayout(advanced)
        self.propagationCombo = qt.QComboBox()
        for p in EFFECT_PROPAGATIONS:
            self.propagationCombo.addItem(p)
        self.propagationCombo.setToolTip(_("How the box goes from slice to slice: 'official' (default) is the "
                                           "published LiteMedSAM 3-D procedure (box from the previous slice's "
                                           "mask); 'adaptive' starts on the slice the model is surest of, widens "
                                           "the carried box where the object outgrows it and stops where the "
                                           "object ends (it can lose on tumours with a bright rim); 'guarded' "
                                           "runs both and takes adaptive's side of the middle slice only where "
                                           "both walks' signals say it is clearly better; 'roi' uses your box on "
                                           "every slice."))
        advancedLayout.addRow(_("Propagation:"), self.propagationCombo)
        self.scriptedEffect.addOptionsWidget(advanced)
        self.setupRunButtons()

        self.firstHereButton.connect("clicked()", lambda: self.setRangeFromView(first=True))
        self.lastHereButton.connect("clicked()", lambda: self.setRangeFromView(last=True))
        self.thisSliceButton.connect("clicked()", lambda: self.setRangeFromView(first=True, last=True))
        self.propagateButton.connect("clicked()", self.onPropagateFromSlice)
        self.runAllButton.connect("clicked()", lambda: (self.session.run_all(), self.draw()))
        self.addShortcut("propagate", self.onPropagateFromSlice)
        for combo in (self.modelCombo, self.propagationCombo, self.viewCombo):
            combo.connect("currentIndexChanged(int)", self.updateMRMLFromGUI)
        self.intensityCombo.connect("currentTextChanged(QString)", self.updateMRMLFromGUI)
        for box in (self.limitSlicesCheckBox, self.autoUpdateCheckBox, self.applyDirectlyCheckBox):
            box.connect("toggled(bool)", self.updateMRMLFromGUI)
        self.structureCombo.connect("currentIndexChanged(int)", self.updateMRMLFromGUI)

    # ---- parameters (saved on the Segment Editor node, per effect) -------------------------------------------
    def setMRMLDefaults(self):
        state = self.state()
        state.set_default("Model", MEDSAM_MODELS[0])
        state.set_default("Propagation", DEFAULT_PROPAGATION)
        state.set_default("View", VIEWS[0])
        state.set_default("Intensity", "")
        state.set_default("AutoUpdate", "0")
        state.set_default("LimitSlices", "0")
        state.set_default("ApplyDirectly", "0")
        state.set_default("NextStructure", "")

    def updateGUIFromMRML(self):
        state = self.state()
        widgets = ((self.modelCombo, state.get_choice("Model", MEDSAM_MODELS)),
                   (self.propagationCombo, state.get_choice("Propagation", EFFECT_PROPAGATIONS, DEFAULT_PROPAGATION)),
                   (self.viewCombo, state.get_choice("View", VIEWS)))
        for combo, value in widgets:
            was = combo.blockSignals(True)
            combo.currentText = value
            combo.blockSignals(was)
        was = self.intensityCombo.blockSignals(True)
        self.intensityCombo.currentText = state.get("Intensity") or self.intensityCombo.itemText(0)
        self.intensityCombo.blockSignals(was)
        was = self.structureCombo.blockSignals(True)
        self.structureCombo.setCurrentIndex(max(0, self.structureCombo.findData(state.get("NextStructure"))))
        self.structureCombo.blockSignals(was)
        for box, name in ((self.limitSlicesCheckBox, "LimitSlices"), (self.autoUpdateCheckBox, "AutoUpdate"),
                          (self.applyDirectlyCheckBox, "ApplyDirectly")):
            was = box.blockSignals(True)
            box.checked = state.get_bool(name)
            box.blockSignals(was)
        self.syncSession()
        self.updateRoiFromMRML()
        self.updateRangeLabel()
        self.updateRoiInfo()
        self.updateButtons()

    def updateMRMLFromGUI(self, *args):
        state = self.state()
        state.set("Model", self.modelCombo.currentText)
        state.set("Propagation", self.propagationCombo.currentText)
        state.set("View", self.viewCombo.currentText)
        state.set("Intensity", self.intensityValue(self.intensityCombo) or "")
        state.set_bool("LimitSlices", self.limitSlicesCheckBox.checked)
        state.set_bool("AutoUpdate", self.autoUpdateCheckBox.checked)
        state.set_bool("ApplyDirectly", self.applyDirectlyCheckBox.checked)
        state.set("NextStructure", self.structureCombo.currentData or "")
        self.syncSession()
        self.updateRangeLabel()
        self.updateRoiInfo()

    def syncSession(self):
        self.session.auto_update = self.autoUpdateCheckBox.checked
        self.session.apply_directly = self.applyDirectlyCheckBox.checked
        self.session.structure = self.structureCombo.currentData or None

    # ---- view terms --------------------------------------------------------------------------------------------
    def sliceNode(self):
        return self.sliceNodeForView(self.viewCombo.currentText)

    def currentSlice(self, volume):
        node = self.sliceNode()
        if node is None:
            raise MedSegError(_("The chosen view is not in the layout: pick another view."))
        return geometry.slice_index_for_view(volume, node, self.axis(volume))

    def setRangeFromView(self, first=False, last=False):
        try:
            volume, _segmentation, _sid = self.inputs()
            k = self.currentSlice(volume)
        except MedSegError as e:
            self.setStatus(str(e), error=True)
            return
        state = self.state()
        if first:
            state.set("FirstSlice", k)
            if not last and state.get_int("LastSlice", -1) < k:
                state.set("LastSlice", k)
        if last:
            state.set("LastSlice", k)
            if not first and state.get_int("FirstSlice", k + 1) > k:
                state.set("FirstSlice", k)
        state.set_bool("LimitSlices", True)
        self.updateGUIFromMRML()

    def sliceRange(self):
        state = self.state()
        if not state.get_bool("LimitSlices"):
            return None
        first, last = state.get_int("FirstSlice", -1), state.get_int("LastSlice", -1)
        if first < 0 or last < 0:
            return None
        return (min(first, last), max(first, last))

    def updateRangeLabel(self):
        r = self.sliceRange()
        self.rangeLabel.text = (_("slices {first}-{last}").format(first=r[0], last=r[1]) if r
                                else _("whole box"))

    # ---- ROI (one per segment, drawn full depth: EffectBase) ------------------------------------------------
    def updateRoiInfo(self):
        roi = self.roiSelector.currentNode() if hasattr(self, "roiSelector") else None
        params = self.scriptedEffect.parameterSetNode()
        volume = params.GetSourceVolumeNode() if params else None
        if roi is None or volume is None or roi.GetNumberOfControlPoints() == 0:
            self.roiInfoLabel.text = ""
            return
        try:
            axis = self.axis(volume)
            box = geometry.roi_to_voxel_box(roi, volume)
        except MedSegError as e:
            self.roiInfoLabel.text = str(e)
            return
        a = slicing.BOX_INDEX[slicing.axis_index(axis)]
        r = self.sliceRange()
        first, last = box[a], box[a + 3]
        if r is not None:
            first, last = max(first, r[0]), min(last, r[1])
        depth_mm = (box[a + 3] - box[a] + 1) * geometry.voxel_spacing(volume)[a]
        start, window = slicing.middle_slice(first, last), slicing.start_window(first, last)
        text = _("Box: slices {a}-{b} in the {view} view ({mm:.0f} mm deep); ").format(
            a=first, b=last, view=self.viewCombo.currentText, mm=depth_mm)
        if self.propagationCombo.currentText == "adaptive" and len(window) > 1:
            text += _("propagation starts at slice {start}, or where the model is clearly surer within slices "
                      "{w0}-{w1}, and goes up, then down.").format(start=start, w0=window[0], w1=window[-1])
        else:
            text += _("propagation starts at slice {start} and goes up, then down.").format(start=start)
        self.roiInfoLabel.text = text

    def fitRoiBox(self, volume, segmentation, segment_id):
        mask = labelmaps.segment_to_array(segmentation, segment_id, volume)
        return slicing.bbox3d(mask, margin=2) or geometry.default_box(mask.shape)

    # ---- run -----------------------------------------------------------------------------------------------
    def modelName(self):
        return self.modelCombo.currentText

    def runOptions(self, volume):
        from MedSegSlicerLib.session_box import MedSAMOptions

        return MedSAMOptions(model=self.modelCombo.currentText, intensity=self.intensityValue(self.intensityCombo),
                             propagation=self.propagationCombo.currentText, axis=self.axis(volume),
                             slice_range=self.sliceRange())

    def prepareRun(self, volume, segmentation, segment_id, roi, seed=None):
        from MedSegSlicerLib.session_box import medsam_runs

        return medsam_runs(lambda: self.logic.segmenter, self.runOptions)(volume, segmentation, segment_id, roi, seed)

    def onPropagateFromSlice(self):
        """Preview a run seeded with the segment's slice in the chosen view (see ``Segmenter.prepare_medsam``)."""
        try:
            volume, _segmentation, _sid = self.inputs()
            k = self.currentSlice(volume)
        except MedSegError as e:
            self.setStatus(str(e), error=True)
            return
        self.session.propagate_from(k, self.directionCombo.currentData)
        self.draw()

    # ---- doubtful slices (per-slice confidence, kept by the session) -----------------------------------------
    def drawReview(self, rows):
        if [(r.data(qt.Qt.UserRole), r.text()) for r in (self.reviewList.item(i) for i in
                                                         range(self.reviewList.count))] == rows:
            return
        self.reviewList.clear()
        for k, text in rows:
            item = qt.QListWidgetItem(text)
            item.setData(qt.Qt.UserRole, int(k))
            self.reviewList.addItem(item)

    def onReviewItem(self, item):
        try:
            node = self.sliceNode()
            if node is None:
                return
            r, a, s = self.session.review_position(int(item.data(qt.Qt.UserRole)))
            node.JumpSliceByCentering(r, a, s)
        except MedSegError as e:
            self.setStatus(str(e), error=True)

    def reviewSegment(self):
        return self.reviewSegmentCheckBox.checked

    encodesAhead = True

    def prefetchRun(self, prepared):
        return self.logic.segmenter.prepare_encode(prepared)

    def encodeAround(self, volume, axis, k):
        # the model and intensity of the box runs that follow, so that their slices come from the cache
        return self.logic.segmenter.start_encode_around(volume, axis, k, model=self.modelName(),
                                                        intensity=self.intensityValue(self.intensityCombo))

    def maskFromResult(self, result):
        return (result.labels == 1).astype("uint8")

"""Segment Editor effect "UniverSeg examples": segment a structure from example segmentations (in-context)."""
import ctk
import qt
import slicer

from MedSegSlicerEffects.EffectBase import VIEWS, MedSegEffectBase
from MedSegSlicerLib import deps
from MedSegSlicerLib.errors import MedSegError

try:  # Slicer's translation function (slicer.i18n, Slicer >= 5.4); plain strings where it is missing
    from slicer.i18n import tr as _
except ImportError:
    def _(text):
        return text

ITEM_ROLE = qt.Qt.UserRole + 1


class SegmentEditorUniverSegEffect(MedSegEffectBase):
    effectName = "UniverSeg examples"
    iconFile = "UniverSeg.png"

    drawsInViews = True        # Ctrl-drag paints, Ctrl+Shift-drag erases, keys p / Enter / x in the view

    def __init__(self, scriptedEffect):
        from MedSegSlicerLib.session_examples import ExampleSlices

        self.exampleTracker = ExampleSlices()          # the slices the user painted or corrected: the examples
        MedSegEffectBase.__init__(self, scriptedEffect)  # sets scriptedEffect.name = effectName (never translated)
        scriptedEffect.title = _("UniverSeg examples")

    def helpText(self):
        return _("<html>Segment a structure from examples, without training (UniverSeg).<p>"
                 "In the slice view: <b>Ctrl-drag</b> paints the structure on a slice, <b>Ctrl+Shift-drag</b> erases; "
                 "paint 3 or more slices spread over it, press <b>p</b> to segment the rest from them, <b>Enter</b> "
                 "applies, <b>x</b> cancels. Correct a slice (here or with Paint / Erase) and press p again: the "
                 "slices you painted or corrected are the examples (never the ones the model filled in), no slice "
                 "numbers to type.<p>"
                 "Examples: the <b>labelled slices of this segment</b> (as above; <i>Use only slices</i> overrides "
                 "the choice), <b>other segments</b> that show the same structure (each with its volume), or an "
                 "<b>example library</b>. Without a box the run covers the labelled slices plus a margin; "
                 "<b>Draw ROI</b> or <b>Fit to examples</b> sets it explicitly. <b>Preview</b> (Ctrl+Shift+P), then "
                 "<b>Apply</b> (Ctrl+Shift+Return, undoable; only the box's slices change) or <b>Cancel</b>.<p>The "
                 "UniverSeg weights are for research use only (OpenRAIL++-M); you are asked to accept the licence "
                 "once.</html>")

    def setupOptionsFrame(self):
        self.labelledSlicesCheckBox = qt.QCheckBox(_("Labelled slices of this segment"))
        self.labelledSlicesCheckBox.setToolTip(_("Use the slices of the selected segment that contain voxels as "
                                                 "examples; they are kept exactly as drawn."))
        self.exampleSlicesEdit = qt.QLineEdit()
        self.exampleSlicesEdit.setPlaceholderText(_("the slices you painted or corrected"))
        self.exampleSlicesEdit.setToolTip(_("Use only these slices as examples (e.g. 8, 14, 20). Empty: the slices "
                                            "you painted, plus those you corrected after an Apply. Slice numbers as "
                                            "the chosen view counts them."))
        self.addSliceButton = qt.QPushButton(_("Add current slice"))
        self.addSliceButton.setToolTip(_("Add the slice shown in the chosen view to the example slices."))
        exRow = qt.QHBoxLayout()
        exRow.addWidget(self.labelledSlicesCheckBox)
        exRow.addWidget(self.exampleSlicesEdit)
        exRow.addWidget(self.addSliceButton)
        self.scriptedEffect.addOptionsWidget(exRow)

        self.segmentList = qt.QListWidget()
        self.segmentList.setToolTip(_("Tick segments (of any segmentation) that show the same structure."))
        self.segmentList.setMaximumHeight(120)
        self.refreshButton = qt.QPushButton(_("Refresh list"))
        self.scriptedEffect.addLabeledOptionsWidget(_("Other segments:"), self.segmentList)
        self.scriptedEffect.addOptionsWidget(self.refreshButton)
        self.exampleVolumeSelector = slicer.qMRMLNodeComboBox()
        self.exampleVolumeSelector.nodeTypes = ["vtkMRMLScalarVolumeNode"]
        self.exampleVolumeSelector.noneEnabled = True
        self.exampleVolumeSelector.addEnabled = False
        self.exampleVolumeSelector.removeEnabled = False
        self.exampleVolumeSelector.setMRMLScene(slicer.mrmlScene)
        self.exampleVolumeSelector.setToolTip(_("Volume of ticked segmentations that do not record their own "
                                                "volume."))
        self.scriptedEffect.addLabeledOptionsWidget(_("Their volume:"), self.exampleVolumeSelector)

        self.useLibraryCheckBox = qt.QCheckBox(_("Library:"))
        self.useLibraryCheckBox.setToolTip(_("Also use the examples of a saved library."))
        self.libraryPath = ctk.ctkPathLineEdit()
        self.libraryPath.filters = ctk.ctkPathLineEdit.Dirs
        self.libraryPath.setToolTip(_("An example library folder (images + .seg.nrrd labels + manifest.json)."))
        self.exportButton = qt.QPushButton(_("Export examples..."))
        self.exportButton.setToolTip(_("Save the current examples (labelled slices + ticked segments) as a "
                                       "library; each label opens in Slicer as a segmentation."))
        libraryRow = qt.QHBoxLayout()
        libraryRow.addWidget(self.useLibraryCheckBox)
        libraryRow.addWidget(self.libraryPath)
        libraryRow.addWidget(self.exportButton)
        self.scriptedEffect.addOptionsWidget(libraryRow)

        self.setupRoiRow(_("Where to segment (optional). Without a box: the labelled slices plus a margin, or the "
                           "examples' region."),
                         _("Fit to examples"), _("Fit the box to the labelled slices of this segment plus a margin "
                                                 "(what a run without a box uses)."))
        self.addViewCombo()
        self.intensityCombo = self.addIntensityCombo(_("Intensity rule for examples and target (the same for "
                                                       "both)."))
        self.scriptedEffect.addLabeledOptionsWidget(_("Intensity:"), self.intensityCombo)

        advanced = ctk.ctkCollapsibleButton()
        advanced.text = _("Advanced")
        advanced.collapsed = True
        advancedLayout = qt.QFormLayout(advanced)
        self.supportSizeSpin = qt.QSpinBox()
        self.supportSizeSpin.setRange(1, 64)
        self.supportSizeSpin.setToolTip(_("Examples per pass (UniverSeg was trained with 64)."))
        advancedLayout.addRow(_("Support size:"), self.supportSizeSpin)
        self.ensembleSpin = qt.QSpinBox()
        self.ensembleSpin.setRange(1, 16)
        self.ensembleSpin.setToolTip(_("With more examples than the support size, average this many random "
                                       "subsets."))
        advancedLayout.addRow(_("Ensemble:"), self.ensembleSpin)
        self.ttaCheckBox = qt.QCheckBox(_("Left-right flip averaging"))
        self.ttaCheckBox.setToolTip(_("Also segment the mirrored image and average (about 2x slower)."))
        advancedLayout.addRow(self.ttaCheckBox)
        self.scriptedEffect.addOptionsWidget(advanced)
        self.setupRunButtons()

        self.refreshButton.connect("clicked()", self.refreshSegmentList)
        self.exportButton.connect("clicked()", self.onExport)
        self.addSliceButton.connect("clicked()", self.onAddCurrentSlice)
        for w, signal in ((self.labelledSlicesCheckBox, "toggled(bool)"), (self.useLibraryCheckBox, "toggled(bool)"),
                          (self.ttaCheckBox, "toggled(bool)"), (self.viewCombo, "currentIndexChanged(int)"),
                          (self.supportSizeSpin, "valueChanged(int)"), (self.ensembleSpin, "valueChanged(int)"),
                          (self.exampleSlicesEdit, "editingFinished()"),
                          (self.intensityCombo, "currentTextChanged(QString)"),
                          (self.libraryPath, "currentPathChanged(QString)")):
            w.connect(signal, self.updateMRMLFromGUI)

    def activate(self):
        MedSegEffectBase.activate(self)
        self.refreshSegmentList()

    # ---- parameters (saved on the Segment Editor node, per effect) -------------------------------------------
    def setMRMLDefaults(self):
        state = self.state()
        for name, value in (("LabelledSlices", "1"), ("ExampleSlices", ""), ("UseLibrary", "0"), ("Library", ""),
                            ("View", VIEWS[0]), ("Intensity", ""), ("SupportSize", "64"), ("Ensemble", "1"),
                            ("TTA", "0")):
            state.set_default(name, value)

    def updateGUIFromMRML(self):
        state = self.state()
        for w, value in ((self.labelledSlicesCheckBox, state.get_bool("LabelledSlices", True)),
                         (self.useLibraryCheckBox, state.get_bool("UseLibrary")),
                         (self.ttaCheckBox, state.get_bool("TTA"))):
            was = w.blockSignals(True)
            w.checked = value
            w.blockSignals(was)
        for w, value in ((self.supportSizeSpin, state.get_int("SupportSize", 64)),
                         (self.ensembleSpin, state.get_int("Ensemble", 1))):
            was = w.blockSignals(True)
            w.value = value
            w.blockSignals(was)
        for w, attr, value in ((self.viewCombo, "currentText", state.get_choice("View", VIEWS)),
                               (self.intensityCombo, "currentText",
                                state.get("Intensity") or self.intensityCombo.itemText(0)),
                               (self.exampleSlicesEdit, "text", state.get("ExampleSlices")),
                               (self.libraryPath, "currentPath", state.get("Library"))):
            was = w.blockSignals(True)
            setattr(w, attr, value)
            w.blockSignals(was)
        self.updateRoiFromMRML()
        self.updateButtons()

    def updateMRMLFromGUI(self, *args):
        state = self.state()
        state.set_bool("LabelledSlices", self.labelledSlicesCheckBox.checked)
        state.set_bool("UseLibrary", self.useLibraryCheckBox.checked)
        state.set_bool("TTA", self.ttaCheckBox.checked)
        state.set("SupportSize", int(self.supportSizeSpin.value))
        state.set("Ensemble", int(self.ensembleSpin.value))
        state.set("View", self.viewCombo.currentText)
        state.set("Intensity", self.intensityValue(self.intensityCombo) or "")
        state.set("ExampleSlices", self.exampleSlicesEdit.text.strip())
        state.set("Library", self.libraryPath.currentPath)

    # ---- view terms and the box ------------------------------------------------------------------------------
    def exampleSlices(self):
        """The slices typed in 'Use only slices' (None: the slices painted or corrected)."""
        from medseg_backend.textforms import parse_slice_list

        return parse_slice_list(self.exampleSlicesEdit.text)

    def onAddCurrentSlice(self):
        from MedSegSlicerLib import geometry

        try:
            volume, _segmentation, _sid = self.inputs()
            node = self.sliceNodeForView(self.viewCombo.currentText)
            k = geometry.slice_index_for_view(volume, node, self.axis(volume))
            chosen = set(self.exampleSlices() or [])
        except MedSegError as e:
            self.setStatus(str(e), error=True)
            return
        chosen.add(k)
        self.exampleSlicesEdit.text = ", ".join(str(v) for v in sorted(chosen))
        self.updateMRMLFromGUI()

    def fitRoiBox(self, volume, segmentation, segment_id):
        from MedSegSlicerLib.session_examples import fit_box

        return fit_box(volume, segmentation, segment_id, self.options(volume), self.exampleTracker)

    # ---- examples ------------------------------------------------------------------------------------------
    def refreshSegmentList(self):
        from MedSegSlicerLib.session_examples import example_candidates

        checked = set(self.checkedSegments())
        self.segmentList.clear()
        params = self.scriptedEffect.parameterSetNode()
        target = (params.GetSegmentationNode(), params.GetSelectedSegmentID()) if params else (None, None)
        for node_id, sid, text in example_candidates(slicer.mrmlScene, *target):
            item = qt.QListWidgetItem(text)
            item.setFlags(item.flags() | qt.Qt.ItemIsUserCheckable)
            item.setData(ITEM_ROLE, f"{node_id}|{sid}")
            item.setCheckState(qt.Qt.Checked if (node_id, sid) in checked else qt.Qt.Unchecked)
            self.segmentList.addItem(item)

    def checkedSegments(self):
        out = []
        for row in range(self.segmentList.count if hasattr(self, "segmentList") else 0):
            item = self.segmentList.item(row)
            if item.checkState() == qt.Qt.Checked:
                node_id, sid = str(item.data(ITEM_ROLE)).split("|", 1)
                out.append((node_id, sid))
        return out

    def options(self, volume):
        """The panel's choices (:class:`MedSegSlicerLib.session_examples.UniverSegOptions`)."""
        from MedSegSlicerLib.session_examples import UniverSegOptions

        return UniverSegOptions(
            axis=self.axis(volume), intensity=self.intensityValue(self.intensityCombo),
            labelled_slices=bool(self.labelledSlicesCheckBox.checked), example_slices=self.exampleSlices(),
            segments=self.checkedSegments(), segments_volume=self.exampleVolumeSelector.currentNode(),
            library=self.libraryPath.currentPath if self.useLibraryCheckBox.checked else None,
            support_size=int(self.supportSizeSpin.value), ensemble=int(self.ensembleSpin.value),
            tta=bool(self.ttaCheckBox.checked))

    def collectExamples(self, volume, segmentation, segment_id, include_library=True):
        from MedSegSlicerLib.session_examples import collect_examples

        return collect_examples(slicer.mrmlScene, volume, segmentation, segment_id, self.options(volume),
                                self.exampleTracker, include_library=include_library)

    def onExport(self):
        # Writing a library goes through the backend (torch, SimpleITK, pynrrd): offer the install first, and say what
        # is missing when it is declined, before anything is asked or written.
        plan = deps.install_plan()
        try:
            if not plan.empty and not self.logic.ensureDependencies(ask=True):
                self.setStatus(plan.needs("Export examples"), error=True)
                return
            volume, segmentation, segment_id = self.inputs()
            axis = self.axis(volume)
            found, _keep = self.collectExamples(volume, segmentation, segment_id, include_library=False)
            folder = qt.QFileDialog.getExistingDirectory(None, "Export examples to an (empty) library folder")
            if not folder:
                return
            # PythonQt's QInputDialog.getItem returns the first item on Cancel too: a dialog whose exec() says
            dialog = qt.QInputDialog(slicer.util.mainWindow())
            dialog.setWindowTitle("Modality")
            dialog.setLabelText("Modality of the examples:")
            dialog.setComboBoxItems(list(self.logic.MODALITIES))
            dialog.setComboBoxEditable(False)
            modality = dialog.textValue() if dialog.exec_() else None
            structure = segmentation.GetSegmentation().GetSegment(segment_id).GetName()
            path = self.logic.exportExampleLibrary(folder, found, structure, modality, axis)
            self.setStatus(f"Examples exported to {path}." if path else "Export cancelled: nothing was written.")
        except MedSegError as e:
            self.setStatus(str(e), error=True)
        except ImportError as e:  # missing after the check, or installed in this session and not loadable yet
            self.setStatus(deps.import_failure("Export examples", e), error=True)

    # ---- run -----------------------------------------------------------------------------------------------
    def modelName(self):
        return "universeg-v1"

    def sessionOptions(self):
        return dict(strokes="segment", examples=self.exampleTracker, boxes=False)

    def prepareRun(self, volume, segmentation, segment_id, roi, seed=None):
        from MedSegSlicerLib.session_examples import universeg_runs

        return universeg_runs(lambda: self.logic.segmenter, self.options, self.exampleTracker)(
            volume, segmentation, segment_id, roi, seed)

    def maskFromResult(self, result):
        return (result.mask > 0).astype("uint8")

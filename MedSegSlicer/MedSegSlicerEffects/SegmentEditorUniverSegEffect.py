"""Segment Editor effect "UniverSeg examples": segment a structure from example segmentations (in-context)."""
import ctk
import qt
import slicer

from MedSegSlicerEffects.EffectBase import MedSegEffectBase
from MedSegSlicerLib import deps, examples, preview, segments
from MedSegSlicerLib.core import AXES
from MedSegSlicerLib.errors import InputError, MedSegError

try:  # Slicer's translation function (slicer.i18n, Slicer >= 5.4); plain strings where it is missing
    from slicer.i18n import tr as _
except ImportError:
    def _(text):
        return text

ITEM_ROLE = qt.Qt.UserRole + 1


class SegmentEditorUniverSegEffect(MedSegEffectBase):
    effectName = "UniverSeg examples"
    iconFile = "UniverSeg.png"

    def __init__(self, scriptedEffect):
        MedSegEffectBase.__init__(self, scriptedEffect)  # sets scriptedEffect.name = effectName (never translated)
        scriptedEffect.title = _("UniverSeg examples")

    def clone(self):
        import qSlicerSegmentationsEditorEffectsPythonQt as effects

        cloned = effects.qSlicerSegmentEditorScriptedEffect(None)
        cloned.setPythonSource(__file__.replace("\\", "/"))
        return cloned

    def helpText(self):
        return _("<html>Segment a structure from examples, without training (UniverSeg).<p>"
                "Examples: the <b>labelled slices of this segment</b> (paint a few slices, get the rest), "
                "<b>other segments</b> that show the same structure (in this or other segmentations, each with its "
                "volume), or an <b>example library</b> folder. More examples give better results (up to the support "
                "size; more are ensembled). Optional ROI limits where to segment. <b>Preview</b>, then <b>Apply</b> "
                "(undoable) or <b>Cancel</b>.<p>The UniverSeg weights are for research use only (OpenRAIL++-M); "
                "you are asked to accept the licence once.</html>")

    def setupOptionsFrame(self):
        self.labelledSlicesCheckBox = qt.QCheckBox("Labelled slices of this segment")
        self.labelledSlicesCheckBox.checked = True
        self.labelledSlicesCheckBox.setToolTip("Use the slices of the selected segment that already contain voxels "
                                               "as examples; they are kept exactly as drawn.")
        self.scriptedEffect.addOptionsWidget(self.labelledSlicesCheckBox)

        self.segmentList = qt.QListWidget()
        self.segmentList.setToolTip("Tick segments (of any segmentation) that show the same structure.")
        self.segmentList.setMaximumHeight(120)
        self.refreshButton = qt.QPushButton("Refresh list")
        self.scriptedEffect.addLabeledOptionsWidget("Other segments:", self.segmentList)
        self.scriptedEffect.addOptionsWidget(self.refreshButton)
        self.exampleVolumeSelector = slicer.qMRMLNodeComboBox()
        self.exampleVolumeSelector.nodeTypes = ["vtkMRMLScalarVolumeNode"]
        self.exampleVolumeSelector.noneEnabled = True
        self.exampleVolumeSelector.addEnabled = False
        self.exampleVolumeSelector.removeEnabled = False
        self.exampleVolumeSelector.setMRMLScene(slicer.mrmlScene)
        self.exampleVolumeSelector.setToolTip("Volume of ticked segmentations that do not record their own volume.")
        self.scriptedEffect.addLabeledOptionsWidget("Their volume:", self.exampleVolumeSelector)

        self.useLibraryCheckBox = qt.QCheckBox("Library:")
        self.libraryPath = ctk.ctkPathLineEdit()
        self.libraryPath.filters = ctk.ctkPathLineEdit.Dirs
        self.libraryPath.setToolTip("An example library folder (images + labels + manifest.json).")
        self.exportButton = qt.QPushButton("Export examples...")
        self.exportButton.setToolTip("Save the current examples (labelled slices + ticked segments) as a library.")
        libraryRow = qt.QHBoxLayout()
        libraryRow.addWidget(self.useLibraryCheckBox)
        libraryRow.addWidget(self.libraryPath)
        libraryRow.addWidget(self.exportButton)
        self.scriptedEffect.addOptionsWidget(libraryRow)

        self.roiSelector = slicer.qMRMLNodeComboBox()
        self.roiSelector.nodeTypes = ["vtkMRMLMarkupsROINode"]
        self.roiSelector.noneEnabled = True
        self.roiSelector.addEnabled = False
        self.roiSelector.removeEnabled = False
        self.roiSelector.setMRMLScene(slicer.mrmlScene)
        self.roiSelector.setToolTip("Optional: only segment inside this box (else a region derived from the examples).")
        self.scriptedEffect.addLabeledOptionsWidget("ROI:", self.roiSelector)

        self.supportSizeSpin = qt.QSpinBox()
        self.supportSizeSpin.setRange(1, 64)
        self.supportSizeSpin.value = 64
        self.supportSizeSpin.setToolTip("Examples per pass (UniverSeg was trained with 64).")
        self.ensembleSpin = qt.QSpinBox()
        self.ensembleSpin.setRange(1, 16)
        self.ensembleSpin.value = 1
        self.ensembleSpin.setToolTip("With more examples than the support size, average this many random subsets.")
        self.ttaCheckBox = qt.QCheckBox("flip TTA")
        row = qt.QHBoxLayout()
        row.addWidget(qt.QLabel("support"))
        row.addWidget(self.supportSizeSpin)
        row.addWidget(qt.QLabel("ensemble"))
        row.addWidget(self.ensembleSpin)
        row.addWidget(self.ttaCheckBox)
        self.scriptedEffect.addLabeledOptionsWidget("Options:", row)
        self.axisCombo = qt.QComboBox()
        for a in AXES:
            self.axisCombo.addItem(a)
        self.scriptedEffect.addLabeledOptionsWidget("Slice axis:", self.axisCombo)
        self.intensityCombo = self.addIntensityCombo("Intensity rule for examples and target (the same for both).")
        self.intensityCombo.currentText = "auto"
        self.scriptedEffect.addLabeledOptionsWidget("Intensity:", self.intensityCombo)
        self.setupRunButtons()

        self.refreshButton.connect("clicked()", self.refreshSegmentList)
        self.exportButton.connect("clicked()", self.onExport)

    def activate(self):
        self.refreshSegmentList()

    def setMRMLDefaults(self):
        pass

    def updateGUIFromMRML(self):
        self.updateButtons()

    def updateMRMLFromGUI(self, *args):
        pass

    # ---- examples ------------------------------------------------------------------------------------------
    def refreshSegmentList(self):
        checked = set(self.checkedSegments())
        self.segmentList.clear()
        params = self.scriptedEffect.parameterSetNode()
        target = (params.GetSegmentationNode(), params.GetSelectedSegmentID()) if params else (None, None)
        nodes = slicer.util.getNodesByClass("vtkMRMLSegmentationNode")
        for node in nodes:
            if preview.is_preview(node):
                continue
            for sid in segments.segment_ids(node):
                if target[0] is node and target[1] == sid:
                    continue
                name = node.GetSegmentation().GetSegment(sid).GetName()
                item = qt.QListWidgetItem(f"{node.GetName()} / {name}")
                item.setFlags(item.flags() | qt.Qt.ItemIsUserCheckable)
                key = f"{node.GetID()}|{sid}"
                item.setData(ITEM_ROLE, key)
                item.setCheckState(qt.Qt.Checked if (node.GetID(), sid) in checked else qt.Qt.Unchecked)
                self.segmentList.addItem(item)

    def checkedSegments(self):
        out = []
        for row in range(self.segmentList.count if hasattr(self, "segmentList") else 0):
            item = self.segmentList.item(row)
            if item.checkState() == qt.Qt.Checked:
                node_id, sid = str(item.data(ITEM_ROLE)).split("|", 1)
                out.append((node_id, sid))
        return out

    def collectExamples(self, volume, segmentation, segment_id, axis, include_library=True):
        arrays, keep = [], None
        if self.labelledSlicesCheckBox.checked:
            keep = examples.from_labelled_slices(volume, segmentation, segment_id, axis)
            arrays.append(keep)
        by_node = {}
        for node_id, sid in self.checkedSegments():
            by_node.setdefault(node_id, []).append(sid)
        for node_id, ids in by_node.items():
            node = slicer.mrmlScene.GetNodeByID(node_id)
            if node is None:
                raise InputError("A ticked example segmentation was deleted: press Refresh list.")
            try:
                example_volume = examples.source_volume_for(node, None)
            except InputError:
                example_volume = self.exampleVolumeSelector.currentNode()
                if example_volume is None:
                    raise
            arrays.extend(examples.from_segments(node, ids, example_volume, axis,
                                                 exclude=(segmentation, segment_id)))
        library = []
        if include_library and self.useLibraryCheckBox.checked:
            library = examples.from_library(self.libraryPath.currentPath)[0]
        examples.require_examples(arrays + library)
        return arrays + library, keep

    def onExport(self):
        # Writing a library goes through the backend (torch, SimpleITK, pynrrd): offer the install first, and say what
        # is missing when it is declined, before anything is asked or written.
        plan = deps.install_plan()
        try:
            if not plan.empty and not self.logic.ensureDependencies(ask=True):
                self.setStatus(plan.needs("Export examples"), error=True)
                return
            volume, segmentation, segment_id = self.inputs()
            axis = self.axisCombo.currentText
            found, _keep = self.collectExamples(volume, segmentation, segment_id, axis, include_library=False)
            folder = qt.QFileDialog.getExistingDirectory(None, "Export examples to an (empty) library folder")
            if not folder:
                return
            modality = qt.QInputDialog.getItem(None, "Modality", "Modality of the examples:", ["CT", "MR", "other"],
                                               0, False)
            structure = segmentation.GetSegmentation().GetSegment(segment_id).GetName()
            path = self.logic.exportExampleLibrary(folder, found, structure, modality or "CT", axis)
            self.setStatus(f"Examples exported to {path}.")
        except MedSegError as e:
            self.setStatus(str(e), error=True)
        except ImportError as e:  # missing after the check, or installed in this session and not loadable yet
            self.setStatus(deps.import_failure("Export examples", e), error=True)

    # ---- run -----------------------------------------------------------------------------------------------
    def modelName(self):
        return "universeg-v1"

    def prepareRun(self, volume, segmentation, segment_id):
        axis = self.axisCombo.currentText
        found, keep = self.collectExamples(volume, segmentation, segment_id, axis)
        intensity = self.intensityValue(self.intensityCombo)
        return self.logic.core.prepare_universeg(
            volume, found, roi=self.roiSelector.currentNode(), support_size=int(self.supportSizeSpin.value),
            ensemble=int(self.ensembleSpin.value), tta=bool(self.ttaCheckBox.checked),
            intensity=intensity, axis=axis, keep_labelled=keep, segmentation_node=segmentation)

    def maskFromResult(self, result):
        return (result.mask > 0).astype("uint8")

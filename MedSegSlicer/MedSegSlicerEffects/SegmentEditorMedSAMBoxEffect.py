"""Segment Editor effect "MedSAM box": LiteMedSAM / MedSAM ViT-B from a 3-D ROI box."""
import qt
import slicer

from MedSegSlicerEffects.EffectBase import MedSegEffectBase
from MedSegSlicerLib import geometry, segments
from MedSegSlicerLib.core import AXES, MEDSAM_MODELS, PROPAGATIONS
from MedSegSlicerLib.errors import MedSegError

try:  # Slicer's translation function (slicer.i18n, Slicer >= 5.4); plain strings where it is missing
    from slicer.i18n import tr as _
except ImportError:
    def _(text):
        return text


class SegmentEditorMedSAMBoxEffect(MedSegEffectBase):
    effectName = "MedSAM box"
    iconFile = "MedSAMBox.png"

    def __init__(self, scriptedEffect):
        MedSegEffectBase.__init__(self, scriptedEffect)  # sets scriptedEffect.name = effectName (never translated)
        scriptedEffect.title = _("MedSAM box")

    def clone(self):
        import qSlicerSegmentationsEditorEffectsPythonQt as effects

        cloned = effects.qSlicerSegmentEditorScriptedEffect(None)
        cloned.setPythonSource(__file__.replace("\\", "/"))
        return cloned

    def helpText(self):
        return _("<html>Segment one structure with MedSAM from a 3-D box.<p>"
                "1. Select the segment to fill. 2. Draw an ROI around the structure (<b>Draw ROI</b>, two clicks in a "
                "slice view), or pick one, or <b>Fit to segment</b>. 3. <b>Preview</b>, adjust the box and preview "
                "again (cached: fast), then <b>Apply</b> (undoable) or <b>Cancel</b>.<p>"
                "Intensity defaults to the volume's current window/level. Propagation <i>official</i> follows the "
                "LiteMedSAM 3-D procedure; <i>roi</i> uses the box on every slice; <i>stop</i> ends where the object "
                "ends.</html>")

    def setupOptionsFrame(self):
        self.roiSelector = slicer.qMRMLNodeComboBox()
        self.roiSelector.nodeTypes = ["vtkMRMLMarkupsROINode"]
        self.roiSelector.noneEnabled = True
        self.roiSelector.addEnabled = False
        self.roiSelector.removeEnabled = False
        self.roiSelector.setMRMLScene(slicer.mrmlScene)
        self.roiSelector.setToolTip("The box around the structure (an ROI markup; may be rotated or transformed).")
        self.drawRoiButton = qt.QPushButton("Draw ROI")
        self.drawRoiButton.setToolTip("Create a new ROI and place it with two clicks (opposite corners) in a slice view.")
        self.fitRoiButton = qt.QPushButton("Fit to segment")
        self.fitRoiButton.setToolTip("Fit the ROI to the selected segment's extent (plus 2 voxels), or to the "
                                     "middle third of the volume if the segment is empty.")
        roiRow = qt.QHBoxLayout()
        roiRow.addWidget(self.roiSelector)
        roiRow.addWidget(self.drawRoiButton)
        roiRow.addWidget(self.fitRoiButton)
        self.scriptedEffect.addLabeledOptionsWidget("ROI:", roiRow)

        self.modelCombo = qt.QComboBox()
        for model in MEDSAM_MODELS:
            self.modelCombo.addItem(model)
        self.modelCombo.setToolTip("lite-medsam: fast (about 1 s per slice on a CPU). medsam-vit-b: the original "
                                   "MedSAM (slow on a CPU, 375 MB download).")
        self.scriptedEffect.addLabeledOptionsWidget("Model:", self.modelCombo)
        self.intensityCombo = self.addIntensityCombo("How intensities are mapped to the model's 0-255 input.")
        self.scriptedEffect.addLabeledOptionsWidget("Intensity:", self.intensityCombo)
        self.propagationCombo = qt.QComboBox()
        for p in PROPAGATIONS:
            self.propagationCombo.addItem(p)
        self.scriptedEffect.addLabeledOptionsWidget("Propagation:", self.propagationCombo)
        self.axisCombo = qt.QComboBox()
        for a in AXES:
            self.axisCombo.addItem(a)
        self.axisCombo.setToolTip("Slicing direction in voxel space (axial = along the volume's third index).")
        self.scriptedEffect.addLabeledOptionsWidget("Slice axis:", self.axisCombo)
        self.limitSlicesCheckBox = qt.QCheckBox("only slices")
        self.firstSliceSpin = qt.QSpinBox()
        self.lastSliceSpin = qt.QSpinBox()
        for spin in (self.firstSliceSpin, self.lastSliceSpin):
            spin.setRange(0, 100000)
        self.lastSliceSpin.value = 100000
        sliceRow = qt.QHBoxLayout()
        sliceRow.addWidget(self.limitSlicesCheckBox)
        sliceRow.addWidget(self.firstSliceSpin)
        sliceRow.addWidget(qt.QLabel("to"))
        sliceRow.addWidget(self.lastSliceSpin)
        self.scriptedEffect.addLabeledOptionsWidget("Slice range:", sliceRow)
        self.setupRunButtons()

        self.drawRoiButton.connect("clicked()", self.onDrawRoi)
        self.fitRoiButton.connect("clicked()", self.onFitRoi)
        for combo in (self.modelCombo, self.propagationCombo, self.axisCombo):
            combo.connect("currentIndexChanged(int)", self.updateMRMLFromGUI)
        self.roiSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.updateMRMLFromGUI)

    def setMRMLDefaults(self):
        self.scriptedEffect.setParameterDefault("Model", MEDSAM_MODELS[0])
        self.scriptedEffect.setParameterDefault("Propagation", PROPAGATIONS[0])
        self.scriptedEffect.setParameterDefault("Axis", AXES[0])

    def updateGUIFromMRML(self):
        for combo, name in ((self.modelCombo, "Model"), (self.propagationCombo, "Propagation"),
                            (self.axisCombo, "Axis")):
            was = combo.blockSignals(True)
            combo.currentText = self.scriptedEffect.parameter(name)
            combo.blockSignals(was)
        roi = self.scriptedEffect.nodeReference("MedSAMBoxROI")
        was = self.roiSelector.blockSignals(True)
        self.roiSelector.setCurrentNode(roi)
        self.roiSelector.blockSignals(was)
        self.updateButtons()

    def updateMRMLFromGUI(self, *args):
        self.scriptedEffect.setParameter("Model", self.modelCombo.currentText)
        self.scriptedEffect.setParameter("Propagation", self.propagationCombo.currentText)
        self.scriptedEffect.setParameter("Axis", self.axisCombo.currentText)
        self.scriptedEffect.setNodeReference("MedSAMBoxROI", self.roiSelector.currentNode())

    # ---- ROI -----------------------------------------------------------------------------------------------
    def onDrawRoi(self):
        roi = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "MedSAM box")
        roi.CreateDefaultDisplayNodes()
        self.roiSelector.setCurrentNode(roi)
        selection = slicer.app.applicationLogic().GetSelectionNode()
        selection.SetReferenceActivePlaceNodeClassName("vtkMRMLMarkupsROINode")
        selection.SetActivePlaceNodeID(roi.GetID())
        interaction = slicer.app.applicationLogic().GetInteractionNode()
        interaction.SetCurrentInteractionMode(interaction.Place)

    def onFitRoi(self):
        try:
            volume, segmentation, segment_id = self.inputs()
            roi = self.roiSelector.currentNode()
            if roi is None:
                roi = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "MedSAM box")
                roi.CreateDefaultDisplayNodes()
                roi.SetAndObserveTransformNodeID(volume.GetTransformNodeID())
                self.roiSelector.setCurrentNode(roi)
            mask = segments.segment_to_array(segmentation, segment_id, volume)
            box = geometry.mask_bounding_box(mask, margin=2) or geometry.default_box(mask.shape)
            geometry.voxel_box_to_roi(roi, volume, box)
        except MedSegError as e:
            self.setStatus(str(e), error=True)

    # ---- run -----------------------------------------------------------------------------------------------
    def modelName(self):
        return self.modelCombo.currentText

    def prepareRun(self, volume, segmentation, segment_id):
        roi = self.roiSelector.currentNode()
        slice_range = None
        if self.limitSlicesCheckBox.checked:
            slice_range = (int(self.firstSliceSpin.value), int(self.lastSliceSpin.value))
        return self.logic.core.prepare_medsam(
            volume, [roi], model=self.modelCombo.currentText, intensity=self.intensityValue(self.intensityCombo),
            propagation=self.propagationCombo.currentText, axis=self.axisCombo.currentText, slice_range=slice_range,
            segmentation_node=segmentation)

    def maskFromResult(self, result):
        return (result.labels == 1).astype("uint8")


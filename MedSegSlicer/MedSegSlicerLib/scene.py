"""A scene plus the logics the extension uses, either from the running Slicer application or built headless.

Headless (``slicer-core`` wheel, no Qt): :meth:`SceneContext.headless` creates a real ``vtkMRMLScene`` with a
``vtkSlicerApplicationLogic``, its colour nodes, and the Colors, Volumes, Segmentations and Markups module logics
registered on it (this also registers the segmentation representation converters). In Slicer,
:meth:`SceneContext.from_slicer` wraps ``slicer.mrmlScene`` and the application's module logics. The
scenarios, the scripted Logic and the tests use the same object, so they run the same code in both places.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Dict, Optional

from . import geometry
from .errors import InputError


def has_editor_logic() -> bool:
    """``vtkSlicerSegmentEditorLogic`` exists from Slicer 5.10 on (and in slicer-core)."""
    import slicer

    return hasattr(slicer, "vtkSlicerSegmentEditorLogic")


@dataclass
class SceneContext:
    scene: object
    app_logic: object
    volumes_logic: object
    segmentations_logic: object
    markups_logic: Optional[object] = None
    _owned: bool = False
    _editor: Dict[str, object] = field(default_factory=dict)

    # ------------------------------------------------------------------------------------------------------
    @classmethod
    def headless(cls) -> "SceneContext":
        import slicer

        scene = slicer.vtkMRMLScene()
        app = slicer.vtkSlicerApplicationLogic()
        app.SetMRMLScene(scene)
        colors_core = app.GetColorLogic()
        colors_core.SetMRMLScene(scene)
        colors_core.AddDefaultColorNodes()
        app.SetModuleLogic("Colors", colors_core)

        def register(logic_class, name):
            logic = logic_class()
            logic.SetMRMLApplicationLogic(app)
            logic.SetMRMLScene(scene)
            app.SetModuleLogic(name, logic)
            return logic

        volumes = register(slicer.vtkSlicerVolumesLogic, "Volumes")
        segmentations = register(slicer.vtkSlicerSegmentationsModuleLogic, "Segmentations")
        markups = register(slicer.vtkSlicerMarkupsLogic, "Markups")
        return cls(scene, app, volumes, segmentations, markups, _owned=True)

    @classmethod
    def from_slicer(cls) -> "SceneContext":
        import slicer

        return cls(slicer.mrmlScene, slicer.app.applicationLogic(), slicer.modules.volumes.logic(),
                   slicer.modules.segmentations.logic(), slicer.modules.markups.logic())

    # ------------------------------------------------------------------------------------------------------
    def load_volume(self, path: str, name: Optional[str] = None, *, labelmap: bool = False):
        """Load a volume file (NRRD, NIfTI, ...) as a scalar (or labelmap) volume node."""
        if not os.path.exists(path):
            raise InputError(f"Volume file not found: {path}: check the path.")
        name = name or os.path.basename(path).split(".")[0]
        node = self.volumes_logic.AddArchetypeVolume(str(path), name, 1 if labelmap else 0)
        if node is None:
            raise InputError(f"Cannot read {path} as a volume: use NRRD, NIfTI or MHA.")
        return node

    def add_volume_from_array(self, array, ijk_to_ras=None, name: str = "volume", *, labelmap: bool = False):
        """A new volume node holding ``array`` (K, J, I) with the given IJK-to-RAS 4x4."""
        import numpy as np
        from vtk.util import numpy_support
        import vtk

        cls_name = "vtkMRMLLabelMapVolumeNode" if labelmap else "vtkMRMLScalarVolumeNode"
        node = self.scene.AddNewNodeByClass(cls_name, name)
        if ijk_to_ras is not None:
            node.SetIJKToRASMatrix(geometry.numpy_to_matrix(ijk_to_ras))
        arr = np.ascontiguousarray(array)
        image = vtk.vtkImageData()
        image.SetDimensions(arr.shape[2], arr.shape[1], arr.shape[0])
        image.GetPointData().SetScalars(numpy_support.numpy_to_vtk(
            arr.ravel(), deep=True, array_type=numpy_support.get_vtk_array_type(arr.dtype)))
        node.SetAndObserveImageData(image)
        node.CreateDefaultDisplayNodes()
        return node

    def add_segmentation(self, name: str = "Segmentation", volume_node=None):
        node = self.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
        node.CreateDefaultDisplayNodes()
        if volume_node is not None:
            node.SetReferenceImageGeometryParameterFromVolumeNode(volume_node)
        return node

    def remove_node(self, node) -> None:
        """Remove a node with its display and storage nodes (nothing left behind)."""
        helpers = []
        for get_n, get_i in (("GetNumberOfDisplayNodes", "GetNthDisplayNode"),
                             ("GetNumberOfStorageNodes", "GetNthStorageNode")):
            if hasattr(node, get_n):
                helpers += [getattr(node, get_i)(i) for i in range(getattr(node, get_n)())]
        self.scene.RemoveNode(node)
        for h in helpers:
            if h is not None and self.scene.IsNodePresent(h):
                self.scene.RemoveNode(h)

    def add_roi(self, name: str = "ROI"):
        return self.scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", name)

    def add_linear_transform(self, matrix, name: str = "Transform"):
        node = self.scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", name)
        node.SetMatrixTransformToParent(geometry.numpy_to_matrix(matrix))
        return node

    def segment_editor(self, segmentation_node, volume_node, segment_id: str):
        """A ``vtkSlicerSegmentEditorLogic`` + ``vtkMRMLSegmentEditorNode`` on this scene, pointed at the inputs
        (the C++ logic behind the Segment Editor's modify-segment path; Slicer >= 5.10 and slicer-core)."""
        import slicer

        from .editing import configure_editor_logic

        if not has_editor_logic():
            raise InputError("This Slicer has no vtkSlicerSegmentEditorLogic (it appeared in Slicer 5.10): use "
                             "editor_target(), which goes through the Segment Editor widget on older releases.")
        logic = self._editor.get("logic")
        if logic is None:
            logic = slicer.vtkSlicerSegmentEditorLogic()
            logic.SetMRMLScene(self.scene)
            logic.SetMRMLApplicationLogic(self.app_logic)
            node = self.scene.AddNewNodeByClass("vtkMRMLSegmentEditorNode", "MedSegSlicerSegmentEditor")
            self._editor.update(logic=logic, node=node)
        return configure_editor_logic(logic, self._editor["node"], segmentation_node, volume_node, segment_id)

    def editor_target(self, segmentation_node, volume_node, segment_id: str, effect_name: str = "MedSAM box"):
        """What the scenarios apply results through (:func:`.editing.apply_result`).

        In the Slicer application (any release 5.6 - 5.12): the named MedSegSlicer effect, active in a Segment
        Editor widget - the same object the user's Apply goes through. Headless (slicer-core): the editor logic."""
        from . import editing

        if self._owned:  # headless scene built by headless()
            return editing.EditorLogicTarget(self.segment_editor(segmentation_node, volume_node, segment_id))
        import slicer

        widget = self._editor.get("widget")
        if widget is None:
            widget = slicer.qMRMLSegmentEditorWidget()
            widget.setMRMLScene(self.scene)
            node = self.scene.AddNewNodeByClass("vtkMRMLSegmentEditorNode", "MedSegSlicerSelfTestEditor")
            set_node = getattr(widget, "setMRMLSegmentEditorNode", None) or widget.setSegmentEditorNode
            set_node(node)
            self._editor.update(widget=widget, node=node)
        widget.setSegmentationNode(segmentation_node)
        set_source = getattr(widget, "setSourceVolumeNode", None) or widget.setMasterVolumeNode
        set_source(volume_node)
        widget.setCurrentSegmentID(segment_id)
        widget.setActiveEffectByName(effect_name)
        effect = widget.activeEffect()
        if effect is None:
            raise InputError(f"The Segment Editor effect '{effect_name}' is not registered: restart Slicer after "
                             "installing MedSegSlicer.")
        return editing.ScriptedEffectTarget(effect, undo=widget.undo, can_undo=lambda: undo_step_exists(widget))

    @property
    def segment_editor_node(self):
        return self._editor.get("node")

    def clear(self) -> None:
        self._editor.clear()
        self.scene.Clear(0)


def undo_step_exists(widget) -> bool:
    """Whether the Segment Editor widget holds a state to go back to. ``widget.undoEnabled`` only says that undo is
    switched on; the widget enables its Undo button exactly when a step exists (``updateUndoRedoButtonsState``:
    ``SegmentationHistory->IsRestorePreviousStateAvailable()`` in 5.6 / 5.8, ``Logic->CanUndo()`` from 5.10;
    SLICER_API.md row U1), in every release."""
    import slicer

    return bool(slicer.util.findChild(widget, "UndoButton").enabled)

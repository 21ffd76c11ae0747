"""Effect parameters and node references kept on the Segment Editor node (MedSegSlicerLib.effect_state): the same
attributes / roles as Slicer's scriptedEffect.setParameter / setNodeReference, per effect, surviving a scene save."""
from __future__ import annotations


from MedSegSlicerLib.effect_state import EffectState


def test_parameters_and_references_per_effect_round_trip_through_a_saved_scene(slicer_scene, tmp_path):
    ctx = slicer_scene
    editor = ctx.scene.AddNewNodeByClass("vtkMRMLSegmentEditorNode", "editor")
    roi = ctx.add_roi("box")
    a, b = EffectState(editor, "MedSAM box"), EffectState(editor, "UniverSeg examples")
    a.set("Model", "lite-medsam")
    a.set_bool("AddToSegment", True)
    a.set("FirstSlice", 12)
    a.set_reference("ROI", roi)
    b.set("Model", "universeg-v1")
    assert editor.GetAttribute("MedSAM box.Model") == "lite-medsam"       # scriptedEffect.setParameter's key
    assert editor.GetNodeReference("MedSAM box.ROI") is roi                # 5.8+ setNodeReference's role
    assert a.get("Model") == "lite-medsam" and b.get("Model") == "universeg-v1"
    assert a.get_bool("AddToSegment") and not b.get_bool("AddToSegment") and a.get_int("FirstSlice") == 12
    assert b.reference("ROI") is None
    a.set_default("Model", "medsam-vit-b")                                 # a default never overwrites a choice
    b.set_default("Axis", "axial")
    assert a.get("Model") == "lite-medsam" and b.get("Axis") == "axial"
    assert a.get_choice("Model", ["lite-medsam", "medsam-vit-b"]) == "lite-medsam"
    a.set("Model", "removed-model")
    assert a.get_choice("Model", ["lite-medsam", "medsam-vit-b"]) == "lite-medsam"
    a.set("FirstSlice", "junk")
    assert a.get_int("FirstSlice", 3) == 3
    a.set_reference("ROI", None)
    assert a.reference("ROI") is None
    a.set_reference("ROI", roi)
    # saved with the scene: the attributes and the reference are in the editor node's XML
    url = tmp_path / "scene.mrml"
    ctx.scene.SetURL(str(url))
    ctx.scene.Commit()
    text = url.read_text(encoding="utf-8")
    assert "MedSAM box.AddToSegment" in text and f"MedSAM box.ROI:{roi.GetID()}" in text


def test_no_editor_node_is_harmless():
    s = EffectState(None, "MedSAM box")
    assert s.get("x", "d") == "d" and s.reference("ROI") is None
    s.set("x", 1)
    s.set_reference("ROI", None)


def test_a_parameter_change_fires_effect_parameter_modified_not_a_full_refresh(slicer_scene):
    """Issue 22 item 8: as scriptedEffect.setParameter does, a changed value fires only the editor node's
    EffectParameterModified (the Segment Editor widget refreshes everything on ModifiedEvent); an unchanged one
    fires nothing."""
    import vtk

    editor = slicer_scene.scene.AddNewNodeByClass("vtkMRMLSegmentEditorNode", "editor")
    events = []
    editor.AddObserver(vtk.vtkCommand.ModifiedEvent, lambda caller, event: events.append("Modified"))
    editor.AddObserver(editor.EffectParameterModified, lambda caller, event: events.append("EffectParameter"))
    state = EffectState(editor, "MedSAM box")
    state.set("FirstSlice", 3)
    state.set_default("Model", "lite-medsam")
    state.set_default("Model", "medsam-vit-b")                 # defined already: nothing
    state.set("FirstSlice", "3")                               # unchanged: nothing
    assert events == ["EffectParameter", "EffectParameter"]
    assert editor.GetAttribute("MedSAM box.FirstSlice") == "3" and state.get("Model") == "lite-medsam"

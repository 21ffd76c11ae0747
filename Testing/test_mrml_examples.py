"""UniverSeg examples collected from the scene (real MRML): labelled slices of the target segment, segments of the
same and of another segmentation node with their own volume, bad input."""
from __future__ import annotations

import numpy as np
import pytest

import SimpleITK
from medseg_backend import slicing
from MedSegSlicerLib import examples as ex
from MedSegSlicerLib import geometry, labelmaps
from MedSegSlicerLib.errors import InputError, MedSegWarning


@pytest.fixture
def two_volumes(slicer_scene, data_dir):
    """Target: the bundled ct_sm; other: a 42-slice CT of the same subject (ct_sm is its last 30 slices, same
    grid) with its own label map (TotalSegmentator's fast model)."""
    d = data_dir / "totalseg_ct_sm"
    target = slicer_scene.load_volume(str(d / "ct.nii.gz"), "target")
    tlabels = SimpleITK.GetArrayFromImage(SimpleITK.ReadImage(str(d / "labels.nii.gz")))
    o = data_dir / "totalseg_ct"
    other = slicer_scene.load_volume(str(o / "ct.nii.gz"), "atlas")
    olabel_node = slicer_scene.load_volume(str(o / "labels_fast.nii.gz"), "atlas labels", labelmap=True)
    olabels = geometry.volume_to_array(olabel_node).array   # in the node's own index order
    return slicer_scene, target, tlabels, other, olabels


def test_labelled_slices_of_target_segment(two_volumes):
    ctx, target, tlabels, other, olabels = two_volumes
    liver = (tlabels == 5).astype(np.uint8)
    partial = np.zeros_like(liver)
    partial[[4, 9, 14]] = liver[[4, 9, 14]]
    seg = ctx.add_segmentation("work", target)
    sid = labelmaps.write_mask(seg, partial, target, name="liver")
    got = ex.from_labelled_slices(target, seg, sid, "axial")
    assert got.slices == (4, 9, 14) and got.source == "labelled-slices" and got.name == "liver"
    np.testing.assert_array_equal(got.label, partial)
    np.testing.assert_array_equal(got.image, SimpleITK.GetArrayFromImage(SimpleITK.ReadImage(
        target.GetStorageNode().GetFileName())))
    # other axes count the slices along that axis
    assert ex.from_labelled_slices(target, seg, sid, "coronal").slices == \
        tuple(int(j) for j in np.nonzero(partial.any(axis=(0, 2)))[0])
    empty = labelmaps.write_mask(seg, np.zeros_like(liver), target, name="empty")
    with pytest.raises(InputError, match="'empty' has no labelled slices yet: paint"):
        ex.from_labelled_slices(target, seg, empty, "axial")


def test_segments_of_another_segmentation_with_its_volume(two_volumes):
    ctx, target, tlabels, other, olabels = two_volumes
    atlas = ctx.add_segmentation("atlas seg", other)        # reference volume = the atlas CT
    ids = [labelmaps.write_mask(atlas, olabels == v, other, name=n) for v, n in ((5, "liver"), (1, "spleen"))]
    got = ex.from_segments(atlas, ids)                        # volume found through the reference geometry
    assert [g.name for g in got] == ["atlas seg/liver", "atlas seg/spleen"]
    assert all(g.source == "volume" for g in got)
    np.testing.assert_array_equal(got[0].label, olabels == 5)
    np.testing.assert_array_equal(got[0].image, geometry.volume_to_array(other).array)
    assert got[0].slices == tuple(int(k) for k in np.nonzero((olabels == 5).any(axis=(1, 2)))[0])
    assert got[0].image is got[1].image                        # one copy of the volume per segmentation


def test_segmentation_drawn_on_other_grid_is_resampled_to_its_volume(two_volumes):
    """Example segments stored on the target's grid but meant for the atlas volume: resampled onto the atlas grid."""
    ctx, target, tlabels, other, olabels = two_volumes
    seg = ctx.add_segmentation("drawn on target", target)
    sid = labelmaps.write_mask(seg, tlabels == 5, target, name="liver")
    got = ex.from_segments(seg, [sid], other)[0]
    assert got.label.shape == geometry.volume_shape(other)
    np.testing.assert_array_equal(got.label, labelmaps.segment_to_array(seg, sid, other))
    # ct_sm covers 30 of the 42 slices of the same subject at the same spacing: the liver lands inside
    assert 0 < got.label.sum() and abs(int(got.label.sum()) - int((tlabels == 5).sum())) < 0.02 * (tlabels == 5).sum()


def test_missing_volume_empty_segment_target_exclusion_and_no_examples(two_volumes):
    ctx, target, tlabels, other, olabels = two_volumes
    bare = ctx.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "no volume")
    sid = labelmaps.write_mask(bare, tlabels == 5, target, name="liver")
    bare.RemoveNodeReferenceIDs(bare.GetReferenceImageGeometryReferenceRole())
    with pytest.raises(InputError, match="'no volume' has no source volume: choose the volume"):
        ex.from_segments(bare, [sid])
    seg = ctx.add_segmentation("seg", target)
    full = labelmaps.write_mask(seg, tlabels == 5, target, name="liver")
    empty = labelmaps.write_mask(seg, np.zeros_like(tlabels), target, name="nothing")
    with pytest.warns(MedSegWarning, match="'nothing' of 'seg' is empty.*skipped"):
        got = ex.from_segments(seg, [full, empty])
    assert [g.name for g in got] == ["seg/liver"]
    assert ex.from_segments(seg, [full], exclude=(seg, full)) == []
    with pytest.raises(InputError, match="No examples: label a few slices"):
        ex.require_examples([])


def test_keep_labelled_slices_keeps_the_users_slices():
    pred = np.zeros((4, 5, 6), np.uint8)
    pred[:, 1:3, 1:3] = 1
    user = np.zeros_like(pred)
    user[2, 3:5, 3:6] = 1
    out = slicing.keep_slices(pred, user, "axial")
    np.testing.assert_array_equal(out[2], user[2])
    np.testing.assert_array_equal(out[[0, 1, 3]], pred[[0, 1, 3]])
    out = slicing.keep_slices(pred, user, "sagittal")
    for i in (3, 4, 5):
        np.testing.assert_array_equal(out[:, :, i], user[:, :, i])


def test_scene_examples_cut_into_the_slices_the_engine_uses(two_volumes):
    from medseg_backend import universeg

    ctx, target, tlabels, other, olabels = two_volumes
    seg = ctx.add_segmentation("work", target)
    partial = np.zeros_like(tlabels, np.uint8)
    partial[[5, 10]] = (tlabels == 5)[[5, 10]]
    sid = labelmaps.write_mask(seg, partial, target, name="liver")
    atlas = ctx.add_segmentation("atlas seg", other)
    aid = labelmaps.write_mask(atlas, olabels == 5, other, name="liver")
    arrays = [ex.from_labelled_slices(target, seg, sid, "axial")] + ex.from_segments(atlas, [aid])
    assert all(isinstance(e, universeg.Example) for e in arrays)   # one example type from the scene to the engine
    out = ex.cut_into_slices(arrays, "axial", max_slices_per_volume=6)
    assert all(isinstance(e, universeg.Example) for e in out)
    assert 2 < len(out) <= 2 + 6
    first = [e for e in out[:2]]
    np.testing.assert_array_equal(np.asarray(first[0].label) > 0, partial[5] > 0)
    np.testing.assert_array_equal(np.asarray(first[0].image), geometry.volume_to_array(target).array[5])


def test_library_with_any_label_value_becomes_binary_examples(tmp_path):
    """A library whose structure has label value 5 feeds the effect (which runs with label 1) correctly."""
    from medseg_backend.universeg import Example
    from medseg_backend.universeg.library import export_library

    from MedSegSlicerLib import examples as ex

    rng = np.random.default_rng(0)
    img = rng.normal(size=(32, 32)).astype(np.float32)
    lab = np.zeros((32, 32), np.uint8)
    lab[8:20, 10:22] = 5
    lab[0:3, 0:3] = 2  # another structure: must not leak into the examples
    export_library(tmp_path / "lib", [Example(img, lab, "a")], structure="liver", modality="CT", label=5)
    got, manifest = ex.from_library(str(tmp_path / "lib"))
    assert manifest["label"] == 5 and len(got) == 1
    assert set(np.unique(got[0].label)) == {0, 1}
    assert got[0].label.sum() == 12 * 12


def test_chosen_slices_only_are_examples_and_the_default_box_covers_the_structure(slicer_scene, data_dir):
    """Re-running UniverSeg after an Apply: every slice holds voxels, so the user picks which ones are examples;
    without an ROI the run is limited to the labelled slices' box plus a margin, which covers the organ."""
    d = data_dir / "totalseg_ct_sm"
    target = slicer_scene.load_volume(str(d / "ct.nii.gz"), "target")
    labels = SimpleITK.GetArrayFromImage(SimpleITK.ReadImage(str(d / "labels.nii.gz")))
    liver = (labels == 5).astype(np.uint8)
    seg = slicer_scene.add_segmentation("work", target)
    sid = labelmaps.write_mask(seg, liver, target, name="liver")          # "after an Apply": all slices
    got = ex.from_labelled_slices(target, seg, sid, "axial", slices=[8, 14, 20])
    assert got.slices == (8, 14, 20)
    assert set(np.nonzero(got.label.any(axis=(1, 2)))[0].tolist()) == {8, 14, 20}
    np.testing.assert_array_equal(got.label[14], liver[14])
    with pytest.raises(InputError, match=r"Slice\(s\) \[40\].*hold no voxels"):
        ex.from_labelled_slices(target, seg, sid, "axial", slices=[14, 40])
    # few-shot: slices 9, 14, 19 labelled -> default box: slices 4..24, liver's in-plane box + margin
    partial = np.zeros_like(liver)
    partial[[9, 14, 19]] = liver[[9, 14, 19]]
    seg2 = slicer_scene.add_segmentation("few", target)
    sid2 = labelmaps.write_mask(seg2, partial, target, name="liver")
    arrays = ex.from_labelled_slices(target, seg2, sid2, "axial")
    box = ex.default_roi_box(arrays, "axial")
    assert (box[2], box[5]) == (4, 24)
    inplane = slicing.bbox3d(partial)
    assert box[0] < inplane[0] and box[1] < inplane[1] and box[3] > inplane[3] and box[4] > inplane[4]
    # the box holds most of the liver on its slices
    inside = liver[box[2]:box[5] + 1, box[1]:box[4] + 1, box[0]:box[3] + 1].sum()
    assert inside >= 0.95 * liver[box[2]:box[5] + 1].sum()

"""The scripted Logic's batch calls are transactional (issue 13, item 3 and defect 4): a call that fails changes
nothing in the scene - no segment touched, no node left behind - and several ROIs are written all or none."""
from __future__ import annotations

import types

import numpy as np
import pytest

from medseg_backend import slicing
from MedSegSlicerLib import geometry, labelmaps, segments
from MedSegSlicerLib.segmenter import Segmenter
from MedSegSlicerLib.errors import InputError
from MedSegSlicerLib.jobs import JobOutcome


@pytest.fixture
def sample(ct_sample):
    slicer_scene, vol, labels = ct_sample
    seg = slicer_scene.add_segmentation("seg", vol)
    a = labelmaps.write_mask(seg, labels == 3, vol, name="kidney_left")
    b = labelmaps.write_mask(seg, labels == 2, vol, name="kidney_right")
    core = Segmenter(slicer_scene, device="cpu")
    return slicer_scene, vol, labels, seg, (a, b), core


def _roi(ctx, vol, box, name="R"):
    roi = ctx.add_roi(name)
    geometry.voxel_box_to_roi(roi, vol, box)
    return roi


def _snapshot(ctx, seg, vol):
    ids = segments.segment_ids(seg)
    return (ctx.scene.GetNumberOfNodes(), ids, [labelmaps.segment_to_array(seg, s, vol).tobytes() for s in ids])


def _no_run(core):
    def refuse(*a, **k):
        raise AssertionError("the model ran although the inputs were invalid")
    core.run = refuse


def _fake_result(core, labels):
    """Skip the model (tested elsewhere): the run 'returns' this label map, to test what is written."""
    def run(prepared, progress=None, cancel=None):
        return JobOutcome("succeeded", result=types.SimpleNamespace(labels=labels, messages=[]))
    core.run = run


def test_invalid_second_segment_id_changes_nothing_and_runs_nothing(sample):
    ctx, vol, labels, seg, (a, b), core = sample
    before = _snapshot(ctx, seg, vol)
    _no_run(core)
    rois = [_roi(ctx, vol, slicing.bbox3d(labels == 3), "A"),
            _roi(ctx, vol, slicing.bbox3d(labels == 2), "B")]
    before = _snapshot(ctx, seg, vol)
    with pytest.raises(InputError, match="not in segmentation"):
        core.segment_with_medsam(vol, rois, seg, segment_ids=[a, "no-such-id"])
    assert _snapshot(ctx, seg, vol) == before


def test_count_mismatch_leaves_no_new_node(sample):
    ctx, vol, labels, seg, _, core = sample
    _no_run(core)
    rois = [_roi(ctx, vol, slicing.bbox3d(labels == 3), "A")]
    n = ctx.scene.GetNumberOfNodes()
    with pytest.raises(InputError, match="1 boxes but 2 names"):
        core.segment_with_medsam(vol, rois, None, names=["x", "y"])
    assert ctx.scene.GetNumberOfNodes() == n


def test_segment_ids_without_segmentation_refused(sample):
    ctx, vol, labels, seg, (a, _), core = sample
    _no_run(core)
    rois = [_roi(ctx, vol, slicing.bbox3d(labels == 3), "A")]
    n = ctx.scene.GetNumberOfNodes()
    with pytest.raises(InputError, match="without their segmentation"):
        core.segment_with_medsam(vol, rois, None, segment_ids=[a])
    assert ctx.scene.GetNumberOfNodes() == n


@pytest.mark.parametrize("box, match", [
    ((40, 30, 5, 40, 30, 5), "1 voxel wide"),          # single voxel
    ((40, 30, 5, 40, 60, 20), "1 voxel wide along x"),  # zero width in x
    ((40, 30, 5, 70, 30, 20), "1 voxel wide along y"),  # zero height in y
])
def test_degenerate_rois_are_refused_before_the_run(sample, box, match):
    ctx, vol, labels, seg, (a, _), core = sample
    _no_run(core)
    roi = _roi(ctx, vol, box, "tiny")
    before = _snapshot(ctx, seg, vol)
    with pytest.raises(InputError, match=match):
        core.segment_with_medsam(vol, [roi], seg, segment_ids=[a])
    assert _snapshot(ctx, seg, vol) == before


def test_zero_size_roi_node_is_refused(sample):
    ctx, vol, labels, seg, (a, _), core = sample
    _no_run(core)
    roi = ctx.add_roi("flat")
    roi.SetCenter(*geometry.apply(geometry.volume_ijk_to_world(vol), np.array([[50.0, 40.0, 10.0]]))[0])
    roi.SetSize(0.0, 0.0, 0.0)
    before = _snapshot(ctx, seg, vol)
    with pytest.raises(InputError, match="voxel wide"):
        core.segment_with_medsam(vol, [roi], seg, segment_ids=[a])
    assert _snapshot(ctx, seg, vol) == before


def test_empty_result_in_replace_mode_does_not_wipe_the_segment(sample):
    ctx, vol, labels, seg, (a, b), core = sample
    _fake_result(core, np.zeros(labels.shape, np.uint8))
    roi = _roi(ctx, vol, slicing.bbox3d(labels == 3), "A")
    before = _snapshot(ctx, seg, vol)
    assert int((labels == 3).sum()) > 2000
    with pytest.raises(InputError, match="is empty"):
        core.segment_with_medsam(vol, [roi], seg, segment_ids=[a])
    assert _snapshot(ctx, seg, vol) == before


def test_several_rois_are_written_all_or_none(sample, monkeypatch):
    ctx, vol, labels, seg, (a, b), core = sample
    result = np.zeros(labels.shape, np.uint8)
    result[labels == 3] = 2        # box 1 -> right kidney's segment gets the left kidney, and vice versa
    result[labels == 2] = 1
    _fake_result(core, result)
    rois = [_roi(ctx, vol, slicing.bbox3d(labels == 3), "A"),
            _roi(ctx, vol, slicing.bbox3d(labels == 2), "B")]
    before = _snapshot(ctx, seg, vol)
    real = labelmaps.write_mask
    calls = []

    def failing_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("disk full while writing")
        return real(*args, **kwargs)

    monkeypatch.setattr(labelmaps, "write_mask", failing_second)
    with pytest.raises(RuntimeError, match="disk full"):
        core.segment_with_medsam(vol, rois, seg, segment_ids=[a, None], names=["A", "new one"])
    assert _snapshot(ctx, seg, vol) == before          # A restored, the new segment removed
    # and a new segmentation node created by the call is removed again
    calls.clear()
    n = ctx.scene.GetNumberOfNodes()
    with pytest.raises(RuntimeError, match="disk full"):
        core.segment_with_medsam(vol, rois, None)
    assert ctx.scene.GetNumberOfNodes() == n
    # without the fault both are written, each replaced on its own ROI's slices and kept as it was elsewhere
    monkeypatch.setattr(labelmaps, "write_mask", real)
    old = {sid: labelmaps.segment_to_array(seg, sid, vol) for sid in (a, b)}
    seg2, ids, _ = core.segment_with_medsam(vol, rois, seg, segment_ids=[a, b])
    for sid, value, mask in ((a, 1, labels == 3), (b, 2, labels == 2)):
        box = slicing.bbox3d(mask)
        expected = old[sid].copy()
        expected[box[2]:box[5] + 1] = (result == value)[box[2]:box[5] + 1]
        np.testing.assert_array_equal(labelmaps.segment_to_array(seg, sid, vol), expected)


def test_several_rois_become_several_standard_structures(sample):
    """Issue 16: several ROIs -> several segments with standard names, colours and terminology codes."""
    from MedSegSlicerLib import terminology

    ctx, vol, labels, seg, (a, b), core = sample
    result = np.zeros(labels.shape, np.uint8)
    result[labels == 3] = 1
    result[labels == 1] = 2
    _fake_result(core, result)
    rois = [_roi(ctx, vol, slicing.bbox3d(labels == 3), "A"), _roi(ctx, vol, slicing.bbox3d(labels == 1), "B")]
    out, ids, _ = core.segment_with_medsam(vol, rois, None, structures=["kidney_left", "Spleen"])
    segs = [out.GetSegmentation().GetSegment(i) for i in ids]
    assert [s.GetName() for s in segs] == ["left kidney", "spleen"]
    for s, name in zip(segs, ("left kidney", "spleen")):
        std = terminology.lookup(name)
        np.testing.assert_allclose(s.GetColor(), std.color01, atol=1e-6)
        tag = vtk_reference_tag(s)
        assert tag == std.tag() and "SCT^64033007^Kidney" in terminology.lookup("left kidney").tag()
    np.testing.assert_array_equal(labelmaps.segment_to_array(out, ids[0], vol), labels == 3)
    # an unknown structure is refused before the run, naming the list
    _no_run(core)
    n = ctx.scene.GetNumberOfNodes()
    with pytest.raises(InputError, match="'kidney' is not in the list of standard structures: use one of liver"):
        core.segment_with_medsam(vol, rois, None, structures=["kidney", "spleen"])
    assert ctx.scene.GetNumberOfNodes() == n


def vtk_reference_tag(segment):
    import vtk

    value = vtk.reference("")
    assert segment.GetTag(segment.GetTerminologyEntryTagName(), value)
    return str(value)

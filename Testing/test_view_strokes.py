"""Issue 26: paint and erase in the slice view (Ctrl-drag, Ctrl+Shift-drag) through the Qt-free editing session, on
slicer-core's real slice nodes; and which slices become UniverSeg's examples by themselves. No model runs here (the
journeys in ``test_journeys.py`` run them)."""
from __future__ import annotations

import numpy as np
import pytest

from medseg_backend import slicing
from MedSegSlicerLib import brush, editing, geometry, labelmaps, preview
from MedSegSlicerLib.errors import InputError
from MedSegSlicerLib.segmenter import Segmenter
from MedSegSlicerLib.session import EditingSession
from MedSegSlicerLib.session_examples import ExampleSlices
from MedSegSlicerLib.session_views import ViewEvent

from test_journeys import red_view, xy_of


@pytest.fixture
def view(ct_sample):
    ctx, volume, labels = ct_sample
    node, _logic = red_view(ctx, volume)
    return ctx, volume, labels, node


def ras_of(volume, ijk):
    return geometry.apply(geometry.volume_ijk_to_world(volume), np.asarray(ijk, float)[None, :])[0]


def show(node, volume, k):
    node.JumpSliceByOffsetting(*ras_of(volume, (0, 0, k)))


def test_a_stroke_is_a_capsule_of_the_brush_on_the_slice_under_the_pointer(view):
    ctx, volume, labels, node = view
    k = 6
    show(node, volume, k)
    a, b = ras_of(volume, (40, 50, k)), ras_of(volume, (70, 50, k))
    axis, kk, plane = brush.stroke_plane(volume, node, [xy_of(node, a), xy_of(node, b)], diameter_mm=10.0)
    assert (axis, kk) == ("axial", k) and plane.shape == labels.shape[1:]
    sx, sy, _ = geometry.voxel_spacing(volume)
    rows, cols = np.nonzero(plane)
    # every voxel within 5 mm of the segment is in, none further: compare with the exact distance
    jj, ii = np.mgrid[0:plane.shape[0], 0:plane.shape[1]]
    t = np.clip((ii - 40) / 30.0, 0, 1)
    dist = np.hypot((ii - (40 + 30 * t)) * sx, (jj - 50) * sy)
    np.testing.assert_array_equal(plane, dist <= 5.0)
    dot = brush.stroke_plane(volume, node, [xy_of(node, a)], diameter_mm=10.0)[2]    # a click: one disk
    assert dot.sum() < plane.sum() and dot[50, 40]


def test_a_stroke_outside_the_volume_is_refused(view):
    ctx, volume, labels, node = view
    show(node, volume, 6)
    far = ras_of(volume, (-200, -200, 6))
    with pytest.raises(InputError, match="outside the volume"):
        brush.stroke_plane(volume, node, [xy_of(node, far)])
    with pytest.raises(InputError, match="positive"):
        brush.stroke_plane(volume, node, [(1.0, 1.0)], diameter_mm=0)


def session_for(ctx, volume, **kw):
    seg = ctx.add_segmentation("seg", volume)
    sid = seg.GetSegmentation().AddEmptySegment("", "Segment_1")
    logic = ctx.segment_editor(seg, volume, sid)
    segmenter = Segmenter(ctx, device="cpu", worker=False)       # nothing runs in these tests
    session = EditingSession("test", scene=lambda: ctx.scene, editor_node=lambda: ctx.segment_editor_node,
                             runner=lambda: segmenter.runner, prepare=None, mask_from_result=None,
                             app_logic=lambda: ctx.app_logic,
                             apply_target=lambda: editing.EditorLogicTarget(logic), **kw)
    return session, seg, sid, logic


def drag(session, node, ras_points, modifiers):
    xys = [xy_of(node, p) for p in ras_points]
    used = [session.view_event(ViewEvent("Red", "press", xys[0], modifiers=modifiers))]
    used += [session.view_event(ViewEvent("Red", "move", xy, modifiers=modifiers)) for xy in xys[1:]]
    assert session.drag_shape()[1] == ("paint" if modifiers == ("ctrl",) else "erase")
    used.append(session.view_event(ViewEvent("Red", "release", xys[-1], modifiers=modifiers)))
    return all(used)


def test_universeg_strokes_write_the_segment_undoably_and_other_modifiers_are_slicers(view):
    ctx, volume, labels, node = view
    session, seg, sid, logic = session_for(ctx, volume, strokes="segment", boxes=False)
    show(node, volume, 6)
    line = [ras_of(volume, (40, 50, 6)), ras_of(volume, (70, 50, 6))]
    assert drag(session, node, line, ("ctrl",)) and not session.error, session.status
    after_paint = labelmaps.segment_to_array(seg, sid, volume)
    assert after_paint[6].sum() > 0 and after_paint[np.arange(after_paint.shape[0]) != 6].sum() == 0
    assert drag(session, node, line[:1], ("ctrl", "shift")) and not session.error, session.status
    after_erase = labelmaps.segment_to_array(seg, sid, volume)
    assert 0 < after_erase.sum() < after_paint.sum() and not after_erase[6, 50, 40]
    logic.Undo()
    np.testing.assert_array_equal(labelmaps.segment_to_array(seg, sid, volume), after_paint)
    # Shift (Slicer pans), Ctrl+Alt (rotates) and a plain drag (UniverSeg draws no box) stay Slicer's
    for modifiers in (("shift",), ("ctrl", "alt"), ()):
        assert not session.view_event(ViewEvent("Red", "press", (5.0, 5.0), modifiers=modifiers))
        assert session.drag is None


def test_medsam_paint_needs_a_box_and_a_slice_inside_it_and_no_waiting_preview(view):
    ctx, volume, labels, node = view
    session, seg, sid, logic = session_for(ctx, volume)
    show(node, volume, 6)
    line = [ras_of(volume, (40, 50, 6)), ras_of(volume, (70, 50, 6))]
    before = labelmaps.segment_to_array(seg, sid, volume).copy()
    drag(session, node, line, ("ctrl",))
    assert session.error and "drag a box around the structure first" in session.status
    session.set_box((30, 30, 8, 80, 80, 12))
    drag(session, node, line, ("ctrl",))
    assert session.error and "outside the segment's box (axial slices 8-12)" in session.status
    mask = np.zeros(labels.shape, np.uint8)
    mask[10, 40:60, 40:60] = 1
    preview.show(ctx.scene, ctx.segment_editor_node, seg, sid, mask, volume, owner="test")
    show(node, volume, 10)
    drag(session, node, [ras_of(volume, (40, 50, 10))], ("ctrl",))
    assert session.error and "preview is waiting" in session.status
    np.testing.assert_array_equal(labelmaps.segment_to_array(seg, sid, volume), before)   # nothing written


def test_example_slices_are_the_painted_ones_then_the_used_ones_plus_the_corrected(view):
    ctx, volume, labels, node = view
    session, seg, sid, logic = session_for(ctx, volume)
    tracker = ExampleSlices()
    target = editing.EditorLogicTarget(logic)

    def paint(k, value=1):
        m = np.zeros(labels.shape, np.uint8)
        m[k, 40:50, 40:50] = 1
        editing.apply_result(target, m, volume, mode="add" if value else "remove", slab=slicing.bbox3d(m))

    for k in (4, 8, 12):
        paint(k)
    assert tracker.slices(volume, seg, sid, "axial") == [4, 8, 12]          # before any run: every labelled slice
    tracker.used(seg, sid, "axial", [4, 8, 12])
    full = np.zeros(labels.shape, np.uint8)
    full[3:14, 38:52, 38:52] = 1                                           # the model filled in 3-13
    editing.apply_result(target, full, volume, mode="set", slab=(30, 30, 3, 60, 60, 13))
    tracker.applied(volume, seg, sid)
    assert tracker.slices(volume, seg, sid, "axial") == [4, 8, 12]          # the model's slices are not examples
    paint(6, value=0)                                                      # a correction (erase) on slice 6
    assert tracker.slices(volume, seg, sid, "axial") == [4, 6, 8, 12]
    assert tracker.slices(volume, seg, sid, "coronal") == sorted(          # another axis: its labelled slices
        int(k) for k in slicing.labelled_slices(labelmaps.segment_to_array(seg, sid, volume), "coronal"))


def test_run_all_boxes_refuses_before_any_work(view):
    """Run all boxes: no box yet, or a hidden segment among those with a box: one line, nothing started or written."""
    ctx, volume, labels, node = view
    session, seg, sid, logic = session_for(ctx, volume)
    assert not session.run_all() and "No segment has a box yet" in session.status
    session.set_box((30, 30, 8, 80, 80, 12))
    second = seg.GetSegmentation().AddEmptySegment("", "Segment_2")
    ctx.segment_editor_node.SetSelectedSegmentID(second)
    session.set_box((20, 20, 4, 60, 60, 10))
    assert [s for s, _roi in session.segment_boxes(seg)] == [sid, second]
    seg.GetDisplayNode().SetSegmentVisibility(second, False)
    assert not session.run_all() and "Segment 'Segment_2' is hidden" in session.status
    assert not session.busy and session.phase == "idle"


def test_typed_example_slices_are_read_once_with_one_line_errors():
    from medseg_backend.textforms import MAX_SLICE_LIST, parse_slice_list

    assert parse_slice_list("") is None and parse_slice_list("  ") is None
    assert parse_slice_list("20, 8;14 8") == [8, 14, 20]
    with pytest.raises(InputError, match="must list slice numbers, e.g. 8, 14, 20"):
        parse_slice_list("8, x")
    with pytest.raises(InputError, match="negative slice number"):
        parse_slice_list("-1, 4")
    with pytest.raises(InputError, match=f"at most {MAX_SLICE_LIST}"):
        parse_slice_list(",".join(["1"] * (MAX_SLICE_LIST + 1)))


def test_example_candidates_and_fit_box_follow_the_painted_slices(view):
    """The UniverSeg panel's lists and *Fit to examples*, Qt-free: other segments are offered (not the target, not a
    preview), and the fitted box covers the painted slices plus the margin a run without a box uses."""
    from MedSegSlicerLib import examples as ex
    from MedSegSlicerLib.session_examples import UniverSegOptions, example_candidates, fit_box

    ctx, volume, labels, node = view
    session, seg, sid, logic = session_for(ctx, volume)
    other = seg.GetSegmentation().AddEmptySegment("", "Other")
    mask = np.zeros(labels.shape, np.uint8)
    mask[10, 40:60, 40:60] = 1
    preview.show(ctx.scene, ctx.segment_editor_node, seg, sid, mask, volume, owner="test")
    assert [(n, s) for n, s, _text in example_candidates(ctx.scene, seg, sid)] == [(seg.GetID(), other)]
    preview.drop(ctx.scene, ctx.segment_editor_node, owner="test")
    target = editing.EditorLogicTarget(logic)
    for k in (6, 12):
        m = np.zeros(labels.shape, np.uint8)
        m[k, 40:50, 40:50] = 1
        editing.apply_result(target, m, volume, mode="add", slab=slicing.bbox3d(m))
    tracker = ExampleSlices()
    box = fit_box(volume, seg, sid, UniverSegOptions(), tracker)
    expected = ex.default_roi_box(ex.from_labelled_slices(volume, seg, sid, "axial", slices=[6, 12]), "axial")
    assert box == expected and box[2] < 6 and box[5] > 12
    assert fit_box(volume, seg, sid, UniverSegOptions(example_slices=[6]), tracker)[5] < 12


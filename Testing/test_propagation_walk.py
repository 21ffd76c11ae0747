"""MedSAM's propagation as a generator (:mod:`medseg_backend.medsam.walk`): one walk yields each slice's result,
the previews and, last, why each side stopped; it writes nothing, the caller does. Each mode is a strategy object
from one registry keyed by the names of ``choices.PROPAGATIONS``. Real LiteMedSAM weights on the bundled CT."""
import numpy as np
import pytest

from medseg_backend.choices import PROPAGATIONS
from medseg_backend.errors import CancelledError, InputError
from medseg_backend.intensity import apply_intensity, parse_preset
from medseg_backend.io import read_image
from medseg_backend.medsam import MedSAMEngine
from medseg_backend.medsam.propagation import END_PROFILE_BELOW, MODES, Stop, mode_for, propagate
from medseg_backend.medsam.walk import (CANCELLED, EMPTY_SLICES, END_OF_BOX, OBJECT_ENDED, Preview, Side,
                                        SliceResult, WalkEnd)
from medseg_backend.progress import CancelToken
from medseg_backend.slicing import bbox3d, project_box, to_slices

KIDNEY_LEFT = 3


@pytest.fixture(scope="module")
def ct(data_dir):
    img = read_image(str(data_dir / "totalseg_ct_sm" / "ct.nii.gz")).array
    labels = read_image(str(data_dir / "totalseg_ct_sm" / "labels.nii.gz")).array
    return img, labels


@pytest.fixture(scope="module")
def engine():
    return MedSAMEngine("lite-medsam", device="cpu", precision="fp32", runtime="torch")


def _box(labels, z0, z1):
    b = list(bbox3d(labels == KIDNEY_LEFT))
    b[2], b[5] = z0, z1
    return tuple(b)


def test_one_mode_per_choice_and_nothing_else():
    assert set(MODES) == set(PROPAGATIONS)
    assert all(mode_for(name).name == name for name in PROPAGATIONS)
    assert isinstance(mode_for("stop", 3), Stop) and mode_for("stop", 3).stop_after == 3
    with pytest.raises(InputError, match="Unknown propagation 'sideways': use official, adaptive"):
        mode_for("sideways")


def _work(img):
    return to_slices(apply_intensity(img, parse_preset("ct-abdomen")), 0)


def test_a_walk_yields_every_slice_then_one_end_and_writes_nothing(engine, ct):
    img, labels = ct
    work = _work(img)
    before = work.copy()
    s0, s1, b2d = project_box(_box(labels, 10, 14), 0)
    steps = list(propagate(engine.predictor, work, s0, s1, b2d, mode_for("official")))
    np.testing.assert_array_equal(work, before)
    assert isinstance(steps[-1], WalkEnd) and not any(isinstance(s, WalkEnd) for s in steps[:-1])
    results = [s for s in steps if isinstance(s, SliceResult)]
    assert [r.slice for r in results] == [12, 13, 14, 11, 10]  # the middle slice, up, then down
    assert all(r.show and r.record.slice == r.slice and r.box is not None for r in results)
    assert all(r.mask.dtype == bool and r.probability.dtype == np.float32 for r in results)
    assert steps[-1].stopped == {"up": END_OF_BOX, "down": END_OF_BOX}
    assert steps[-1].summary["slices_run"] == 5


def test_the_modes_stop_rules():
    """``stop`` ends a side after ``stop_after`` empty slices in a row; ``adaptive`` ends it (without writing the
    slice) at an empty mask or one off the object, never on its start slice; the others never end early (the walk
    over real slices, and each reason in a run's summary, are checked by ``test_propagation_golden.py``)."""
    side = Side("up")
    side.empty_run = 1
    assert Stop(2).ends_after(side) is None and Stop(1).ends_after(side) == EMPTY_SLICES
    assert mode_for("official").ends_after(side) is None
    rng = (0.0, 1.0)
    ada = mode_for("adaptive")
    assert ada.ends_before(False, 0, 1.0, 10, rng) == OBJECT_ENDED
    assert ada.ends_before(False, 5, END_PROFILE_BELOW - 0.01, 10, rng) == OBJECT_ENDED  # off it, shrinking
    assert ada.ends_before(False, 50, END_PROFILE_BELOW - 0.01, 10, rng) is None         # off it, but growing
    assert ada.ends_before(True, 0, 0.0, None, rng) is None
    assert mode_for("official").ends_before(False, 0, 0.0, 10, rng) is None


def test_a_cancelled_guarded_walk_ends_cancelled_with_no_result(engine, ct):
    """Cancelled while ``guarded``'s official walk is being shown: the walk ends, its sides cancelled, before any
    result to write; the engine then raises and returns nothing."""
    img, labels = ct
    work = _work(img)
    s0, s1, b2d = project_box(_box(labels, 6, 18), 0)
    token = CancelToken()
    steps = []
    for step in propagate(engine.predictor, work, s0, s1, b2d, mode_for("guarded"), cancel=token):
        steps.append(step)
        token.cancel()
    assert all(isinstance(s, Preview) for s in steps[:-1]) and 0 < len(steps) - 1 < s1 - s0 + 1
    assert steps[-1].cancelled and set(steps[-1].stopped.values()) == {CANCELLED}
    token = CancelToken()
    with pytest.raises(CancelledError, match="nothing was written"):
        engine.segment_volume(img, [_box(labels, 6, 18)], propagation="guarded", cancel=token,
                              on_slice=lambda obj, k, mask: token.cancel())

"""MedSAM's 3-D propagation gives what it gave before it was rebuilt as a generator with one strategy object per
mode: every mode of ``choices.PROPAGATIONS`` on the bundled abdominal CT with the official LiteMedSAM weights,
compared with ``Testing/Data/propagation_golden/golden.npz``, recorded from the code before the change by
``Testing/Data/make_propagation_golden.py`` (the cases and how each is run are that script's). Labels,
probabilities (their sha256), slice records, run summaries and the progressive preview's ``on_slice`` calls must
be the same, bit for bit.

Floating-point results of the encoder can differ on another CPU kind or torch build than the one the file was
recorded with (``made_with``); there the probabilities are compared to 1/255 and the labels to 99.5 % of the
written voxels instead, and the slice records' object, slice and prompt source exactly."""
import importlib.util
import json

import numpy as np
import pytest

import fixture_data
from medseg_backend.choices import PROPAGATIONS
from medseg_backend.io import read_image


def _maker():
    spec = importlib.util.spec_from_file_location("make_propagation_golden",
                                                  fixture_data.DATA_DIR / "make_propagation_golden.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


GOLDEN = "propagation_golden/golden.npz"
#: the whole-stomach cases (30 slices, adaptive's moved start, guarded taking adaptive's side) take the longest
SLOW = ("adaptive_stomach", "guarded_stomach")


def _cases():
    return json.loads(str(np.load(fixture_data.path(GOLDEN))["cases"]))


@pytest.fixture(scope="module")
def golden(data_dir):
    return dict(np.load(fixture_data.path(GOLDEN)))


@pytest.fixture(scope="module")
def maker():
    return _maker()


@pytest.fixture(scope="module")
def run(maker, data_dir):
    image = read_image(str(data_dir / "totalseg_ct_sm" / "ct.nii.gz")).array
    labels = read_image(str(data_dir / "totalseg_ct_sm" / "labels.nii.gz")).array
    engine = maker.engine()
    return lambda case: maker.run_case(engine, image, labels, case)


def test_the_cases_cover_every_mode(golden):
    assert {c["propagation"] for c in json.loads(str(golden["cases"]))} == set(PROPAGATIONS)


@pytest.mark.parametrize("case", [pytest.param(c, id=c["name"], marks=[pytest.mark.slow] if c["name"] in SLOW else [])
                                  for c in _cases()])
def test_each_mode_gives_what_it_gave_before(golden, maker, run, case):
    got = run(case)
    want = {k.split("/", 1)[1]: v for k, v in golden.items() if k.startswith(case["name"] + "/")}
    name = case["name"]
    _check_stopped(case, json.loads(str(got["summary"])))
    if str(golden["made_with"]) == maker.made_with():
        np.testing.assert_array_equal(got["labels"], want["labels"], err_msg=name)
        assert str(got["probs_sha256"]) == str(want["probs_sha256"]), f"{name}: probabilities differ"
        assert list(got["events_sha256"]) == list(want["events_sha256"]), f"{name}: on_slice calls differ"
        assert _summary(got) == _summary(want), name
    else:
        written = (got["labels"] > 0) | (want["labels"] > 0)
        assert np.mean(got["labels"][written] == want["labels"][written]) >= 0.995, name
        assert np.abs(got["probs_u8"].astype(int) - want["probs_u8"]).max() <= 1, name
        assert len(got["events_sha256"]) == len(want["events_sha256"]), name
        g, w = _summary(got), _summary(want)
        assert [(r["object"], r["slice"], r["source"]) for r in g["records"]] == \
            [(r["object"], r["slice"], r["source"]) for r in w["records"]], name


def _check_stopped(case, summary) -> None:
    """Why each side stopped agrees with the summary: where ``adaptive`` saw the object end, a side the direction
    leaves out, ``stop``'s empty slices, else the end of the box."""
    from medseg_backend.medsam.walk import EMPTY_SLICES, END_OF_BOX, NOT_WALKED, OBJECT_ENDED

    for p in summary["per_box"]:
        for side in ("up", "down"):
            if p["ended_at"][side] is not None:
                want = {OBJECT_ENDED}
            elif case.get("direction", "both") not in ("both", side):
                want = {NOT_WALKED}
            else:
                want = {END_OF_BOX, EMPTY_SLICES} if case["propagation"] == "stop" else {END_OF_BOX}
            assert p["stopped"][side] in want, (case["name"], side, p["stopped"])


def _summary(arrays) -> dict:
    """The recorded summary without what the rebuilt walk adds (``stopped``: why each side ended)."""
    s = json.loads(str(arrays["summary"]))
    for p in s["per_box"]:
        p.pop("stopped", None)
    return s

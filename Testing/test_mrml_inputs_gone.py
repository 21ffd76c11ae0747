"""Inputs deleted from the scene before a run starts (the panel still holds the node): the run is refused as it is
prepared, with one line that says the node is no longer in the scene - not run and then discarded "while the model
ran" (issue 24, item 6)."""
from __future__ import annotations

import pytest

from MedSegSlicerLib.errors import InputError
from MedSegSlicerLib.jobs import NodeGuard
from MedSegSlicerLib.segmenter import Segmenter


def test_volume_deleted_before_the_run_is_refused_as_prepared(ct_sample):
    ctx, vol, _ = ct_sample
    seg = ctx.add_segmentation("seg", vol)
    ctx.remove_node(vol)                                  # deleted in the Data module; the effect still holds it
    with pytest.raises(InputError) as info:
        Segmenter(ctx, worker=False).prepare_medsam(vol, [(30, 30, 10, 60, 60, 14)], segmentation_node=seg)
    msg = str(info.value)
    assert msg == ("Volume 'ct' is no longer in the scene (it was deleted): select a volume of the scene and run "
                   "again.")
    assert "while the model ran" not in msg


def test_segmentation_deleted_before_the_run_is_refused(ct_sample):
    ctx, vol, _ = ct_sample
    seg = ctx.add_segmentation("seg", vol)
    ctx.remove_node(seg)
    with pytest.raises(InputError, match="^'seg' is no longer in the scene \\(it was deleted\\)"):
        NodeGuard(ctx.scene, vol, [seg])


def test_deleted_during_the_run_still_says_so(ct_sample):
    ctx, vol, _ = ct_sample
    seg = ctx.add_segmentation("seg", vol)
    guard = NodeGuard(ctx.scene, vol, [seg])
    assert guard.problem() is None
    ctx.remove_node(vol)
    assert guard.problem() == "Volume 'ct' was deleted while the model ran: result discarded; run again."

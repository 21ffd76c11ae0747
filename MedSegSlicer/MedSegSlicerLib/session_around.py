"""The editing session's encoding before the box (:mod:`.session`, issue 27 item 4): while the MedSAM effect is
active, the worker encodes the slices around the slice in view, nearest first, in its background, so that the first
box there is usually encoded already; any run pre-empts it between two slices, leaving the effect stops it. A mixin of
:class:`.session.EditingSession` (which holds ``encode_around``, ``around`` and ``around_at``)."""
from __future__ import annotations

import logging

from . import geometry
from .errors import MedSegError

log = logging.getLogger("MedSegSlicer")

#: Encoding before the box restarts around the slice in view once the view is this many slices from its centre.
AROUND_STEP = 4


class EncodingAround:
    """Encoding before the box, for :class:`.session.EditingSession`."""

    def view_shown(self, volume, axis: str, k: int) -> bool:
        """The effect is active and a slice view shows ``volume`` at slice ``k`` along ``axis``: encode the slices
        around it, nearest first, in the worker's background (issue 27 item 4), so that the first box there is
        usually encoded already. Any run pre-empts it between two slices (it never delays one). Nothing when the
        effect does not encode, one of our jobs or the panel's runs, the dependencies are missing, or an encoding
        around a slice less than :data:`AROUND_STEP` slices away is running. True when one was started."""
        if self.encode_around is None or volume is None or self.running_ours or self.busy or not self.installed():
            return False
        here = (volume.GetID(), axis, int(k))
        if self.around is not None and self.around.running and self.around_at is not None and \
                self.around_at[:2] == here[:2] and abs(self.around_at[2] - here[2]) < AROUND_STEP:
            return False
        try:
            self.around = self.encode_around(volume, axis, int(k))
        except MedSegError as e:
            log.info("MedSegSlicer: no encoding before the box: %s", e)
            self.around = None
        self.around_at = here if self.around is not None else None
        if self.around is not None:
            self.wake()
        return self.around is not None

    def view_at(self, slice_node) -> bool:
        """A slice view was shown or the pointer moved in it: :meth:`view_shown` for the editor's source volume at
        the slice that view shows (the slice node's real SliceToRAS). False when there is no volume or the view
        is oblique to it."""
        params = self.editor_node()
        volume = params.GetSourceVolumeNode() if params else None
        if volume is None or slice_node is None or self.encode_around is None:
            return False
        try:
            axis = geometry.axis_for_slice_node(volume, slice_node)
            k = geometry.slice_index_for_view(volume, slice_node, axis)
        except MedSegError:
            return False
        return self.view_shown(volume, axis, k)

    def stop_encoding(self) -> None:
        """Leaving the effect: the encoding before the box stops (what it encoded stays cached)."""
        if self.around is not None:
            self.around.stop()
            self.around = None
        self.around_at = None

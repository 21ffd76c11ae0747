"""MedSegSlicer's Segment Editor effects (Qt). ``setPythonSource`` looks the effect classes up on this package."""
from .SegmentEditorMedSAMBoxEffect import SegmentEditorMedSAMBoxEffect  # noqa: F401
from .SegmentEditorUniverSegEffect import SegmentEditorUniverSegEffect  # noqa: F401

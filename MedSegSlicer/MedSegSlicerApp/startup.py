"""What the module does once Slicer has started: register its two Segment Editor effects and the bundled sample CT
in the Sample Data module (both never break Slicer's startup: a failure is logged)."""
import logging
import os

import slicer

#: the module's folder (MedSegSlicer.py, MedSegSlicerEffects/, Resources/)
MODULE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EFFECT_FILES = ("SegmentEditorMedSAMBoxEffect.py", "SegmentEditorUniverSegEffect.py")
EFFECT_NAMES = ("MedSAM box", "UniverSeg examples")


def registerEffects():
    """Register the two effects with the Segment Editor (called once Slicer has started)."""
    try:
        import qSlicerSegmentationsEditorEffectsPythonQt as qSlicerSegmentationsEditorEffects

        import MedSegSlicerEffects  # noqa: F401  - the package exposes both effect classes to setPythonSource

        folder = os.path.join(MODULE_DIR, "MedSegSlicerEffects")
        for filename in EFFECT_FILES:
            instance = qSlicerSegmentationsEditorEffects.qSlicerSegmentEditorScriptedEffect(None)
            instance.setPythonSource(os.path.join(folder, filename).replace("\\", "/"))
            instance.self().register()
    except Exception:  # noqa: BLE001 - never break Slicer's startup
        logging.exception("MedSegSlicer: could not register the Segment Editor effects")


def registerSampleData():
    """The bundled abdominal CT (TotalSegmentator test case, Apache-2.0; installed with the module) in the Sample
    Data module, so the tutorials start from Sample Data > MedSegSlicer. It is a local file: the button loads it
    (no download)."""
    try:
        import SampleData
        from MedSegSlicerLib import sample_data

        folder = sample_data.find_sample_dir(os.path.join(MODULE_DIR, "MedSegSlicer.py"))
        if folder is None:
            return
        path = os.path.join(folder, sample_data.SAMPLE_IMAGE)
        icon = os.path.join(MODULE_DIR, "Resources", "Icons", "MedSegSlicer.png")

        def load(source=None):     # Slicer 5.6+ passes the source; older releases nothing
            node = slicer.util.loadVolume(path, {"name": sample_data.SAMPLE_NAME})
            slicer.util.setSliceViewerLayers(background=node, fit=True)
            return node

        SampleData.SampleDataLogic.registerCustomSampleDataSource(
            category="MedSegSlicer", sampleName=sample_data.SAMPLE_NAME,
            uris=["file:///" + path.replace("\\", "/").lstrip("/")], fileNames=[sample_data.SAMPLE_IMAGE],
            nodeNames=[sample_data.SAMPLE_NAME], thumbnailFileName=icon, customDownloader=load)
    except Exception:  # noqa: BLE001 - never break Slicer's startup
        logging.exception("MedSegSlicer: could not register the sample CT in Sample Data")

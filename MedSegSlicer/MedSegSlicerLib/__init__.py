"""Qt-free MRML layer of MedSegSlicer: importable with only ``slicer-core`` (no Qt, no ``slicer.app``).

Data flows one way: node -> array + geometry -> backend -> mask -> node.

* :mod:`.geometry` - every IJK <-> RAS computation (volumes, ROIs, transforms, voxel boxes);
* :mod:`.segments` - segment lookup, IDs, adding, visibility and the checks before a write;
* :mod:`.labelmaps` - segments <-> arrays on a volume grid (oriented images, resampling), writing masks (new /
  replace / add / all or none) and the Segment Editor's modifier labelmap;
* :mod:`.examples` - UniverSeg examples from segments, other segmentation nodes and example libraries;
* :mod:`.jobs` - the job runner (model work in the worker process, through
  :mod:`medseg_backend.worker.client`; cancel, progress, stale-input detection);
* :mod:`.logic` - the module's logic without Qt (settings, installs, weights, batch API; questions via callbacks);
* :mod:`.segmenter` - prepares, starts, polls and cancels runs for the effects and the Logic; batch writes;
* :mod:`.scene` - a scene with the needed logics, headless or from the running application;
* :mod:`.sample_data` - the bundled sample CT offered in Sample Data (where it is);
* :mod:`.shortcuts` - the effects' keyboard shortcuts (keys, and when they are enabled);
* :mod:`.deps` - which Python packages are missing (installation itself is done by the installer the Qt
  module gives :mod:`.logic`).
"""
__all__ = ["geometry", "segments", "labelmaps", "examples", "jobs", "segmenter", "logic", "scene",
           "sample_data", "deps"]

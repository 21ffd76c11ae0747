"""Slicer's segmentation file (.seg.nrrd) written and read by medseg_backend.segnrrd, checked against Slicer's own
reader and writer (slicer-core's vtkMRMLSegmentationStorageNode): names, colours, voxels and geometry."""
from __future__ import annotations

import os
import re

import numpy as np
import pytest
import SimpleITK as sitk

from medseg_backend import segnrrd
from medseg_backend.errors import InputError
from MedSegSlicerLib import labelmaps, segments


@pytest.fixture
def sample(slicer_scene, data_dir):
    d = data_dir / "totalseg_ct_sm"
    vol = slicer_scene.load_volume(str(d / "ct.nii.gz"), "ct")
    img = sitk.ReadImage(str(d / "labels.nii.gz"))
    return slicer_scene, vol, sitk.GetArrayFromImage(img), img


def _geometry(img):
    return dict(spacing=img.GetSpacing(), origin=img.GetOrigin(), direction=img.GetDirection())


def _slicer_read(ctx, path):
    node = ctx.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "loaded")
    storage = node.CreateDefaultStorageNode()
    storage.SetFileName(str(path))
    assert storage.ReadData(node) == 1
    return node


def test_file_written_here_opens_in_slicer_with_names_colours_and_voxels(sample, tmp_path):
    ctx, vol, labels, img = sample
    masks = {"liver": labels == 5, "spleen": labels == 1}
    layers, segs = segnrrd.from_masks(masks, colors={"liver": (0.8, 0.3, 0.2), "spleen": (0.1, 0.5, 0.9)})
    assert layers.shape[0] == 1                       # no overlap: one layer
    path = tmp_path / "liver.seg.nrrd"
    segnrrd.write(str(path), layers, segs, **_geometry(img))
    node = _slicer_read(ctx, path)
    seg = node.GetSegmentation()
    assert [seg.GetNthSegment(i).GetName() for i in range(seg.GetNumberOfSegments())] == ["liver", "spleen"]
    np.testing.assert_allclose(seg.GetSegment(segments.segment_id_by_name(node, "liver")).GetColor(),
                               (0.8, 0.3, 0.2), atol=1e-6)
    for name, m in masks.items():
        np.testing.assert_array_equal(labelmaps.segment_to_array(node, segments.segment_id_by_name(node, name), vol),
                                      m.astype(np.uint8))


def test_overlapping_segments_go_to_layers_and_read_back_in_slicer(sample, tmp_path):
    ctx, vol, labels, img = sample
    box = np.zeros(labels.shape, bool)
    box[5:20, 20:70, 30:100] = True
    masks = {"liver": labels == 5, "region": box}        # overlap
    layers, segs = segnrrd.from_masks(masks)
    assert layers.shape[0] == 2 and [s.layer for s in segs] == [0, 1]
    path = tmp_path / "two.seg.nrrd"
    segnrrd.write(str(path), layers, segs, **_geometry(img))
    node = _slicer_read(ctx, path)
    for name, m in masks.items():
        np.testing.assert_array_equal(labelmaps.segment_to_array(node, segments.segment_id_by_name(node, name), vol),
                                      m.astype(np.uint8))
    back = segnrrd.read(str(path))
    for name, m in masks.items():
        np.testing.assert_array_equal(back.mask(name), m)


@pytest.mark.parametrize("overlap", [False, True])
def test_file_saved_by_slicer_reads_here(sample, tmp_path, overlap):
    ctx, vol, labels, img = sample
    node = ctx.add_segmentation("saved", vol)
    masks = {"kidney_left": labels == 3, "kidney_right": labels == 2}
    if overlap:
        big = np.zeros(labels.shape, bool)
        big[3:25, 10:90, 10:110] = True
        masks["abdomen"] = big
    for name, m in masks.items():
        labelmaps.write_mask(node, m, vol, name=name, color=(0.2, 0.4, 0.6))
    path = tmp_path / "saved.seg.nrrd"
    storage = node.CreateDefaultStorageNode()
    storage.SetFileName(str(path))
    assert storage.WriteData(node) == 1
    f = segnrrd.read(str(path))
    assert f.names == list(masks)
    assert all(np.allclose(s.color, (0.2, 0.4, 0.6)) for s in f.segments)
    np.testing.assert_allclose(f.spacing, img.GetSpacing(), atol=1e-5)
    np.testing.assert_allclose(f.origin, img.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(f.direction, img.GetDirection(), atol=1e-6)
    for name, m in masks.items():
        got = f.mask(name)
        assert got.shape == labels.shape, "Slicer wrote the reference grid (no cropping expected here)"
        np.testing.assert_array_equal(got, m)


def test_write_is_all_or_nothing_and_respects_umask(sample, tmp_path):
    ctx, vol, labels, img = sample
    layers, segs = segnrrd.from_masks({"liver": labels == 5})
    old = os.umask(0o022)
    try:
        path = tmp_path / "a.seg.nrrd"
        segnrrd.write(str(path), layers, segs, **_geometry(img))
        assert (path.stat().st_mode & 0o777) == 0o644
    finally:
        os.umask(old)
    with pytest.raises(InputError, match="layer 3"):
        segnrrd.write(str(tmp_path / "b.seg.nrrd"), layers, [segnrrd.Segment("x", layer=3)], **_geometry(img))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.seg.nrrd"]     # no partial or temp file


def test_bad_files_are_named_with_a_fix(tmp_path, data_dir):
    with pytest.raises(InputError, match="not found"):
        segnrrd.read(str(tmp_path / "missing.seg.nrrd"))
    junk = tmp_path / "junk.seg.nrrd"
    junk.write_bytes(b"this is not nrrd")
    with pytest.raises(InputError, match="Cannot read .* as NRRD"):
        segnrrd.read(str(junk))
    plain = tmp_path / "plain.nrrd"
    import nrrd
    nrrd.write(str(plain), np.zeros((4, 4, 4), np.uint8))
    with pytest.raises(InputError, match="not a Slicer segmentation"):
        segnrrd.read(str(plain))
    layers, segs = segnrrd.from_masks({"a": np.ones((2, 3, 4), bool)})
    ok = tmp_path / "ok.seg.nrrd"
    segnrrd.write(str(ok), layers, segs, spacing=(1, 1, 1), origin=(0, 0, 0), direction=np.eye(3).ravel())
    with pytest.raises(InputError, match="No segment 'b'.*segments: a"):
        segnrrd.read(str(ok)).mask("b")


def test_example_library_labels_are_slicer_segmentations_and_old_label_maps_still_read(slicer_scene, data_dir,
                                                                                       tmp_path):
    """A library exported here: each label opens in Slicer as a segmentation named after the structure; a
    library whose labels are plain label maps (the first format) loads to the same examples."""
    import json

    from medseg_backend.universeg.library import export_library, load_library
    from medseg_backend.universeg.examples import Example

    d = data_dir / "totalseg_ct_sm"
    ct = sitk.GetArrayFromImage(sitk.ReadImage(str(d / "ct.nii.gz")))
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(d / "labels.nii.gz")))
    exs = [Example(ct[k], np.where(labels[k] == 5, 5, 0), f"slice {k}") for k in (10, 15)]
    exs.append(Example(ct[8:12], np.where(labels[8:12] == 5, 5, 0), "slab"))        # a 3-D example too
    out = export_library(tmp_path / "lib", exs, structure="liver", modality="CT", label=5)
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert all(item["label"].endswith(".seg.nrrd") for item in manifest["items"])
    node = _slicer_read(slicer_scene, out / manifest["items"][0]["label"])
    seg = node.GetSegmentation()
    assert seg.GetNumberOfSegments() == 1 and seg.GetNthSegment(0).GetName() == "liver"
    loaded, m = load_library(out)
    assert [e.name for e in loaded] == ["slice 10", "slice 15", "slab"]
    for e, orig in zip(loaded, exs):
        np.testing.assert_array_equal(e.label, orig.label)
        np.testing.assert_array_equal(e.image, orig.image)
    # the first format: plain label maps named in the manifest
    for i, item in enumerate(manifest["items"]):
        old = f"labels/{i:03d}.nrrd"
        sitk.WriteImage(sitk.GetImageFromArray(exs[i].label.astype(np.uint8)), str(out / old))
        (out / item["label"]).unlink()
        item["label"] = old
    (out / "manifest.json").write_text(json.dumps(manifest))
    again, _ = load_library(out)
    for e, orig in zip(again, exs):
        np.testing.assert_array_equal(e.label, orig.label)


# ------------------------------------------------------------------------- names that would corrupt a file --
BAD_NAMES = [("liver\nright", "a newline"), ("liver\rright", "a carriage return"), ("liver\tright", "a tab"),
             ("liver\x00", "a NUL"), ("liver\x1b[31m", "U+001B"), ("liver\u2028right", "U+2028")]


@pytest.mark.parametrize("name,words", BAD_NAMES)
def test_control_character_in_a_segment_name_refused_before_writing(tmp_path, name, words):
    """A newline in a name used to end the header line: the file was written, and failed to read later."""
    with pytest.raises(InputError, match=re.escape(f"holds a control character ({words}")):
        segnrrd.write(str(tmp_path / "s.seg.nrrd"), np.ones((2, 3, 4), np.uint8), [segnrrd.Segment(name=name)],
                      spacing=(1, 1, 1), origin=(0, 0, 0), direction=np.eye(3).ravel())
    assert os.listdir(tmp_path) == []


def test_letters_outside_ascii_refused_in_a_file_written_here(tmp_path):
    """pynrrd writes an ASCII header: 'Lèvre' gave a UnicodeEncodeError traceback."""
    with pytest.raises(InputError, match=r"'Lèvre' holds 'è' \(U\+00E8 LATIN SMALL LETTER E WITH GRAVE\).*ASCII"):
        segnrrd.write(str(tmp_path / "s.seg.nrrd"), np.ones((2, 3, 4), np.uint8), [segnrrd.Segment(name="Lèvre")],
                      spacing=(1, 1, 1), origin=(0, 0, 0), direction=np.eye(3).ravel())
    assert os.listdir(tmp_path) == []
    assert segnrrd.check_name("Lèvre") == "Lèvre"          # a Slicer segment may hold it (Slicer writes its files)
    assert segnrrd.check_name("left kidney (upper pole)", in_file=True) == "left kidney (upper pole)"


@pytest.mark.parametrize("name,words", BAD_NAMES[:1] + [("Lèvre", "ASCII")])
def test_cli_library_export_with_a_bad_structure_name_one_line(capsys, tmp_path, name, words):
    from faults_util import blob_2d, error_line, run_cli, snapshot, write_image

    ex = write_image(tmp_path / "e.nrrd", blob_2d())
    lab = write_image(tmp_path / "l.nrrd", (blob_2d() > 100).astype(np.uint8))
    before = snapshot(tmp_path)
    code, out, err = run_cli(capsys, "library", "export", tmp_path / "lib", "--examples", f"{ex}:{lab}",
                             "--structure", name)
    assert code == 2, out + err
    line = error_line(err)
    assert line.startswith("error: Structure name ") and words in line
    assert snapshot(tmp_path) == before


def test_slicer_route_segment_name_with_a_newline_refused(sample, tmp_path):
    """The Slicer layer: a segment the module makes and a library exported from segments use the same check."""
    from MedSegSlicerLib import examples
    from medseg_backend.universeg.examples import Example

    ctx, vol, labels, img = sample
    node = ctx.add_segmentation("seg", vol)
    with pytest.raises(InputError, match="holds a control character \\(a newline"):
        labelmaps.write_mask(node, (labels == 5).astype(np.uint8), vol, name="liver\nright")
    assert node.GetSegmentation().GetNumberOfSegments() == 0
    ex = Example(image=np.zeros((8, 8), np.float32), label=np.eye(8, dtype=np.uint8), name="e")
    with pytest.raises(InputError, match="holds a control character \\(a newline"):
        examples.export(str(tmp_path / "lib"), [ex], structure="liver\nright")
    assert os.listdir(tmp_path) == []


# ------------------------------------------------------------------ slicerio (issue 25 item 8) and its fallback --
#: The fields of the two-segment file below as the hand-written pynrrd writer made them before slicerio, with one
#: change: a segment without tags has "|" (slicerio's, as older Slicer releases expect) where it had "" (Slicer
#: reads both as no tag: vtkMRMLSegmentationStorageNode::SetSegmentTagsFromString skips items without ':').
LIVER_TERM = ("Segmentation category and type - 3D Slicer General Anatomy list~SCT^123037004^Anatomical Structure"
              "~SCT^10200004^Liver~^^~Anatomic codes - DICOM master list~^^~^^")
TODAYS_FIELDS = {
    "type": "uint8", "dimension": 4, "space": "left-posterior-superior", "sizes": [2, 5, 4, 3],
    "kinds": ["list", "domain", "domain", "domain"], "encoding": "gzip",
    "Segmentation_MasterRepresentation": "Binary labelmap",
    "Segmentation_ContainedRepresentationNames": "Binary labelmap|",
    "Segmentation_ReferenceImageExtentOffset": "0 0 0",
    "Segment0_ID": "liver", "Segment0_Name": "liver", "Segment0_NameAutoGenerated": "0",
    "Segment0_Color": "0.866667 0.509804 0.396078", "Segment0_ColorAutoGenerated": "0", "Segment0_LabelValue": "1",
    "Segment0_Layer": "0", "Segment0_Extent": "1 3 1 2 1 1",
    "Segment0_Tags": f"TerminologyEntry:{LIVER_TERM}|Segmentation.Status:completed|",
    "Segment1_ID": "region", "Segment1_Name": "region", "Segment1_NameAutoGenerated": "0", "Segment1_Color": "1 0 0",
    "Segment1_ColorAutoGenerated": "0", "Segment1_LabelValue": "1", "Segment1_Layer": "1",
    "Segment1_Extent": "2 4 2 3 0 1", "Segment1_Tags": "|",
}


def _two_segments():
    a = np.zeros((3, 4, 5), bool)
    a[1, 1:3, 1:4] = True
    b = np.zeros((3, 4, 5), bool)
    b[0:2, 2:4, 2:5] = True
    layers, segs = segnrrd.from_masks({"liver": a, "region": b},
                                      colors={"liver": (221 / 255, 130 / 255, 101 / 255), "region": (1, 0, 0)})
    segs[0].tags = {"TerminologyEntry": LIVER_TERM, "Segmentation.Status": "completed"}
    geometry = dict(spacing=(0.5, 0.75, 2.0), origin=(10.0, -20.0, 30.0), direction=(0, 1, 0, -1, 0, 0, 0, 0, 1))
    return {"liver": a, "region": b}, layers, segs, geometry


@pytest.fixture(params=["slicerio", "pynrrd fallback"])
def backend(request, monkeypatch):
    """Each test runs with slicerio (the test environment installs the `segnrrd` extra) and without it."""
    if request.param == "slicerio":
        assert segnrrd._slicerio() is not None, "slicerio is part of the test environment (medseg-backend[segnrrd])"
    else:
        monkeypatch.setattr(segnrrd, "_slicerio", lambda: None)
    return request.param


def test_fields_are_todays_and_slicer_reads_names_colours_terminology(backend, slicer_scene, tmp_path):
    import nrrd

    masks, layers, segs, geometry = _two_segments()
    path = tmp_path / "two.seg.nrrd"
    segnrrd.write(str(path), layers, segs, **geometry)
    header = nrrd.read_header(str(path))
    for key, value in TODAYS_FIELDS.items():
        got = header[key]
        assert (list(got) if isinstance(value, list) else got) == value, (backend, key, got)
    np.testing.assert_allclose(header["space directions"][1:], [[0, -0.5, 0], [0.75, 0, 0], [0, 0, 2]])
    np.testing.assert_allclose(header["space origin"], [10, -20, 30])
    assert sorted(k for k in header if k.startswith("Segment")) == sorted(k for k in TODAYS_FIELDS
                                                                          if k.startswith("Segment"))
    # read back here: the same segments, tags (terminology included), geometry and voxels
    back = segnrrd.read(str(path))
    assert [(s.name, s.id, s.layer, s.label_value, s.tags) for s in back.segments] == \
        [(s.name, s.id, s.layer, s.label_value, s.tags) for s in segs]
    np.testing.assert_allclose([s.color for s in back.segments], [(0.866667, 0.509804, 0.396078), (1, 0, 0)])
    assert back.spacing == geometry["spacing"] and back.origin == geometry["origin"]
    np.testing.assert_allclose(back.direction, geometry["direction"])
    for name, m in masks.items():
        np.testing.assert_array_equal(back.mask(name), m)
    # read by Slicer: names, colours, the terminology tag, no stray tag from the "|" of a segment without tags
    seg = _slicer_read(slicer_scene, path).GetSegmentation()
    liver, region = seg.GetNthSegment(0), seg.GetNthSegment(1)
    assert (liver.GetName(), region.GetName()) == ("liver", "region")
    np.testing.assert_allclose(liver.GetColor(), (0.866667, 0.509804, 0.396078), atol=1e-6)
    import vtk

    for segment, name, value in ((liver, "TerminologyEntry", LIVER_TERM), (liver, "Segmentation.Status", "completed")):
        got = vtk.reference("")
        assert segment.GetTag(name, got) and str(got) == value, (backend, name)
    assert not region.HasTag("") and region.GetTerminology() != LIVER_TERM    # "|" alone makes no tag


def test_slicerio_reads_and_writes_the_file_when_installed(monkeypatch, tmp_path):
    """With the `segnrrd` extra installed, the file goes through slicerio's write_segmentation / read_segmentation."""
    import slicerio.segmentation as sio

    calls = []
    for name in ("write_segmentation", "read_segmentation"):
        real = getattr(sio, name)
        monkeypatch.setattr(sio, name, lambda *a, _real=real, _name=name, **k: calls.append(_name) or _real(*a, **k))
    _masks, layers, segs, geometry = _two_segments()
    segnrrd.write(str(tmp_path / "a.seg.nrrd"), layers, segs, **geometry)
    segnrrd.read(str(tmp_path / "a.seg.nrrd"))
    assert calls == ["write_segmentation", "read_segmentation"]


def test_terminology_of_a_file_saved_by_slicer_reads_here(backend, sample, tmp_path):
    """A segment Slicer saved with a standard structure's terminology: its TerminologyEntry tag reads back as is."""
    from MedSegSlicerLib import terminology

    ctx, vol, labels, img = sample
    node = ctx.add_segmentation("saved", vol)
    sid = labelmaps.write_mask(node, labels == 5, vol, name="liver")
    structure = terminology.lookup("liver")
    terminology.apply_to_segment(node.GetSegmentation().GetSegment(sid), structure)
    path = tmp_path / "saved.seg.nrrd"
    storage = node.CreateDefaultStorageNode()
    storage.SetFileName(str(path))
    assert storage.WriteData(node) == 1
    (seg,) = segnrrd.read(str(path)).segments
    assert seg.name == structure.name and seg.tags["TerminologyEntry"] == structure.tag()
    np.testing.assert_array_equal(segnrrd.read(str(path)).mask(structure.name), labels == 5)

"""Our resamplers equal OpenCV INTER_AREA and skimage's anti-aliased bicubic resize (test-only oracles), and
the intensity presets reproduce the windowed volumes of the reference pipeline."""
import cv2
import numpy as np
import pytest
from skimage import transform

from medseg_backend.intensity import apply_intensity, parse_preset, resolve_preset
from medseg_backend.errors import InputError
from medseg_backend.medsam.resize import resize_area_u8, resize_skimage_bicubic
from medseg_backend.medsam.transforms import lite_box, lite_prepare, lite_resized_size, vit_box, vit_prepare

SHAPES = [(512, 512), (181, 258), (155, 225), (101, 122), (76, 42), (300, 700), (768, 768), (1000, 37), (257, 256)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("channels", [None, 3])
def test_area_resize_is_opencv_inter_area(shape, channels):
    rng = np.random.default_rng(sum(shape))
    img = rng.integers(0, 256, shape if channels is None else shape + (channels,), dtype=np.uint8)
    nh, nw = lite_resized_size(*shape)
    ours = resize_area_u8(img, (nh, nw))
    ref = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA)
    assert ours.shape == ref.shape
    np.testing.assert_array_equal(ours, ref)


def test_area_resize_of_label_masks_matches_opencv():
    """The 3-D propagation resizes the previous label image (values = object index) this way."""
    rng = np.random.default_rng(3)
    for shape, size in [((101, 122), (212, 256)), ((512, 512), (256, 256)), ((181, 258), (180, 256))]:
        for idx in (1, 2, 4):
            m = (rng.random(shape) > 0.6).astype(np.uint8) * idx
            np.testing.assert_array_equal(resize_area_u8(m, size),
                                          cv2.resize(m, size[::-1], interpolation=cv2.INTER_AREA))


@pytest.mark.parametrize("shape", [(512, 512), (181, 258), (155, 225)])
def test_bicubic_resize_is_skimage(shape):
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, shape + (3,), dtype=np.uint8)
    ref = transform.resize(img, (1024, 1024), order=3, preserve_range=True, anti_aliasing=True)
    ours = resize_skimage_bicubic(img, (1024, 1024))
    assert np.max(np.abs(ours - ref)) < 1e-9
    np.testing.assert_array_equal(ours.astype(np.uint8), ref.astype(np.uint8))


def test_lite_prepare_pads_and_normalises():
    rng = np.random.default_rng(0)
    img = rng.integers(10, 200, (155, 225, 3), dtype=np.uint8)
    prep = lite_prepare(img)
    assert prep.tensor.shape == (3, 256, 256) and prep.resized_size == (176, 256)
    assert prep.tensor.min() == 0.0 and prep.tensor.max() == 1.0
    assert not prep.tensor[:, 176:, :].any()  # zero padding at the bottom
    grey = lite_prepare(img[..., 0])
    np.testing.assert_array_equal(grey.tensor[0], grey.tensor[2])


def test_box_scaling_rules():
    # LiteMedSAM: int(v * (256 / max(H, W))) with the ratio computed first (truncation at the edges)
    np.testing.assert_array_equal(lite_box([289, 203, 315, 229], 512, 512), [144, 101, 157, 114])
    np.testing.assert_array_equal(lite_box([103, 44, 121, 58], 155, 225), [117, 50, 137, 65])
    np.testing.assert_array_equal(lite_box([126, 16, 145, 27], 181, 258), [125, 15, 143, 26])
    # ViT-B: per-axis float scaling to 1024
    np.testing.assert_allclose(vit_box([10, 20, 30, 40], 100, 200), [51.2, 204.8, 153.6, 409.6], rtol=1e-6)


def test_vit_prepare_stretches_to_1024():
    img = np.random.default_rng(2).integers(0, 256, (181, 258), dtype=np.uint8)
    prep = vit_prepare(img)
    assert prep.tensor.shape == (3, 1024, 1024)
    assert prep.tensor.min() == 0.0 and prep.tensor.max() == 1.0


@pytest.mark.parametrize("case,preset", [("totalseg_ct_sm_liver", "ct-abdomen"), ("sct_t1w_cord", "mr"),
                                         ("dcmqi_ct3slice_liver", "ct-abdomen")])
def test_intensity_presets_reproduce_reference_windowing(data_dir, litemedsam_3d_cases, case, preset):
    """Raw volume -> auto preset -> uint8, against the reference pipeline's windowed volume (within 1 grey level).

    The MR case is a whole volume (its percentiles are over all voxels > 0). The dcmqi CT is a crop of the
    512x512x3 original: the CT window is fixed and the reference min-maxes the clipped volume, so a crop that
    reaches both ends of the window is windowed exactly like the whole volume (checked below)."""
    import json

    import SimpleITK as sitk

    sources = {
        "totalseg_ct_sm_liver": "totalseg_ct_sm/ct.nii.gz",
        "sct_t1w_cord": "sct_spinalcord/t1w.nii.gz",
        "dcmqi_ct3slice_liver": "dcmqi_ct3slice/ct_crop.nrrd",
    }
    raw = sitk.GetArrayFromImage(sitk.ReadImage(str(data_dir / sources[case])))
    ref = litemedsam_3d_cases[case]["volume_u8"]
    if case == "dcmqi_ct3slice_liver":
        crop = json.loads((data_dir / "dcmqi_ct3slice" / "crop.json").read_text(encoding="utf-8"))
        (x0, y0, z0), (nx, ny, nz) = crop["index_xyz"], crop["size_xyz"]
        ref = ref[z0:z0 + nz, y0:y0 + ny, x0:x0 + nx]
        assert raw.min() <= -160 and raw.max() >= 240
    rule, why = resolve_preset("auto", raw)
    assert rule.name == preset, why
    ours = apply_intensity(raw, rule)
    assert ours.shape == ref.shape and ours.dtype == np.uint8
    diff = np.abs(ours.astype(int) - ref.astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3


def test_presets_parse_and_reject():
    assert parse_preset("auto") is None
    assert parse_preset("ct-lung").level == -600 and parse_preset("ct-lung").width == 1500
    r = parse_preset("window:50,350")
    assert (r.level, r.width) == (50, 350)
    with pytest.raises(InputError, match="Unknown intensity preset 'bone'"):
        parse_preset("bone")
    with pytest.raises(InputError, match="width must be > 0"):
        parse_preset("window:40,0")
    with pytest.raises(InputError, match="needs 8-bit data"):
        resolve_preset("raw", np.array([[-1000, 400]], dtype=np.int16))
    rule, why = resolve_preset("auto", np.zeros((4, 4), dtype=np.uint8) + np.arange(4, dtype=np.uint8))
    assert rule.name == "raw" and "8-bit" in why


def test_ct_window_formula():
    vol = np.array([[-1000, -160, 40, 240, 3000]], dtype=np.int16)
    out = apply_intensity(vol, parse_preset("ct-abdomen"))
    np.testing.assert_array_equal(out, [[0, 0, 127, 255, 255]])
    mr = np.array([[0, 10, 20, 30, 1000]], dtype=np.float32)
    out = apply_intensity(mr, parse_preset("mr"))
    assert out[0, 0] == 0 and out[0, -1] == 255

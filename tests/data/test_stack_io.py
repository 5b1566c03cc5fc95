"""Stack files: every format, dtype and layout round-trips; bad files raise a StackError naming them."""
import numpy as np
import pytest
import tifffile

from polar_rcnn.data import StackError, load_stack, read_stack, resize_stack
from polar_rcnn.data.stack_io import float16_to_float32

H, W, C = 12, 10, 5
DTYPES = {"uint8": 1 / 255, "uint16": 1 / 65535, "float16": 1.0, "float32": 1.0}


def random_hwc(dtype, seed=0):
    rng = np.random.default_rng(seed)
    if np.issubdtype(np.dtype(dtype), np.integer):
        return rng.integers(0, np.iinfo(dtype).max, (H, W, C), endpoint=True).astype(dtype)
    return rng.standard_normal((H, W, C)).astype(dtype)


def write(path, hwc, fmt, layout):
    """Write an (H, W, C) array as ``fmt`` with axis order ``layout``; return the path."""
    on_disk = np.ascontiguousarray(hwc if layout == "HWC" else hwc.transpose(2, 0, 1))
    path = str(path / f"stack.{fmt}")
    if fmt == "npy":
        np.save(path, on_disk)
    elif fmt == "npz":
        np.savez(path, stack=on_disk)
    elif layout == "CHW":  # one page per channel
        tifffile.imwrite(path, on_disk)
    else:  # one page, C samples per pixel
        tifffile.imwrite(path, on_disk, photometric="minisblack", planarconfig="contig")
    return path


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("layout", ["HWC", "CHW"])
@pytest.mark.parametrize("fmt", ["npy", "npz", "tif"])
def test_round_trip(tmp_path, fmt, layout, dtype):
    hwc = random_hwc(dtype)
    path = write(tmp_path, hwc, fmt, layout)
    raw = read_stack(path, layout)
    assert raw.dtype == np.dtype(dtype) and raw.shape == (H, W, C)
    np.testing.assert_array_equal(raw, hwc)
    stack = load_stack(path, layout=layout, expected_channels=C, expected_size=(H, W))
    assert stack.dtype == np.float32 and stack.flags.writeable
    np.testing.assert_allclose(stack, hwc.astype(np.float32) * np.float32(DTYPES[dtype]), rtol=1e-6)


def test_tiff_pages_are_channels(tmp_path):
    chw = np.stack([np.full((H, W), c, np.uint16) for c in range(C)])
    path = write(tmp_path, chw.transpose(1, 2, 0), "tiff", "CHW")
    with tifffile.TiffFile(path) as tif:
        assert len(tif.pages) == C
    assert read_stack(path, "CHW")[0, 0].tolist() == list(range(C))


def test_npz_key_selects_the_array(tmp_path):
    path = str(tmp_path / "two.npz")
    np.savez(path, rgb=np.zeros((H, W, 3), np.uint8), stack=np.ones((H, W, C), np.float32))
    assert read_stack(path, npz_key="stack").shape == (H, W, C)
    with pytest.raises(StackError, match="INPUT.STACK.NPZ_KEY") as info:
        read_stack(path)
    assert path in str(info.value) and "rgb" in str(info.value)
    with pytest.raises(StackError, match="'nope'"):
        read_stack(path, npz_key="nope")


def test_size_mismatch_resized_or_rejected(tmp_path):
    y, x = np.mgrid[0:H, 0:W].astype(np.float32)
    hwc = np.stack([x / (W - 1), y / (H - 1)], axis=2)
    path = write(tmp_path, hwc, "npy", "HWC")
    with pytest.raises(StackError, match="RESIZE_MISMATCHED") as info:
        load_stack(path, expected_size=(2 * H, 2 * W))
    assert info.value.kind == "size" and path in str(info.value)
    big = load_stack(path, expected_size=(2 * H, 2 * W), resize=True)
    assert big.shape == (2 * H, 2 * W, 2)
    # bilinear: the ramps stay monotone ramps over the same range
    assert (np.diff(big[..., 0], axis=1) >= -1e-6).all() and (np.diff(big[..., 1], axis=0) >= -1e-6).all()
    assert big[..., 0].min() == pytest.approx(0) and big[..., 0].max() == pytest.approx(1)


def test_resize_any_channel_count():
    stack = np.random.default_rng(0).random((6, 8, 600), dtype=np.float32)
    out = resize_stack(stack, (12, 16))
    assert out.shape == (12, 16, 600)
    np.testing.assert_allclose(out.mean(axis=(0, 1)), stack.mean(axis=(0, 1)), atol=0.05)
    assert resize_stack(stack[..., :1], (12, 16)).shape == (12, 16, 1)


@pytest.mark.parametrize("dtype,expected", [(np.uint8, np.uint8), (np.uint16, np.uint16), (np.float16, np.float32),
                                            (np.float32, np.float32), (np.float64, np.float64)])
def test_resize_keeps_the_stored_dtype(dtype, expected):
    """OpenCV resizes in the stored dtype (float16, which it lacks, as float32), 200 channels in chunks."""
    stack = (np.random.default_rng(0).random((6, 8, 200)) * 200).astype(dtype)
    out = resize_stack(stack, (9, 12), "bilinear")
    assert out.dtype == expected and out.shape == (9, 12, 200)
    assert resize_stack(stack, (3, 4), "nearest").dtype == expected


@pytest.mark.parametrize("view", ["memmap", "flipped", "channel_first"])
def test_float16_to_float32_casts_any_view_exactly(tmp_path, view):
    values = (np.random.default_rng(4).random((7, 9, 5)) * 300).astype(np.float16)
    np.save(tmp_path / "s.npy", values.transpose(2, 0, 1) if view == "channel_first" else values)
    stored = np.load(tmp_path / "s.npy", mmap_mode="r")
    source = {"memmap": stored, "flipped": stored[::-1, ::-1],
              "channel_first": stored.transpose(1, 2, 0)}[view]
    expected = np.asarray(source).astype(np.float32)
    out = float16_to_float32(source)
    assert out.dtype == np.float32 and out.flags.c_contiguous
    np.testing.assert_array_equal(out, expected)
    buffer = np.full(source.shape, np.nan, np.float32)
    assert float16_to_float32(source, out=buffer) is buffer
    np.testing.assert_array_equal(buffer, expected)


def test_wrong_layout_gets_a_hint(tmp_path):
    path = write(tmp_path, random_hwc("float32"), "npy", "CHW")
    with pytest.raises(StackError, match="set INPUT.STACK.LAYOUT 'CHW'") as info:
        load_stack(path, layout="HWC", expected_channels=C, expected_size=(H, W))
    assert info.value.kind == "channels"


@pytest.mark.parametrize("fmt", ["npy", "npz", "tif"])
def test_truncated_files(tmp_path, fmt):
    path = write(tmp_path, random_hwc("uint16"), fmt, "HWC")
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[: len(data) * 2 // 3])
    with pytest.raises(StackError) as info:
        load_stack(path)
    assert path in str(info.value) and info.value.kind in ("truncated", "unreadable")
    if fmt == "npy":
        assert info.value.kind == "truncated"


def test_dtype_without_default_scale(tmp_path):
    path = str(tmp_path / "s.npy")
    np.save(path, np.ones((H, W, C), np.int32))
    with pytest.raises(StackError, match="INPUT.STACK.SCALE"):
        load_stack(path)
    assert load_stack(path, scale=0.5).max() == 0.5


def test_bad_layout_is_a_config_error(tmp_path):
    path = write(tmp_path, random_hwc("uint8"), "npy", "HWC")
    with pytest.raises(ValueError, match="INPUT.STACK.LAYOUT"):
        read_stack(path, "WHC")


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("band_bytes", [1 << 21, 60], ids=["one_band", "bands_of_2_rows"])
def test_check_finite_reads_exponent_bits(dtype, bad, band_bytes, monkeypatch):
    from polar_rcnn.data import stack_io
    from polar_rcnn.data.stack_io import check_finite

    monkeypatch.setattr(stack_io, "_CHECK_BAND_BYTES", band_bytes)
    stack = np.random.default_rng(0).random((6, 5, 3)).astype(dtype)
    stack[..., 0] = np.finfo(dtype).max  # the largest finite value passes
    check_finite(stack, "x.npy")
    check_finite(stack[:, ::-1].transpose(1, 0, 2), "x.npy")  # any strides
    stack[4, 2, 1] = bad
    with pytest.raises(StackError, match=r"x.npy.*\(4, 2, 1\); 1 in all"):
        check_finite(stack, "x.npy")
    check_finite(np.full((2, 2, 2), 65535, np.uint16), "ints.npy")  # integers are always finite

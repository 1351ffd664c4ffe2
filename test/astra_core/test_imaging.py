"""astra_core.imaging: raw buffers and JPEG/PNG bytes -> RGB, every bad-input kind, and no ROS."""

import subprocess
import sys

import numpy as np
import pytest

from astra_core.imaging import (
    SUPPORTED_COMPRESSED_FORMATS,
    SUPPORTED_ENCODINGS,
    ImageDecodeError,
    decode_compressed,
    decode_raw,
    encode_compressed,
    encode_raw,
)

RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, size=(5, 7, 3), dtype=np.uint8)


def test_supported_lists():
    assert set(SUPPORTED_ENCODINGS) == {"rgb8", "bgr8", "rgba8", "bgra8", "mono8"}
    assert set(SUPPORTED_COMPRESSED_FORMATS) == {"jpeg", "png"}


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8"])
def test_colour_round_trip(encoding):
    pixels, step = encode_raw(RGB, encoding)
    assert step == 7 * pixels.shape[2]
    out = decode_raw(pixels.tobytes(), encoding.upper(), 5, 7, step)  # encodings are case-insensitive
    assert out.shape == (5, 7, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, RGB)


def test_raw_decoding_is_a_read_only_view_of_the_buffer():
    data = bytearray(RGB.tobytes())
    out = decode_raw(data, "rgb8", 5, 7, 21)
    assert np.shares_memory(out, np.frombuffer(data, np.uint8)) and not out.flags.writeable


def test_row_padding_is_strided():
    padded = np.zeros((5, 7 * 3 + 5), np.uint8)
    padded[:, :21] = RGB.reshape(5, -1)
    np.testing.assert_array_equal(decode_raw(padded.tobytes(), "rgb8", 5, 7, 26), RGB)


def test_mono8_is_three_equal_channels():
    grey = RNG.integers(0, 256, size=(4, 6), dtype=np.uint8)
    out = decode_raw(grey.tobytes(), "mono8", 4, 6, 6, is_bigendian=True)  # byte order: irrelevant at 8 bit
    assert out.shape == (4, 6, 3) and all((out[:, :, c] == grey).all() for c in range(3))


@pytest.mark.parametrize(
    "fields, kind",
    [
        (dict(encoding="16UC1"), "encoding"),
        (dict(height=0), "size"),
        (dict(data=b""), "empty"),
        (dict(step=5), "step"),
        (dict(step=8), "step"),
        (dict(data=bytes(11)), "step"),
    ],
)
def test_bad_raw_buffers_raise_with_a_kind(fields, kind):
    args = dict(data=bytes(12), encoding="rgb8", height=2, width=2, step=6) | fields
    with pytest.raises(ImageDecodeError) as info:
        decode_raw(**args)
    assert info.value.kind == kind and isinstance(info.value, ValueError)


def test_expected_size():
    data = RGB.tobytes()
    assert decode_raw(data, "rgb8", 5, 7, 21, expected_size=(5, 7)).shape == (5, 7, 3)
    with pytest.raises(ImageDecodeError, match="expected 224x224") as info:
        decode_raw(data, "rgb8", 5, 7, 21, expected_size=(224, 224))
    assert info.value.kind == "size"
    with pytest.raises(ImageDecodeError) as info:
        decode_compressed(encode_compressed(RGB, "png"), "png", expected_size=(8, 8))
    assert info.value.kind == "size"


@pytest.mark.parametrize("fmt", ["jpeg", "png"])
def test_compressed_round_trip(fmt):
    smooth = np.dstack([np.tile(np.linspace(0, 255, 32, dtype=np.uint8), (24, 1))] * 3)
    smooth[:, :, 2] = 40  # distinct channels catch an RGB/BGR swap
    out = decode_compressed(encode_compressed(smooth, fmt).tobytes(), fmt)
    assert out.shape == (24, 32, 3) and out.flags.c_contiguous
    assert np.abs(out.astype(int) - smooth.astype(int)).max() <= (0 if fmt == "png" else 12)


def test_container_comes_from_magic_bytes_not_the_format_string():
    png = encode_compressed(RGB, "png")
    np.testing.assert_array_equal(decode_compressed(png, "rgb8; jpeg compressed bgr8"), RGB)


@pytest.mark.parametrize(
    "data, kind",
    [(b"", "empty"), (b"GIF89a....", "format"), (b"\xff\xd8\xff" + bytes(50), "decode"),
     (b"\x89PNG\r\n\x1a\n" + bytes(30), "decode")],
)
def test_bad_compressed_data_raises_with_a_kind(data, kind):
    with pytest.raises(ImageDecodeError) as info:
        decode_compressed(data, "jpeg")
    assert info.value.kind == kind


def test_imaging_never_imports_ros():
    code = ("import sys, astra_core.imaging; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('rclpy', 'sensor_msgs', 'astra_ros', 'rosidl_runtime_py')]; "
            "print(bad); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def _corrupt_samples() -> dict[str, bytes]:
    """Recognised JPEG/PNG containers with broken insides, the kind a flaky camera link produces."""
    image = np.random.default_rng(1).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    jpeg, png = bytes(encode_compressed(image, "jpeg")), bytes(encode_compressed(image, "png"))
    garbled_jpeg = bytearray(jpeg)
    garbled_jpeg[len(jpeg) // 2: len(jpeg) // 2 + 20] = bytes(20)  # entropy data hit by zeros
    bad_crc_png = bytearray(png)
    bad_crc_png[60:80] = bytes(20)
    return {"truncated_jpeg": jpeg[: len(jpeg) // 2], "garbled_jpeg": bytes(garbled_jpeg),
            "truncated_png": png[: len(png) // 2], "bad_crc_png": bytes(bad_crc_png)}


def test_corrupt_compressed_frames_raise_and_print_nothing():
    """Decoder libraries must not write to the process's stderr (issue: OpenCV's libjpeg/libpng
    printed two lines per corrupt frame to the operator's console). Measured at the file
    descriptor level, in a subprocess, because C libraries write to fd 2 directly."""
    script = (
        "import sys\n"
        "from astra_core.imaging import ImageDecodeError, decode_compressed\n"
        f"samples = {_corrupt_samples()!r}\n"
        "for _ in range(5):\n"
        "    for name, data in samples.items():\n"
        "        try:\n"
        "            decode_compressed(data, 'jpeg')\n"
        "        except ImageDecodeError as err:\n"
        "            assert err.kind == 'decode', (name, err.kind)\n"
        "            if name.startswith('truncated'):\n"
        "                sys.stdout.write(name + ' refused\\n')\n"
        "        else:\n"
        "            assert not name.startswith('truncated'), name + ' was accepted'\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stderr == "", f"decoding corrupt frames printed to stderr:\n{result.stderr}"
    assert result.stdout.count("refused") == 10


def test_too_many_pixels_are_refused_before_decoding():
    big = np.zeros((40, 50, 3), np.uint8)
    with pytest.raises(ImageDecodeError, match="2000 pixels") as info:
        decode_raw(big.tobytes(), "rgb8", 40, 50, 150, max_pixels=1999)
    assert info.value.kind == "too_large"
    assert decode_raw(big.tobytes(), "rgb8", 40, 50, 150, max_pixels=2000).shape == (40, 50, 3)
    noise = np.random.default_rng(2).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    truncated = bytes(encode_compressed(noise, "png"))[:200]  # the header, then a cut in the pixel data
    with pytest.raises(ImageDecodeError) as info:
        decode_compressed(truncated, "png")
    assert info.value.kind == "decode"
    with pytest.raises(ImageDecodeError) as info:
        decode_compressed(truncated, "png", max_pixels=1999)
    assert info.value.kind == "too_large"  # refused from the header, before decoding


@pytest.mark.parametrize("mode", ["L", "LA", "P", "RGBA", "I;16"])
def test_png_modes_decode_to_rgb(mode):
    import io

    from PIL import Image

    grey = np.arange(48 * 64, dtype=np.uint32).reshape(48, 64) % 256
    if mode == "I;16":
        pil = Image.fromarray((grey * 256).astype(np.uint16))
    else:
        pil = Image.fromarray(grey.astype(np.uint8), "L").convert(mode)
    buffer = io.BytesIO()
    pil.save(buffer, format="PNG")
    out = decode_compressed(buffer.getvalue(), "png")
    assert out.shape == (48, 64, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[:, :, 0], grey.astype(np.uint8))

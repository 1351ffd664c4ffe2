"""Image <-> numpy conversion: every supported encoding, padding, zero-copy, and each bad-input kind."""

import numpy as np
import pytest
from sensor_msgs.msg import CompressedImage, Image

from astra_ros.image_conversion import (
    ImageConversionError,
    compressed_to_rgb,
    image_to_rgb,
    rgb_to_compressed,
    rgb_to_image,
    to_rgb,
)

RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, size=(5, 7, 3), dtype=np.uint8)


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8"])
def test_colour_round_trip(encoding):
    msg = rgb_to_image(RGB, encoding, frame_id="cam")
    assert msg.encoding == encoding and (msg.height, msg.width) == (5, 7)
    assert msg.header.frame_id == "cam"
    assert msg.step == 7 * (4 if "a" in encoding[3:] else 3)
    out = image_to_rgb(msg)
    assert out.shape == (5, 7, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, RGB)


def test_bytes_are_in_the_encodings_channel_order():
    bgr = np.frombuffer(rgb_to_image(RGB, "bgr8").data, np.uint8).reshape(5, 7, 3)
    np.testing.assert_array_equal(bgr, RGB[:, :, ::-1])
    bgra = np.frombuffer(rgb_to_image(RGB, "bgra8").data, np.uint8).reshape(5, 7, 4)
    np.testing.assert_array_equal(bgra[:, :, :3], RGB[:, :, ::-1])
    assert (bgra[:, :, 3] == 255).all()


def test_mono8_broadcasts_to_three_equal_channels():
    grey = RNG.integers(0, 256, size=(4, 6), dtype=np.uint8)
    out = image_to_rgb(rgb_to_image(grey, "mono8"))
    assert out.shape == (4, 6, 3)
    for c in range(3):
        np.testing.assert_array_equal(out[:, :, c], grey)


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "mono8"])
def test_raw_conversion_is_a_read_only_view_of_the_message_buffer(encoding):
    msg = rgb_to_image(RGB, encoding)
    out = image_to_rgb(msg)
    buf = np.frombuffer(msg.data, np.uint8)
    assert np.shares_memory(out, buf), "conversion copied the pixels"
    assert not out.flags.writeable


def test_row_padding_is_strided_not_copied():
    channels, pad = 3, 5
    padded = np.zeros((5, 7 * channels + pad), np.uint8)
    padded[:, : 7 * channels] = RGB.reshape(5, -1)
    msg = Image(height=5, width=7, encoding="rgb8", step=7 * channels + pad)
    msg.data = padded.tobytes()
    out = image_to_rgb(msg)
    np.testing.assert_array_equal(out, RGB)
    assert np.shares_memory(out, np.frombuffer(msg.data, np.uint8))


@pytest.mark.parametrize("fmt", ["jpeg", "png"])
def test_compressed_round_trip(fmt):
    smooth = np.dstack([np.tile(np.linspace(0, 255, 32, dtype=np.uint8), (24, 1))] * 3)
    smooth[:, :, 2] = 40  # distinct channels catch an RGB/BGR swap
    msg = rgb_to_compressed(smooth, fmt)
    assert msg.format == fmt
    out = compressed_to_rgb(msg)
    assert out.shape == (24, 32, 3) and out.flags.c_contiguous
    tolerance = 0 if fmt == "png" else 12
    assert np.abs(out.astype(int) - smooth.astype(int)).max() <= tolerance
    assert isinstance(to_rgb(msg), np.ndarray)


def test_compressed_format_string_is_not_trusted():
    msg = rgb_to_compressed(RGB, "png")
    msg.format = "rgb8; jpeg compressed bgr8"  # image_transport style, and wrong
    np.testing.assert_array_equal(compressed_to_rgb(msg), RGB)


def _image(**fields):
    msg = Image(height=2, width=2, encoding="rgb8", step=6)
    msg.data = bytes(12)
    for key, value in fields.items():
        setattr(msg, key, value)
    return msg


@pytest.mark.parametrize(
    "msg, kind",
    [
        (_image(encoding="16UC1"), "encoding"),
        (_image(encoding="yuv422"), "encoding"),
        (_image(height=0), "size"),
        (_image(data=b""), "empty"),
        (_image(step=5), "step"),  # step < width * channels
        (_image(step=8), "step"),  # data size != step * height
        (_image(data=bytes(11)), "step"),
    ],
)
def test_bad_raw_images_raise_with_a_kind(msg, kind):
    with pytest.raises(ImageConversionError) as info:
        image_to_rgb(msg)
    assert info.value.kind == kind


def test_wrong_size_is_rejected_when_a_size_is_expected():
    msg = rgb_to_image(RGB)
    assert image_to_rgb(msg, expected_size=(5, 7)).shape == (5, 7, 3)
    with pytest.raises(ImageConversionError, match="expected 224x224") as info:
        image_to_rgb(msg, expected_size=(224, 224))
    assert info.value.kind == "size"
    with pytest.raises(ImageConversionError) as info:
        compressed_to_rgb(rgb_to_compressed(RGB, "png"), expected_size=(8, 8))
    assert info.value.kind == "size"


@pytest.mark.parametrize(
    "data, kind",
    [(b"", "empty"), (b"GIF89a....", "format"), (b"\xff\xd8\xff" + bytes(50), "decode"),
     (b"\x89PNG\r\n\x1a\n" + bytes(30), "decode")],
)
def test_bad_compressed_images_raise_with_a_kind(data, kind):
    msg = CompressedImage(format="jpeg")
    msg.data = data
    with pytest.raises(ImageConversionError) as info:
        compressed_to_rgb(msg)
    assert info.value.kind == kind

"""Pixel buffers and compressed image bytes -> numpy RGB, with no ROS dependency.

One decoder for every consumer: the live ROS node (through `astra_ros.image_conversion`, which
only unpacks message fields), the rosbag importer and anything else that turns recorded camera
data into training data. Training data and the live node therefore decode images identically.

Raw buffers (`decode_raw`) are the fields of a `sensor_msgs/Image` given as plain values:
encoding, height, width, step (bytes per row, may include padding), is_bigendian and data. They
are converted without copying where the layout allows it: the result is a (possibly strided)
read-only view over `data`, which stays alive as long as the view does. rgb8 / rgba8 / bgr8 /
bgra8 / mono8 all come out as (H, W, 3) uint8 RGB; a caller that needs a contiguous array (e.g.
to hand it to torch) pays for exactly one copy there.

Compressed bytes (`decode_compressed`) are JPEG or PNG, recognised from their magic bytes rather
than from the free-form format string (image_transport writes e.g. "rgb8; jpeg compressed bgr8").

Every failure raises `ImageDecodeError` whose `kind` is one short word, so a caller can count bad
input per kind and log each kind once:
    "encoding"  unsupported raw encoding (or pixel type)
    "size"      zero size, or not the expected (height, width)
    "empty"     no data
    "step"      row stride / data length inconsistent with the declared size
    "decode"    the container was recognised but its data could not be decoded
    "format"    compressed data that is neither JPEG nor PNG
"""

from __future__ import annotations

import cv2
import numpy as np

# channels per pixel of each supported 8-bit raw encoding
_RAW_CHANNELS: dict[str, int] = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1}
SUPPORTED_ENCODINGS: tuple[str, ...] = tuple(_RAW_CHANNELS)
SUPPORTED_COMPRESSED_FORMATS: tuple[str, ...] = ("jpeg", "png")

_JPEG_MAGIC = b"\xff\xd8\xff"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class ImageDecodeError(ValueError):
    """Data that cannot be turned into an image; `kind` names the class of problem."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def raw_channels(encoding: str) -> int:
    """Bytes per pixel of a supported raw encoding (case-insensitive); ImageDecodeError otherwise."""
    channels = _RAW_CHANNELS.get(encoding.lower())
    if channels is None:
        raise ImageDecodeError(
            "encoding", f"unsupported image encoding {encoding!r}; supported: {', '.join(SUPPORTED_ENCODINGS)}"
        )
    return channels


def _check_expected_size(height: int, width: int, expected_size: tuple[int, int] | None) -> None:
    if expected_size is not None and (height, width) != tuple(expected_size):
        raise ImageDecodeError(
            "size", f"image is {height}x{width}, expected {expected_size[0]}x{expected_size[1]}"
        )


def _rgb_view(raw: np.ndarray, encoding: str) -> np.ndarray:
    """(H, W, C) raw pixels -> (H, W, 3) RGB view (basic slicing only: no copy)."""
    if encoding == "rgb8":
        return raw
    if encoding == "bgr8":
        return raw[:, :, ::-1]
    if encoding == "rgba8":
        return raw[:, :, :3]
    if encoding == "bgra8":
        return raw[:, :, 2::-1]
    # mono8: a zero-stride broadcast over the channel axis
    return np.broadcast_to(raw, (raw.shape[0], raw.shape[1], 3))


def decode_raw(
    data,
    encoding: str,
    height: int,
    width: int,
    step: int,
    is_bigendian: bool = False,
    expected_size: tuple[int, int] | None = None,
) -> np.ndarray:
    """Raw pixel buffer -> (H, W, 3) uint8 RGB, a read-only view of `data` when possible.

    `data` is anything exposing the buffer protocol (bytes, array.array('B'), memoryview, ...).
    `is_bigendian` is accepted for completeness: every supported encoding has 8-bit channels, so
    byte order does not change the pixels. `expected_size` = (height, width) rejects frames of
    another size (kind "size"). Row padding (`step` > width * channels) is handled by striding.
    """
    del is_bigendian  # 8-bit channels only: byte order is irrelevant
    encoding = encoding.lower()
    channels = raw_channels(encoding)
    height, width, step = int(height), int(width), int(step)
    if height <= 0 or width <= 0:
        raise ImageDecodeError("size", f"image has zero size ({height}x{width})")
    _check_expected_size(height, width, expected_size)
    if len(data) == 0:
        raise ImageDecodeError("empty", f"{height}x{width} {encoding} image has empty data")
    if step < width * channels:
        raise ImageDecodeError(
            "step", f"step {step} is smaller than width*channels = {width * channels} ({encoding})"
        )
    if len(data) != step * height:
        raise ImageDecodeError(
            "step", f"data has {len(data)} bytes, expected step*height = {step}*{height} = {step * height}"
        )
    flat = np.frombuffer(data, dtype=np.uint8)  # zero-copy over array.array / bytes
    flat.flags.writeable = False  # views share the caller's memory: never write through them
    rows = flat.reshape(height, step)[:, : width * channels]
    if step == width * channels:
        raw = rows.reshape(height, width, channels)
    else:
        raw = np.lib.stride_tricks.as_strided(
            rows, shape=(height, width, channels), strides=(step, channels, 1), writeable=False
        )
    return _rgb_view(raw, encoding)


def compressed_container(data) -> str | None:
    """"jpeg" or "png" from the magic bytes of `data`, None for anything else."""
    head = bytes(memoryview(data)[:8])
    if head.startswith(_JPEG_MAGIC):
        return "jpeg"
    if head.startswith(_PNG_MAGIC):
        return "png"
    return None


def decode_compressed(data, fmt: str = "", expected_size: tuple[int, int] | None = None) -> np.ndarray:
    """JPEG or PNG bytes (colour or grey) -> contiguous (H, W, 3) uint8 RGB.

    `fmt` is the sender's format string; it only appears in error messages, because the
    container is recognised from the magic bytes. Decoding necessarily allocates.
    """
    if len(data) == 0:
        raise ImageDecodeError("empty", "compressed image has empty data")
    buffer = np.frombuffer(data, dtype=np.uint8)
    container = compressed_container(buffer)
    if container is None:
        raise ImageDecodeError(
            "format",
            f"compressed data (format {fmt!r}) is neither JPEG nor PNG (first bytes {bytes(buffer[:4]).hex()})",
        )
    bgr = cv2.imdecode(buffer, cv2.IMREAD_COLOR)
    if bgr is None or bgr.size == 0:
        raise ImageDecodeError("decode", f"{container} data of {len(data)} bytes could not be decoded")
    _check_expected_size(bgr.shape[0], bgr.shape[1], expected_size)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def encode_raw(image: np.ndarray, encoding: str = "rgb8") -> tuple[np.ndarray, int]:
    """(H, W, 3) uint8 RGB (or (H, W) grey for mono8) -> (contiguous pixels in `encoding`, step)."""
    encoding = encoding.lower()
    channels = raw_channels(encoding)
    if image.dtype != np.uint8:
        raise ImageDecodeError("encoding", f"expected a uint8 image, got {image.dtype}")
    if encoding == "mono8":
        pixels = image if image.ndim == 2 else cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)
    else:
        if image.ndim != 3 or image.shape[2] != 3:
            raise ImageDecodeError("size", f"expected an (H, W, 3) RGB image, got shape {image.shape}")
        if encoding == "rgb8":
            pixels = image
        elif encoding == "bgr8":
            pixels = image[:, :, ::-1]
        else:
            opaque = np.full(image.shape[:2], 255, np.uint8)
            pixels = np.dstack([image if encoding == "rgba8" else image[:, :, ::-1], opaque])
    return np.ascontiguousarray(pixels), int(pixels.shape[1] * channels)


def encode_compressed(image: np.ndarray, fmt: str = "jpeg", jpeg_quality: int = 90) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> encoded bytes as a 1-D uint8 array ("jpeg" or "png")."""
    fmt = fmt.lower()
    if fmt not in SUPPORTED_COMPRESSED_FORMATS:
        raise ImageDecodeError("format", f"cannot compress to {fmt!r}; supported: {SUPPORTED_COMPRESSED_FORMATS}")
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ImageDecodeError("size", f"expected an (H, W, 3) uint8 RGB image, got {image.dtype} {image.shape}")
    params = [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)] if fmt == "jpeg" else []
    ok, encoded = cv2.imencode("." + ("jpg" if fmt == "jpeg" else "png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise ImageDecodeError("decode", f"opencv failed to encode a {image.shape} image as {fmt}")
    return encoded.reshape(-1)

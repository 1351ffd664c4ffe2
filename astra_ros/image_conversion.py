"""sensor_msgs Image / CompressedImage <-> numpy, replacing cv_bridge.

Why not cv_bridge: the `cv-bridge` package on PyPI is a broken ROS 1 shim and the real one only
ships with a full ROS 2 install (it links against the system OpenCV and Boost). The policy only
needs a handful of 8-bit encodings, which are a few lines of numpy each, so this module has no
dependency beyond numpy and opencv-python-headless (for JPEG/PNG decoding only).

Raw images are converted without copying where the layout allows it: the returned array is a
(possibly strided) view over the message's own buffer, which stays alive as long as the view does.
rgb8 / rgba8 / bgr8 / bgra8 / mono8 all come out as read-only (H, W, 3) uint8 RGB views; callers
that need a contiguous array (e.g. to hand it to torch) pay for exactly one copy there.

Every failure raises `ImageConversionError` whose `kind` is one short word ("encoding", "size",
"empty", "step", "decode", "format"), so the node can count bad input per kind and log each kind once.
"""

from __future__ import annotations

import array

import cv2
import numpy as np
from sensor_msgs.msg import CompressedImage, Image

# channels and how to get RGB out of the raw (H, W, C) layout, as a basic-slicing view.
_RAW_ENCODINGS: dict[str, int] = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1}
SUPPORTED_ENCODINGS: tuple[str, ...] = tuple(_RAW_ENCODINGS)
SUPPORTED_COMPRESSED_FORMATS: tuple[str, ...] = ("jpeg", "png")

_JPEG_MAGIC = b"\xff\xd8\xff"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class ImageConversionError(ValueError):
    """A message that cannot be turned into an image; `kind` names the class of problem."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def _rgb_view(raw: np.ndarray, encoding: str) -> np.ndarray:
    """(H, W, C) raw pixels -> (H, W, 3) RGB view (no copy)."""
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


def image_to_rgb(msg: Image, expected_size: tuple[int, int] | None = None) -> np.ndarray:
    """sensor_msgs/Image -> (H, W, 3) uint8 RGB, a read-only view of `msg.data` when possible.

    `expected_size` = (height, width) rejects frames of another size (kind "size").
    Row padding (`step` > width * channels) is handled by striding, not copying.
    """
    encoding = msg.encoding.lower()
    if encoding not in _RAW_ENCODINGS:
        raise ImageConversionError(
            "encoding",
            f"unsupported image encoding {msg.encoding!r}; supported: {', '.join(SUPPORTED_ENCODINGS)}",
        )
    channels = _RAW_ENCODINGS[encoding]
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height <= 0 or width <= 0:
        raise ImageConversionError("size", f"image has zero size ({height}x{width})")
    if expected_size is not None and (height, width) != tuple(expected_size):
        raise ImageConversionError(
            "size", f"image is {height}x{width}, expected {expected_size[0]}x{expected_size[1]}"
        )
    if len(msg.data) == 0:
        raise ImageConversionError("empty", f"{height}x{width} {encoding} image has empty data")
    if step < width * channels:
        raise ImageConversionError(
            "step", f"step {step} is smaller than width*channels = {width * channels} ({encoding})"
        )
    if len(msg.data) != step * height:
        raise ImageConversionError(
            "step", f"data has {len(msg.data)} bytes, expected step*height = {step}*{height} = {step * height}"
        )
    flat = np.frombuffer(msg.data, dtype=np.uint8)  # zero-copy over array.array / bytes
    flat.flags.writeable = False  # views share the message's memory: never write through them
    rows = flat.reshape(height, step)[:, : width * channels]
    raw = rows.reshape(height, width, channels) if step == width * channels else np.lib.stride_tricks.as_strided(
        rows, shape=(height, width, channels), strides=(step, channels, 1), writeable=False
    )
    return _rgb_view(raw, encoding)


def _compressed_kind(data: bytes | memoryview) -> str | None:
    head = bytes(data[:8])
    if head.startswith(_JPEG_MAGIC):
        return "jpeg"
    if head.startswith(_PNG_MAGIC):
        return "png"
    return None


def compressed_to_rgb(msg: CompressedImage, expected_size: tuple[int, int] | None = None) -> np.ndarray:
    """sensor_msgs/CompressedImage (JPEG or PNG, colour or grey) -> contiguous (H, W, 3) uint8 RGB.

    The container is recognised from its magic bytes, not from the free-form `format` string
    (image_transport writes e.g. "rgb8; jpeg compressed bgr8"). Decoding necessarily allocates.
    """
    if len(msg.data) == 0:
        raise ImageConversionError("empty", "compressed image has empty data")
    buffer = np.frombuffer(msg.data, dtype=np.uint8)
    container = _compressed_kind(memoryview(buffer))
    if container is None:
        raise ImageConversionError(
            "format",
            f"compressed data (format {msg.format!r}) is neither JPEG nor PNG "
            f"(first bytes {bytes(buffer[:4]).hex()})",
        )
    bgr = cv2.imdecode(buffer, cv2.IMREAD_COLOR)
    if bgr is None or bgr.size == 0:
        raise ImageConversionError("decode", f"{container} data of {len(msg.data)} bytes could not be decoded")
    if expected_size is not None and bgr.shape[:2] != tuple(expected_size):
        raise ImageConversionError(
            "size", f"image is {bgr.shape[0]}x{bgr.shape[1]}, expected {expected_size[0]}x{expected_size[1]}"
        )
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _as_uint8_array(image: np.ndarray) -> array.array:
    """One copy of the pixels into the array.array('B') rclpy stores (bypasses its per-element check)."""
    out = array.array("B")
    out.frombytes(np.ascontiguousarray(image).data)
    return out


def rgb_to_image(image: np.ndarray, encoding: str = "rgb8", frame_id: str = "", stamp=None) -> Image:
    """(H, W, 3) uint8 RGB (or (H, W) for mono8) -> sensor_msgs/Image in `encoding`."""
    encoding = encoding.lower()
    if encoding not in _RAW_ENCODINGS:
        raise ImageConversionError("encoding", f"cannot encode {encoding!r}; supported: {SUPPORTED_ENCODINGS}")
    if image.dtype != np.uint8:
        raise ImageConversionError("encoding", f"expected a uint8 image, got {image.dtype}")
    if encoding == "mono8":
        pixels = image if image.ndim == 2 else cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)
    else:
        if image.ndim != 3 or image.shape[2] != 3:
            raise ImageConversionError("size", f"expected an (H, W, 3) RGB image, got shape {image.shape}")
        pixels = {
            "rgb8": lambda x: x,
            "bgr8": lambda x: x[:, :, ::-1],
            "rgba8": lambda x: np.dstack([x, np.full(x.shape[:2], 255, np.uint8)]),
            "bgra8": lambda x: np.dstack([x[:, :, ::-1], np.full(x.shape[:2], 255, np.uint8)]),
        }[encoding](image)
    msg = Image()
    if stamp is not None:
        msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.height, msg.width = int(pixels.shape[0]), int(pixels.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = 0
    msg.step = int(pixels.shape[1] * _RAW_ENCODINGS[encoding])
    msg.data = _as_uint8_array(pixels)
    return msg


def rgb_to_compressed(image: np.ndarray, fmt: str = "jpeg", frame_id: str = "", stamp=None,
                      jpeg_quality: int = 90) -> CompressedImage:
    """(H, W, 3) uint8 RGB -> sensor_msgs/CompressedImage ("jpeg" or "png")."""
    fmt = fmt.lower()
    if fmt not in SUPPORTED_COMPRESSED_FORMATS:
        raise ImageConversionError("format", f"cannot compress to {fmt!r}; supported: {SUPPORTED_COMPRESSED_FORMATS}")
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ImageConversionError("size", f"expected an (H, W, 3) uint8 RGB image, got {image.dtype} {image.shape}")
    params = [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)] if fmt == "jpeg" else []
    ok, encoded = cv2.imencode("." + ("jpg" if fmt == "jpeg" else "png"),
                               cv2.cvtColor(image, cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise ImageConversionError("decode", f"opencv failed to encode a {image.shape} image as {fmt}")
    msg = CompressedImage()
    if stamp is not None:
        msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.format = fmt
    msg.data = _as_uint8_array(encoded)
    return msg


def to_rgb(msg: Image | CompressedImage, expected_size: tuple[int, int] | None = None) -> np.ndarray:
    """Dispatch on the message type."""
    if isinstance(msg, CompressedImage):
        return compressed_to_rgb(msg, expected_size)
    return image_to_rgb(msg, expected_size)

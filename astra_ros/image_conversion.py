"""sensor_msgs Image / CompressedImage <-> numpy, replacing cv_bridge.

Why not cv_bridge: the `cv-bridge` package on PyPI is a broken ROS 1 shim and the real one only
ships with a full ROS 2 install (it links against the system OpenCV and Boost). The policy only
needs a handful of 8-bit encodings and JPEG/PNG.

This module only unpacks and fills message fields: the pixel work lives in `astra_core.imaging`
(no ROS), which the rosbag importer also uses, so recorded training data and the live node decode
images identically. Raw images come out as read-only (H, W, 3) uint8 RGB views of the message
buffer; failures raise `ImageConversionError` (= `astra_core.imaging.ImageDecodeError`) whose
`kind` is one short word, so the node can count bad input per kind and log each kind once.
"""

from __future__ import annotations

import array

import numpy as np
from sensor_msgs.msg import CompressedImage, Image

from astra_core.imaging import (
    SUPPORTED_COMPRESSED_FORMATS,
    SUPPORTED_ENCODINGS,
    ImageDecodeError,
    decode_compressed,
    decode_labels,
    decode_raw,
    encode_compressed,
    encode_labels,
    encode_raw,
)

ImageConversionError = ImageDecodeError  # the name the node code and older callers use

__all__ = [
    "SUPPORTED_COMPRESSED_FORMATS", "SUPPORTED_ENCODINGS", "ImageConversionError",
    "compressed_to_rgb", "image_to_labels", "image_to_rgb", "labels_to_image", "rgb_to_compressed", "rgb_to_image",
    "to_rgb",
]


def image_to_rgb(msg: Image, expected_size: tuple[int, int] | None = None, *,
                 max_pixels: int | None = None) -> np.ndarray:
    """sensor_msgs/Image -> (H, W, 3) uint8 RGB, a read-only view of `msg.data` when possible.

    `expected_size` = (height, width) rejects frames of another size (kind "size"); `max_pixels`
    rejects larger frames (kind "too_large")."""
    return decode_raw(msg.data, msg.encoding, msg.height, msg.width, msg.step, bool(msg.is_bigendian),
                      expected_size=expected_size, max_pixels=max_pixels)


def compressed_to_rgb(msg: CompressedImage, expected_size: tuple[int, int] | None = None, *,
                      max_pixels: int | None = None) -> np.ndarray:
    """sensor_msgs/CompressedImage (JPEG or PNG, colour or grey) -> contiguous (H, W, 3) uint8 RGB.
    The size checks run on the header, before decoding."""
    return decode_compressed(msg.data, msg.format, expected_size=expected_size, max_pixels=max_pixels)


def to_rgb(msg: Image | CompressedImage, expected_size: tuple[int, int] | None = None, *,
           max_pixels: int | None = None) -> np.ndarray:
    """Dispatch on the message type."""
    if isinstance(msg, CompressedImage):
        return compressed_to_rgb(msg, expected_size, max_pixels=max_pixels)
    return image_to_rgb(msg, expected_size, max_pixels=max_pixels)


def image_to_labels(msg: Image, expected_size: tuple[int, int] | None = None, *,
                    max_pixels: int | None = None) -> np.ndarray:
    """sensor_msgs/Image (mono16 or mono8 instance labels, 0 = background) -> (H, W) uint16 / uint8."""
    return decode_labels(msg.data, msg.encoding, msg.height, msg.width, msg.step, bool(msg.is_bigendian),
                         expected_size=expected_size, max_pixels=max_pixels)


def _as_uint8_array(pixels: np.ndarray) -> array.array:
    """One copy of the bytes into the array.array('B') rclpy stores (bypasses its per-element check)."""
    out = array.array("B")
    out.frombytes(np.ascontiguousarray(pixels).reshape(-1).view(np.uint8).data)  # uint16 masks: as bytes
    return out


def rgb_to_image(image: np.ndarray, encoding: str = "rgb8", frame_id: str = "", stamp=None) -> Image:
    """(H, W, 3) uint8 RGB (or (H, W) for mono8) -> sensor_msgs/Image in `encoding`."""
    pixels, step = encode_raw(image, encoding)
    return _image_message(pixels, encoding.lower(), step, frame_id, stamp)


def labels_to_image(labels: np.ndarray, frame_id: str = "", stamp=None) -> Image:
    """(H, W) integer instance labels -> sensor_msgs/Image, mono16 (mono8 for uint8 labels), little-endian."""
    pixels, encoding, step = encode_labels(labels)
    return _image_message(pixels, encoding, step, frame_id, stamp)


def _image_message(pixels: np.ndarray, encoding: str, step: int, frame_id: str, stamp) -> Image:
    """A little-endian sensor_msgs/Image around contiguous `pixels` (H, W[, C])."""
    msg = Image()
    if stamp is not None:
        msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.height, msg.width = int(pixels.shape[0]), int(pixels.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = 0
    msg.step = step
    msg.data = _as_uint8_array(pixels)
    return msg


def rgb_to_compressed(image: np.ndarray, fmt: str = "jpeg", frame_id: str = "", stamp=None,
                      jpeg_quality: int = 90) -> CompressedImage:
    """(H, W, 3) uint8 RGB -> sensor_msgs/CompressedImage ("jpeg" or "png")."""
    encoded = encode_compressed(image, fmt, jpeg_quality)
    msg = CompressedImage()
    if stamp is not None:
        msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.format = fmt.lower()
    msg.data = _as_uint8_array(encoded)
    return msg

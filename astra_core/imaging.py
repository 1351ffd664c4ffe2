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
They are decoded with Pillow, not OpenCV: OpenCV's bundled libjpeg/libpng print to the process's
stderr for every corrupt frame ("Corrupt JPEG data: ...", "libpng error: ..."), which floods an
operator's console and bypasses "log each kind once"; Pillow reports the same problems as
exceptions and prints nothing. Pillow also reads the size from the header before decoding, so an
oversized frame (`max_pixels`) is refused without decompressing it.

Every failure raises `ImageDecodeError` whose `kind` is one short word, so a caller can count bad
input per kind and log each kind once:
    "encoding"  unsupported raw encoding (or pixel type)
    "size"      zero size, or not the expected (height, width)
    "empty"     no data
    "step"      row stride / data length inconsistent with the declared size
    "decode"    the container was recognised but its data could not be decoded
    "format"    compressed data that is neither JPEG nor PNG
    "too_large" more pixels than the caller's `max_pixels` (checked before any decoding)
"""

from __future__ import annotations

import io
import warnings

import cv2
import numpy as np
from PIL import Image as PILImage

# channels per pixel of each supported 8-bit raw encoding
_RAW_CHANNELS: dict[str, int] = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1}
SUPPORTED_ENCODINGS: tuple[str, ...] = tuple(_RAW_CHANNELS)
SUPPORTED_COMPRESSED_FORMATS: tuple[str, ...] = ("jpeg", "png")

_JPEG_MAGIC = b"\xff\xd8\xff"
_MAX_DECODE_BLOCK = 64 << 20  # bytes handed to Pillow's decoder at once
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


def _check_size(height: int, width: int, expected_size: tuple[int, int] | None, max_pixels: int | None) -> None:
    if max_pixels is not None and height * width > max_pixels:
        raise ImageDecodeError(
            "too_large", f"image is {height}x{width} = {height * width} pixels, more than the limit of {max_pixels}"
        )
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
    *,
    max_pixels: int | None = None,
) -> np.ndarray:
    """Raw pixel buffer -> (H, W, 3) uint8 RGB, a read-only view of `data` when possible.

    `data` is anything exposing the buffer protocol (bytes, array.array('B'), memoryview, ...).
    `is_bigendian` is accepted for completeness: every supported encoding has 8-bit channels, so
    byte order does not change the pixels. `expected_size` = (height, width) rejects frames of
    another size (kind "size"); `max_pixels` rejects frames with more pixels (kind "too_large").
    Row padding (`step` > width * channels) is handled by striding.
    """
    del is_bigendian  # 8-bit channels only: byte order is irrelevant
    encoding = encoding.lower()
    channels = raw_channels(encoding)
    height, width, step = int(height), int(width), int(step)
    rows = _pixel_rows(data, encoding, height, width, step, channels, expected_size, max_pixels, "image")
    if step == width * channels:
        raw = rows.reshape(height, width, channels)
    else:
        raw = np.lib.stride_tricks.as_strided(
            rows, shape=(height, width, channels), strides=(step, channels, 1), writeable=False
        )
    return _rgb_view(raw, encoding)


def _pixel_rows(data, encoding: str, height: int, width: int, step: int, bytes_per_pixel: int,
                expected_size: tuple[int, int] | None, max_pixels: int | None, what: str) -> np.ndarray:
    """The checked buffer of a raw image as (height, width * bytes_per_pixel) uint8 rows: a
    read-only view of `data` (row padding sliced off); ImageDecodeError for sizes that do not fit."""
    if height <= 0 or width <= 0:
        raise ImageDecodeError("size", f"{what} has zero size ({height}x{width})")
    _check_size(height, width, expected_size, max_pixels)
    if len(data) == 0:
        raise ImageDecodeError("empty", f"{height}x{width} {encoding} {what} has empty data")
    if step < width * bytes_per_pixel:
        raise ImageDecodeError(
            "step", f"step {step} is smaller than width*{bytes_per_pixel} = {width * bytes_per_pixel} ({encoding})"
        )
    if len(data) != step * height:
        raise ImageDecodeError(
            "step", f"data has {len(data)} bytes, expected step*height = {step}*{height} = {step * height}"
        )
    flat = np.frombuffer(data, dtype=np.uint8)  # zero-copy over array.array / bytes
    flat.flags.writeable = False  # views share the caller's memory: never write through them
    return flat.reshape(height, step)[:, : width * bytes_per_pixel]


def compressed_container(data) -> str | None:
    """"jpeg" or "png" from the magic bytes of `data`, None for anything else."""
    head = bytes(memoryview(data)[:8])
    if head.startswith(_JPEG_MAGIC):
        return "jpeg"
    if head.startswith(_PNG_MAGIC):
        return "png"
    return None


def decode_compressed(data, fmt: str = "", expected_size: tuple[int, int] | None = None, *,
                      max_pixels: int | None = None) -> np.ndarray:
    """JPEG or PNG bytes (colour, grey, palette, with alpha) -> contiguous (H, W, 3) uint8 RGB.

    `fmt` is the sender's format string; it only appears in error messages, because the
    container is recognised from the magic bytes. The size checks (`expected_size`, `max_pixels`)
    run on the header, before decoding. Decoding necessarily allocates. Nothing is printed.
    """
    if len(data) == 0:
        raise ImageDecodeError("empty", "compressed image has empty data")
    container = compressed_container(data)
    if container is None:
        raise ImageDecodeError(
            "format",
            f"compressed data (format {fmt!r}) is neither JPEG nor PNG (first bytes {bytes(memoryview(data)[:4]).hex()})",
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PILImage.DecompressionBombWarning)  # max_pixels is the limit here
            image = PILImage.open(io.BytesIO(data), formats=["JPEG" if container == "jpeg" else "PNG"])
            width, height = image.size
            _check_size(height, width, expected_size, max_pixels)
            pixels = _to_rgb_array(image)
    except ImageDecodeError:
        raise
    except Exception as err:  # hostile bytes can make a decoder raise anything; never let it escape
        raise ImageDecodeError("decode", f"{container} data of {len(data)} bytes could not be decoded: "
                                         f"{type(err).__name__}: {err}") from None
    if pixels.ndim != 3 or pixels.shape[2] != 3 or pixels.dtype != np.uint8:
        raise ImageDecodeError("decode", f"{container} data decoded to {pixels.dtype} {pixels.shape}, not 8-bit RGB")
    return np.ascontiguousarray(pixels)


def _to_rgb_array(image: "PILImage.Image") -> np.ndarray:
    """Decode a PIL image (inside the caller's error handling) -> (H, W, 3) uint8 RGB."""
    # one decoder call for the whole buffer: Pillow's default 64 KB blocks re-take the GIL per
    # block, and each re-take waits for other busy Python threads (the node's inference worker)
    image.decodermaxblock = max(image.decodermaxblock, _MAX_DECODE_BLOCK)
    image.load()
    if image.mode == "RGB":
        return np.asarray(image)
    if image.mode.startswith("I"):  # 16-bit grey PNG: keep the high byte, as OpenCV's IMREAD_COLOR does
        grey = (np.asarray(image).astype(np.uint32) >> 8).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    return np.asarray(image.convert("RGB"))  # L, LA, P, PA, RGBA, CMYK, YCbCr; alpha is dropped


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


def resize_rgb(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (size[0], size[1], 3) uint8 RGB with area interpolation.

    The one reduction shared by the importers (rosbag2, LeRobot) and, for train/serve parity, by
    the live node: INTER_AREA averages the source pixels under each target pixel, so downscaling
    does not alias. Returns the input itself (no copy) when it already has the target size.
    """
    height, width = (int(v) for v in size)
    if height <= 0 or width <= 0:
        raise ValueError(f"resize_rgb: size {size} must be two positive ints (H, W)")
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"resize_rgb: expected an (H, W, 3) uint8 RGB image, got {image.dtype} {image.shape}")
    if image.shape[:2] == (height, width):
        return image
    return cv2.resize(np.ascontiguousarray(image), (width, height), interpolation=cv2.INTER_AREA)


# ---- instance-label masks ------------------------------------------------------------------------
# Masks travel as single-channel raw images: mono16 (labels up to 65535, the simulators' uint16
# masks) or mono8. They are labels, not intensities: never resized with interpolation, never
# compressed lossily, and decoded to (H, W) integers exactly as sent.
LABEL_ENCODINGS: tuple[str, ...] = ("mono16", "mono8")


def decode_labels(
    data,
    encoding: str,
    height: int,
    width: int,
    step: int,
    is_bigendian: bool = False,
    expected_size: tuple[int, int] | None = None,
    *,
    max_pixels: int | None = None,
) -> np.ndarray:
    """Raw mono16 / mono8 buffer -> (H, W) uint16 / uint8 instance labels (0 = background).

    The same checks and error kinds as :func:`decode_raw` ("encoding", "size", "empty", "step",
    "too_large"); mono16 honours `is_bigendian`. The result is a read-only view of `data` when the
    byte order is the machine's and rows are unpadded, else one copy.
    """
    encoding = encoding.lower()
    if encoding not in LABEL_ENCODINGS:
        raise ImageDecodeError("encoding", f"unsupported mask encoding {encoding!r}; supported: "
                                           f"{', '.join(LABEL_ENCODINGS)} (instance labels, 0 = background)")
    itemsize = 2 if encoding == "mono16" else 1
    height, width, step = int(height), int(width), int(step)
    rows = _pixel_rows(data, encoding, height, width, step, itemsize, expected_size, max_pixels, "mask")
    if itemsize == 1:
        return rows
    dtype = np.dtype(">u2" if is_bigendian else "<u2")
    labels = np.ascontiguousarray(rows).view(dtype).reshape(height, width)
    return labels if dtype.isnative else labels.astype(np.uint16)


def encode_labels(labels: np.ndarray) -> tuple[np.ndarray, str, int]:
    """(H, W) integer instance labels -> (contiguous little-endian pixels, "mono16" | "mono8", step).

    uint8 labels stay mono8; every other integer type becomes mono16 (values must fit in 0..65535)."""
    if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer):
        raise ImageDecodeError("encoding", f"expected an (H, W) integer label mask, got {labels.dtype} {labels.shape}")
    if labels.dtype == np.uint8:
        return np.ascontiguousarray(labels), "mono8", int(labels.shape[1])
    if labels.size and (int(labels.min()) < 0 or int(labels.max()) > 0xFFFF):
        raise ImageDecodeError("encoding", f"labels {int(labels.min())}..{int(labels.max())} do not fit in mono16")
    return np.ascontiguousarray(labels, dtype="<u2"), "mono16", int(labels.shape[1] * 2)

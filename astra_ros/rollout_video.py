"""Rollout videos: camera frames side by side with a caption, written as MP4 (PyAV) or GIF (Pillow).
Pure numpy / OpenCV / PyAV, no ROS."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

LINE_HEIGHT = 14  # caption text lines, pixels
MIN_WIDTH = 288  # narrower frames (one small camera) are scaled up further, so captions stay readable


def compose_frame(images: Sequence[np.ndarray], caption: Sequence[str] = (), scale: int = 2) -> np.ndarray:
    """(H, W, 3) uint8 RGB images of one instant -> one frame: scaled up (nearest: pixels stay
    pixels), side by side, under a caption strip; each caption line is wrapped to the width."""
    if not images:
        raise ValueError("compose_frame needs at least one image")
    while scale * sum(image.shape[1] for image in images) < MIN_WIDTH:
        scale += 1
    height = max(image.shape[0] for image in images) * scale
    tiles = []
    for image in images:
        tile = cv2.resize(np.ascontiguousarray(image), (image.shape[1] * scale, image.shape[0] * scale),
                          interpolation=cv2.INTER_NEAREST)
        if tile.shape[0] < height:
            tile = np.pad(tile, ((0, height - tile.shape[0]), (0, 0), (0, 0)))
        tiles.append(tile)
    body = np.hstack(tiles)
    lines = [part for line in caption for part in _wrap(line, max(10, body.shape[1] // 7))]
    strip = np.full((LINE_HEIGHT * len(lines) + 6 if lines else 0, body.shape[1], 3), 255, np.uint8)
    for i, line in enumerate(lines):
        cv2.putText(strip, line, (4, LINE_HEIGHT * (i + 1)), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    return np.vstack([strip, body])


def _wrap(text: str, width: int) -> list[str]:
    lines, line = [], ""
    for word in text.split():
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return lines + [line] if line else lines


def write_video(path: str | Path, frames: Sequence[np.ndarray], fps: float) -> Path:
    """Frames (uint8 RGB) -> `path`: .mp4 (H.264 through PyAV, MPEG-4 part 2 where libx264 is
    missing) or .gif. Frames are padded (white, bottom and right) to the largest frame, rounded up
    to even sizes (yuv420p needs them): captions of different lengths give different heights."""
    path = Path(path)
    if not frames:
        raise ValueError("no frames to write")
    path.parent.mkdir(parents=True, exist_ok=True)
    h = max(f.shape[0] for f in frames)
    w = max(f.shape[1] for f in frames)
    h, w = h + h % 2, w + w % 2
    padded = [np.pad(f, ((0, h - f.shape[0]), (0, w - f.shape[1]), (0, 0)), constant_values=255) for f in frames]
    if path.suffix.lower() == ".gif":
        from PIL import Image as PILImage

        images = [PILImage.fromarray(f) for f in padded]
        images[0].save(path, save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)
        return path
    import av
    from fractions import Fraction

    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1000))
        stream.width, stream.height, stream.pix_fmt = padded[0].shape[1], padded[0].shape[0], "yuv420p"
        for frame in padded:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path

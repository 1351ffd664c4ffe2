"""Latest frame per camera, with receive times, staleness and counters. Pure Python, no ROS.

Image callbacks `put` frames (cheap: a dict assignment under a lock, never waits for the model);
the control tick `take`s one frame per camera. A frame counts as stale when it was *received*
longer than `timeout_s` ago on the monotonic clock: header stamps come from other machines'
clocks (or sim time) and are reported, not trusted, for staleness.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np


@dataclass(frozen=True)
class Frame:
    image: np.ndarray  # (H, W, 3) uint8 RGB, possibly a read-only view of the message buffer
    stamp_s: float  # header stamp (sender's clock), seconds
    received_s: float  # local monotonic receive time
    seq: int  # per-camera arrival counter


@dataclass(frozen=True)
class FrameSet:
    """One frame per camera for one control tick."""

    images: dict[str, np.ndarray]
    newest_stamp_s: float  # max header stamp over the cameras (the observation time)
    oldest_age_s: float  # age of the oldest frame used, at take time
    oldest_received_s: float = 0.0  # monotonic receive time of that frame: its age is re-checked at publish

    def age_s(self, now_s: float) -> float:
        """Age of the oldest frame of this set at monotonic time `now_s`."""
        return now_s - self.oldest_received_s


@dataclass(frozen=True)
class Staleness:
    """Why no FrameSet could be formed: per camera, None (never received) or age in seconds."""

    ages: dict[str, float | None]
    refused: dict[str, str] = field(default_factory=dict)  # camera -> kind of its latest refused frame

    def describe(self) -> str:
        parts = []
        for cam, age in self.ages.items():
            text = f"{cam}: never received" if age is None else f"{cam}: last frame {age:.2f}s old"
            if cam in self.refused:
                text += f" (frames refused: {self.refused[cam]})"
            parts.append(text)
        return "stale camera(s): " + "; ".join(parts)


class FrameBuffer:
    """Thread-safe store of the newest frame of each named camera."""

    def __init__(self, camera_names: Sequence[str], timeout_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if timeout_s <= 0:
            raise ValueError(f"frame timeout must be > 0 s, got {timeout_s}")
        if len(set(camera_names)) != len(camera_names) or not camera_names:
            raise ValueError(f"camera names must be unique and non-empty, got {list(camera_names)}")
        self.camera_names = list(camera_names)
        self.timeout_s = float(timeout_s)
        self._clock = clock
        self._lock = threading.Lock()
        self._latest: dict[str, Frame] = {}
        self._taken_seq: dict[str, int] = {}
        self._refused: dict[str, tuple[str, float]] = {}  # camera -> (kind, monotonic time) of its last refused frame
        self.received = dict.fromkeys(self.camera_names, 0)
        # frames overwritten before any tick used them (camera faster than the control rate, or
        # the node falling behind); expected when cameras run faster than the control loop.
        self.unused = dict.fromkeys(self.camera_names, 0)
        self.stale_ticks = 0

    def put(self, camera: str, image: np.ndarray, stamp_s: float) -> None:
        if camera not in self.received:
            raise KeyError(f"unknown camera {camera!r}; known: {self.camera_names}")
        now = self._clock()
        with self._lock:
            previous = self._latest.get(camera)
            if previous is not None and self._taken_seq.get(camera) != previous.seq:
                self.unused[camera] += 1
            self.received[camera] += 1
            self._latest[camera] = Frame(image, float(stamp_s), now, self.received[camera])
            self._refused.pop(camera, None)

    def refuse(self, camera: str, kind: str) -> None:
        """Note that a frame of `camera` arrived but was refused (bad input of `kind`), so that a
        hold for this camera says why it has no fresh frame."""
        if camera not in self.received:
            raise KeyError(f"unknown camera {camera!r}; known: {self.camera_names}")
        with self._lock:
            self._refused[camera] = (kind, self._clock())

    def take(self) -> FrameSet | Staleness:
        """The newest frame of every camera, or why that is not possible (a stale/missing camera)."""
        now = self._clock()
        with self._lock:
            ages: dict[str, float | None] = {}
            for cam in self.camera_names:
                frame = self._latest.get(cam)
                ages[cam] = None if frame is None else now - frame.received_s
            stale = {cam: age for cam, age in ages.items() if age is None or age > self.timeout_s}
            if stale:
                self.stale_ticks += 1
                # a refusal explains the hold while it is recent (within the timeout)
                refused = {cam: kind for cam, (kind, t) in self._refused.items()
                           if cam in stale and now - t <= self.timeout_s}
                return Staleness(stale, refused)
            frames = {cam: self._latest[cam] for cam in self.camera_names}
            for cam, frame in frames.items():
                self._taken_seq[cam] = frame.seq
        return FrameSet(
            images={cam: f.image for cam, f in frames.items()},
            newest_stamp_s=max(f.stamp_s for f in frames.values()),
            oldest_age_s=max(ages.values()),  # type: ignore[arg-type]
            oldest_received_s=min(f.received_s for f in frames.values()),
        )

    def clear(self) -> None:
        with self._lock:
            self._latest.clear()
            self._taken_seq.clear()
            self._refused.clear()

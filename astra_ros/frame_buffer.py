"""Latest frame per camera (and its instance mask), with receive times, staleness and counters.
Pure Python, no ROS.

Image callbacks `put` frames (cheap: a dict assignment under a lock, never waits for the model);
the control tick `take`s one frame per camera. A frame counts as stale when it was *received*
longer than `timeout_s` ago on the monotonic clock: header stamps come from other machines'
clocks (or sim time) and are reported, not trusted, for staleness.

Instance masks (object-token checkpoints, `with_masks=True`): every camera also has a mask
topic, and a frame is only usable together with *its* mask, i.e. the mask whose header stamp
equals the frame's (within `stamp_tolerance_s`; 0 = identical stamps, which is what a
simulator or a segmenter that copies the image header sends). Frames and masks arrive on
separate topics in either order, so the buffer keeps the last `history` of each and `take`
returns the newest matched pair per camera. A pair is as old as its older part: it is stale when
either part was received longer than `timeout_s` ago, the same rule as for frames alone.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import numpy as np

PAIRING_HISTORY = 8  # frames / masks kept per camera for stamp matching (masked cameras only)


@dataclass(frozen=True)
class Frame:
    image: np.ndarray  # (H, W, 3) uint8 RGB, possibly a read-only view of the message buffer
    stamp_s: float  # header stamp (sender's clock), seconds
    received_s: float  # local monotonic receive time
    seq: int  # per-camera arrival counter


@dataclass(frozen=True)
class Mask:
    labels: np.ndarray  # (H, W) uint16 / uint8 instance labels, 0 = background
    stamp_s: float
    received_s: float


@dataclass(frozen=True)
class FrameSet:
    """One frame (and, with masks, its mask) per camera for one control tick."""

    images: dict[str, np.ndarray]
    newest_stamp_s: float  # max header stamp over the cameras (the observation time)
    oldest_age_s: float  # age of the oldest frame (or mask) used, at take time
    oldest_received_s: float = 0.0  # monotonic receive time of that frame: its age is re-checked at publish
    masks: dict[str, np.ndarray] | None = None  # camera -> labels of the same stamp (with_masks only)
    stamps_s: dict[str, float] = field(default_factory=dict)  # camera -> header stamp of its frame
    completed_s: dict[str, float] = field(default_factory=dict)  # camera -> monotonic time its frame (+ mask) was all there

    def age_s(self, now_s: float) -> float:
        """Age of the oldest frame of this set at monotonic time `now_s`."""
        return now_s - self.oldest_received_s

    def not_new(self, last_stamps_s: Mapping[str, float], since_s: float) -> list[str]:
        """Cameras whose frame is not new: its stamp is not later than `last_stamps_s[camera]` (the
        frame the previous step used), or it was complete before `since_s` (monotonic; e.g. the
        arrival of the instruction: frames that were there before it belong to an earlier episode)."""
        return [cam for cam, stamp in self.stamps_s.items()
                if stamp <= last_stamps_s.get(cam, -float("inf")) or self.completed_s[cam] < since_s]


@dataclass(frozen=True)
class Staleness:
    """Why no FrameSet could be formed: per camera, None (never received) or age in seconds."""

    ages: dict[str, float | None]
    refused: dict[str, str] = field(default_factory=dict)  # camera -> kind of its latest refused frame
    masks: dict[str, str] = field(default_factory=dict)  # camera -> what is wrong with its masks

    def describe(self) -> str:
        parts = []
        if self.ages:
            texts = []
            for cam, age in self.ages.items():
                text = f"{cam}: never received" if age is None else f"{cam}: last frame {age:.2f}s old"
                if cam in self.refused:
                    text += f" (frames refused: {self.refused[cam]})"
                texts.append(text)
            parts.append("stale camera(s): " + "; ".join(texts))
        if self.masks:
            parts.append("stale mask(s): " + "; ".join(f"{cam}: {text}" for cam, text in self.masks.items()))
        return "; ".join(parts)


class FrameBuffer:
    """Thread-safe store of the newest frames (and masks) of each named camera."""

    def __init__(self, camera_names: Sequence[str], timeout_s: float,
                 clock: Callable[[], float] = time.monotonic, with_masks: bool = False,
                 stamp_tolerance_s: float = 0.0) -> None:
        if timeout_s <= 0:
            raise ValueError(f"frame timeout must be > 0 s, got {timeout_s}")
        if len(set(camera_names)) != len(camera_names) or not camera_names:
            raise ValueError(f"camera names must be unique and non-empty, got {list(camera_names)}")
        if not stamp_tolerance_s >= 0:
            raise ValueError(f"mask stamp tolerance must be >= 0 s, got {stamp_tolerance_s}")
        self.camera_names = list(camera_names)
        self.timeout_s = float(timeout_s)
        self.with_masks = bool(with_masks)
        self.stamp_tolerance_s = float(stamp_tolerance_s)
        self._clock = clock
        self._lock = threading.Lock()
        depth = PAIRING_HISTORY if with_masks else 1
        self._frames: dict[str, deque[Frame]] = {cam: deque(maxlen=depth) for cam in self.camera_names}
        self._masks: dict[str, deque[Mask]] = {cam: deque(maxlen=depth) for cam in self.camera_names}
        self._taken_seq: dict[str, int] = {}
        self._refused: dict[str, tuple[str, float]] = {}  # camera -> (kind, monotonic time) of its last refused frame
        self._refused_masks: dict[str, tuple[str, float]] = {}
        self.received = dict.fromkeys(self.camera_names, 0)
        self.masks_received = dict.fromkeys(self.camera_names, 0)
        # frames overwritten before any tick used them (camera faster than the control rate, or
        # the node falling behind); expected when cameras run faster than the control loop.
        self.unused = dict.fromkeys(self.camera_names, 0)
        self.stale_ticks = 0

    def _check_camera(self, camera: str) -> None:
        if camera not in self.received:
            raise KeyError(f"unknown camera {camera!r}; known: {self.camera_names}")

    def put(self, camera: str, image: np.ndarray, stamp_s: float) -> None:
        self._check_camera(camera)
        now = self._clock()
        with self._lock:
            frames = self._frames[camera]
            if frames and self._taken_seq.get(camera) != frames[-1].seq:
                self.unused[camera] += 1
            self.received[camera] += 1
            frames.append(Frame(image, float(stamp_s), now, self.received[camera]))
            self._refused.pop(camera, None)

    def put_mask(self, camera: str, labels: np.ndarray, stamp_s: float) -> None:
        self._check_camera(camera)
        if not self.with_masks:
            raise RuntimeError("this FrameBuffer was made without masks (with_masks=False)")
        now = self._clock()
        with self._lock:
            self.masks_received[camera] += 1
            self._masks[camera].append(Mask(labels, float(stamp_s), now))
            self._refused_masks.pop(camera, None)

    def refuse(self, camera: str, kind: str) -> None:
        """Note that a frame of `camera` arrived but was refused (bad input of `kind`), so that a
        hold for this camera says why it has no fresh frame."""
        self._check_camera(camera)
        with self._lock:
            self._refused[camera] = (kind, self._clock())

    def refuse_mask(self, camera: str, kind: str) -> None:
        """The same for a refused mask of `camera`."""
        self._check_camera(camera)
        with self._lock:
            self._refused_masks[camera] = (kind, self._clock())

    def take(self) -> FrameSet | Staleness:
        """The newest frame (with its mask) of every camera, or why that is not possible."""
        now = self._clock()
        with self._lock:
            ages: dict[str, float | None] = {}
            for cam in self.camera_names:
                frames = self._frames[cam]
                ages[cam] = None if not frames else now - frames[-1].received_s
            stale = {cam: age for cam, age in ages.items() if age is None or age > self.timeout_s}
            chosen: dict[str, tuple[Frame, Mask | None]] = {}
            mask_problems: dict[str, str] = {}
            for cam in self.camera_names:
                if cam in stale:
                    continue
                if not self.with_masks:
                    chosen[cam] = (self._frames[cam][-1], None)
                    continue
                pair, problem = self._newest_pair(cam, now)
                if pair is None:
                    mask_problems[cam] = problem
                else:
                    chosen[cam] = pair
            if stale or mask_problems:
                self.stale_ticks += 1
                # a refusal explains the hold while it is recent (within the timeout)
                refused = {cam: kind for cam, (kind, t) in self._refused.items()
                           if cam in stale and now - t <= self.timeout_s}
                return Staleness(stale, refused, mask_problems)
            for cam, (frame, _) in chosen.items():
                self._taken_seq[cam] = frame.seq
        received = [t for frame, mask in chosen.values()
                    for t in (frame.received_s, *(() if mask is None else (mask.received_s,)))]
        return FrameSet(
            images={cam: frame.image for cam, (frame, _) in chosen.items()},
            newest_stamp_s=max(frame.stamp_s for frame, _ in chosen.values()),
            oldest_age_s=now - min(received),
            oldest_received_s=min(received),
            masks={cam: mask.labels for cam, (_, mask) in chosen.items()} if self.with_masks else None,  # type: ignore[union-attr]
            stamps_s={cam: frame.stamp_s for cam, (frame, _) in chosen.items()},
            completed_s={cam: max(frame.received_s, mask.received_s if mask is not None else 0.0)
                         for cam, (frame, mask) in chosen.items()},
        )

    def _newest_pair(self, cam: str, now: float) -> tuple[tuple[Frame, Mask] | None, str]:
        """(newest fresh frame with a mask of its stamp, "") or (None, what is wrong). Lock held."""
        masks = self._masks[cam]
        if not masks:
            text = "never received"
            refused = self._refused_masks.get(cam)
            if refused is not None and now - refused[1] <= self.timeout_s:
                text += f" (masks refused: {refused[0]})"
            return None, text
        newest_mask_age = now - masks[-1].received_s
        if newest_mask_age > self.timeout_s:
            return None, f"last mask {newest_mask_age:.2f}s old"
        for frame in reversed(self._frames[cam]):
            for mask in reversed(masks):
                if abs(mask.stamp_s - frame.stamp_s) <= self.stamp_tolerance_s:
                    if mask.labels.shape != frame.image.shape[:2]:
                        return None, (f"mask {mask.labels.shape[0]}x{mask.labels.shape[1]} and frame "
                                      f"{frame.image.shape[0]}x{frame.image.shape[1]} of stamp {frame.stamp_s:.3f}s "
                                      "differ in size")
                    age = now - min(frame.received_s, mask.received_s)
                    if age > self.timeout_s:
                        return None, f"newest frame with a mask of its stamp is {age:.2f}s old"
                    return (frame, mask), ""
        return None, (f"no mask with the stamp of a recent frame (newest frame {self._frames[cam][-1].stamp_s:.3f}s, "
                      f"newest mask {masks[-1].stamp_s:.3f}s, tolerance {self.stamp_tolerance_s}s)")

    def clear(self) -> None:
        with self._lock:
            for frames in self._frames.values():
                frames.clear()
            for masks in self._masks.values():
                masks.clear()
            self._taken_seq.clear()
            self._refused.clear()
            self._refused_masks.clear()

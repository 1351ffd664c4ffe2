"""Camera frames + instance masks -> one camera sample: the frame with the mask of its header stamp.
Pure Python, no ROS.

A robot with a segmenter publishes, beside each camera, a label image (sensor_msgs/Image mono16 or
mono8) carrying the header stamp of the frame it was computed from. Frames and masks travel on
separate topics, so they arrive in either order; a frame is only usable together with *its* mask.
:class:`MaskPairer` is the one implementation of that pairing: the recorder node pairs live
messages with it and the rosbag importer pairs recorded ones with it, so a recorded step and the
import of the recording's bag hold the same frame and mask. The pair becomes the camera's sample
at the moment its second part arrives (its receive time), and is resampled like a frame alone
(:mod:`astra_core.data.resample`). A bag that starts mid-stream must begin with what the pairer
held (:meth:`MaskPairer.held`): then the importer's pairer pairs every later message as the
recorder's did.

The policy node (``astra_ros/frame_buffer.py``) applies the same stamp rule (identical stamps, or
within ``mask_stamp_tolerance_s``) over the same history depth when it takes frames at a tick.
"""

from __future__ import annotations

import itertools
from collections import deque
from typing import Generic, Literal, TypeVar, Union

FrameT = TypeVar("FrameT")
MaskT = TypeVar("MaskT")

PAIRING_HISTORY = 8  # frames / masks kept per camera for stamp matching (the policy node keeps as many)
Part = Literal["frame", "mask"]


class MaskPairer(Generic[FrameT, MaskT]):
    """Frames and instance masks of one camera -> (frame, mask) pairs of the same header stamp.

    The last ``PAIRING_HISTORY`` of each are kept and a pair is emitted once both parts are there
    (a segmenter that copies the image header gives identical stamps; ``tolerance_s`` allows a
    difference). One pair per frame, and never one older than a frame already paired: a late
    part cannot change what was already sampled.
    """

    def __init__(self, tolerance_s: float = 0.0) -> None:
        self.tolerance_ns = int(round(tolerance_s * 1e9))
        # (stamp, arrival number, item): the arrival number orders frames and masks among each other (held())
        self._frames: deque[tuple[int, int, FrameT]] = deque(maxlen=PAIRING_HISTORY)
        self._masks: deque[tuple[int, int, MaskT]] = deque(maxlen=PAIRING_HISTORY)
        self._arrivals = itertools.count()
        self._paired_stamp: int | None = None  # newest frame stamp already paired (one pair per frame)
        self._newest_pair: list[tuple[int, Part, FrameT | MaskT]] = []  # its two parts, with their arrival numbers

    def add_frame(self, stamp_ns: int, frame: FrameT) -> tuple[FrameT, MaskT] | None:
        """A frame with header stamp ``stamp_ns``; returns its pair if its mask is already there."""
        return self._add(stamp_ns, frame, is_frame=True)

    def add_mask(self, stamp_ns: int, mask: MaskT) -> tuple[FrameT, MaskT] | None:
        """A mask with header stamp ``stamp_ns``; returns the pair if its frame is already there."""
        return self._add(stamp_ns, mask, is_frame=False)

    def _add(self, stamp_ns: int, item: FrameT | MaskT, is_frame: bool) -> tuple[FrameT, MaskT] | None:
        arrival = next(self._arrivals)
        own, others = (self._frames, self._masks) if is_frame else (self._masks, self._frames)
        own.append((stamp_ns, arrival, item))  # type: ignore[arg-type]
        for other_stamp, other_arrival, other in reversed(others):  # the newest match
            if abs(other_stamp - stamp_ns) <= self.tolerance_ns:
                new, old = (arrival, item), (other_arrival, other)
                if is_frame:
                    return self._pair(stamp_ns, new, old)  # type: ignore[arg-type]
                return self._pair(other_stamp, old, new)  # type: ignore[arg-type]
        return None

    def held(self) -> list[tuple[Part, Union[FrameT, MaskT]]]:
        """What this pairer holds, in arrival order: the frames and masks of its history and the two
        parts of its newest pair. A new pairer given these, in this order, has the newest pair
        again and pairs every later message as this one does (for stamps that increase)."""
        held = {arrival: ("frame", item) for _, arrival, item in self._frames}
        held.update({arrival: ("mask", item) for _, arrival, item in self._masks})
        held.update({arrival: (part, item) for arrival, part, item in self._newest_pair})
        return [held[arrival] for arrival in sorted(held)]  # type: ignore[misc]

    def _pair(self, frame_stamp: int, frame: tuple[int, FrameT], mask: tuple[int, MaskT]) -> tuple[FrameT, MaskT] | None:
        if self._paired_stamp is not None and frame_stamp <= self._paired_stamp:
            return None  # that frame was paired already, or a newer one was
        self._paired_stamp = frame_stamp
        self._newest_pair = [(frame[0], "frame", frame[1]), (mask[0], "mask", mask[1])]
        return frame[1], mask[1]

"""FrameBuffer: newest frame per camera, staleness by receive time, counters; LatencyWindow/ProblemLog."""

import threading

import numpy as np
import pytest

from astra_ros.frame_buffer import FrameBuffer, FrameSet, Staleness
from astra_ros.stats import LatencyWindow, ProblemLog


class FakeClock:
    """A settable clock (test input, not a mock of the code under test)."""

    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def img(value: int) -> np.ndarray:
    return np.full((2, 2, 3), value, np.uint8)


def test_newest_frame_of_every_camera():
    clock = FakeClock()
    buf = FrameBuffer(["front", "wrist"], timeout_s=0.5, clock=clock)
    assert isinstance(buf.take(), Staleness)
    buf.put("front", img(1), stamp_s=1.0)
    buf.put("front", img(2), stamp_s=2.0)
    stale = buf.take()
    assert isinstance(stale, Staleness) and stale.ages == {"wrist": None}
    assert "wrist: never received" in stale.describe()
    buf.put("wrist", img(3), stamp_s=2.5)
    clock.t += 0.1
    frames = buf.take()
    assert isinstance(frames, FrameSet)
    assert frames.images["front"][0, 0, 0] == 2 and frames.images["wrist"][0, 0, 0] == 3
    assert frames.newest_stamp_s == 2.5 and frames.oldest_age_s == pytest.approx(0.1)
    assert buf.received == {"front": 2, "wrist": 1}
    assert buf.unused == {"front": 1, "wrist": 0}  # frame 1 was replaced before any tick used it


def test_a_stale_camera_blocks_the_tick_and_is_named():
    clock = FakeClock()
    buf = FrameBuffer(["front", "wrist"], timeout_s=0.5, clock=clock)
    buf.put("front", img(1), 0.0)
    buf.put("wrist", img(1), 0.0)
    clock.t += 0.4
    buf.put("front", img(2), 0.4)
    clock.t += 0.2  # wrist is now 0.6 s old
    result = buf.take()
    assert isinstance(result, Staleness) and list(result.ages) == ["wrist"]
    assert "wrist: last frame 0.60s old" in result.describe()
    assert buf.stale_ticks == 1


def test_frames_used_twice_are_not_counted_unused():
    clock = FakeClock()
    buf = FrameBuffer(["front"], timeout_s=1.0, clock=clock)
    buf.put("front", img(1), 0.0)
    assert isinstance(buf.take(), FrameSet) and isinstance(buf.take(), FrameSet)
    buf.put("front", img(2), 0.1)
    assert buf.unused["front"] == 0


def test_unknown_camera_and_bad_arguments():
    buf = FrameBuffer(["front"], timeout_s=1.0)
    with pytest.raises(KeyError, match="unknown camera 'side'"):
        buf.put("side", img(0), 0.0)
    with pytest.raises(ValueError):
        FrameBuffer(["a", "a"], 1.0)
    with pytest.raises(ValueError):
        FrameBuffer(["a"], 0.0)


def test_concurrent_put_and_take():
    buf = FrameBuffer(["a", "b"], timeout_s=10.0)
    stop = threading.Event()

    def producer(cam):
        i = 0
        while not stop.is_set():
            buf.put(cam, img(i % 255), float(i))
            i += 1

    threads = [threading.Thread(target=producer, args=(c,)) for c in "ab"]
    for t in threads:
        t.start()
    taken = 0
    while taken < 2000:
        if isinstance(buf.take(), FrameSet):
            taken += 1
    stop.set()
    for t in threads:
        t.join()
    assert sum(buf.received.values()) >= 2


def test_latency_window_is_bounded_and_exact():
    window = LatencyWindow(size=100)
    assert np.isnan(window.percentile(50))
    for v in range(1000):
        window.add(v)
    assert window.count == 1000
    assert window.percentile(0) == 900 and window.percentile(100) == 999
    assert window.percentile(50) == pytest.approx(949.5)


def test_problem_log_warns_once_per_kind():
    warnings = []
    log = ProblemLog(warnings.append)
    for i in range(5):
        log.report("encoding", f"bad {i}")
    log.report("size", "too big")
    assert log.counts == {"encoding": 5, "size": 1}
    assert len(warnings) == 2 and "bad 0" in warnings[0]
    assert log.last_error == "size: too big"
    assert log.total() == 6 and log.total("size") == 1

"""The report of an import run: per source episode what was written, dropped and why.

Both importers fill one :class:`ImportReport`; it is written as JSON (``import_report.json`` in
the dataset) and printed as a short table, so a recording with gaps, bad frames or a truncated
file is visible at a glance and nothing is dropped silently.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from astra_core.data.format import DATASET_FILE

Status = Literal["written", "dropped", "failed"]
REPORT_FILE = "import_report.json"  # in the dataset folder



@dataclass
class Gap:
    """Consecutive control ticks at which ``stream`` had no sample within the tolerance."""

    stream: str
    start_s: float
    end_s: float
    ticks: int


@dataclass
class EpisodeReport:
    source: str  # bag path + episode window, or "lerobot episode N"
    status: Status = "written"
    reason: str = ""
    episode: int | None = None  # dataset episode id, when written
    instruction: str = ""
    success: bool | None = None
    start_s: float | None = None
    end_s: float | None = None
    ticks: int = 0  # control ticks in the episode window
    steps: int = 0  # steps written
    trimmed_start: int = 0  # ticks before every stream had a sample (not gaps: the recording had not started)
    trimmed_end: int = 0  # ticks after a stream's last sample
    gap_steps: int = 0  # interior ticks dropped because a stream had no sample within tolerance
    bad_steps: int = 0  # interior ticks dropped because the newest sample of a stream was bad
    misaligned_steps: int = 0  # steps whose camera frames are further apart than sync_tolerance_s
    gaps: list[Gap] = field(default_factory=list)
    bad: dict[str, dict[str, int]] = field(default_factory=dict)  # stream -> kind -> steps dropped
    examples: dict[str, str] = field(default_factory=dict)  # "stream:kind" -> first message
    streams: dict[str, dict[str, Any]] = field(default_factory=dict)  # per stream: messages, used, repeated, ...
    warnings: list[str] = field(default_factory=list)

    def add_bad(self, stream: str, kind: str, message: str) -> None:
        kinds = self.bad.setdefault(stream, {})
        kinds[kind] = kinds.get(kind, 0) + 1
        self.examples.setdefault(f"{stream}:{kind}", message)

    def add_gap_tick(self, stream: str, tick_s: float, period_s: float) -> None:
        """Extend the stream's last gap if ``tick_s`` follows it, else open a new one."""
        for gap in reversed(self.gaps):
            if gap.stream == stream:
                if abs(tick_s - gap.end_s - period_s) < 0.5 * period_s:
                    gap.end_s, gap.ticks = tick_s, gap.ticks + 1
                    return
                break
        self.gaps.append(Gap(stream, tick_s, tick_s, 1))

    def drop(self, reason: str, status: Status = "dropped") -> None:
        self.status, self.reason, self.episode = status, reason, None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class ImportReport:
    importer: str
    output: str
    mapping: dict
    sources: list[str] = field(default_factory=list)
    episodes: list[EpisodeReport] = field(default_factory=list)
    errors: list[dict[str, str]] = field(default_factory=list)  # {"source", "error"}: sources that could not be read
    started: float = field(default_factory=time.time)
    seconds: float = 0.0
    frames_written: int = 0  # steps x cameras
    path: str | None = None  # where the report was written

    def fail_source(self, source: str, error: str) -> None:
        self.errors.append({"source": source, "error": error})

    @property
    def written(self) -> list[EpisodeReport]:
        return [e for e in self.episodes if e.status == "written"]

    @property
    def ok(self) -> bool:
        """Every source was read and every episode in it written (steps dropped at gaps or bad
        samples are reported, but follow the mapping's gap policy: they do not make a run fail)."""
        return not self.errors and bool(self.episodes) and all(e.status == "written" for e in self.episodes)

    def finish(self) -> None:
        self.seconds = time.time() - self.started

    def to_dict(self) -> dict:
        steps = sum(e.steps for e in self.written)
        return {
            "importer": self.importer,
            "output": self.output,
            "ok": self.ok,
            "episodes_written": len(self.written),
            "episodes_dropped": sum(e.status != "written" for e in self.episodes),
            "sources_failed": len(self.errors),
            "steps_written": steps,
            "frames_written": self.frames_written,
            "seconds": round(self.seconds, 3),
            "frames_per_s": round(self.frames_written / self.seconds, 1) if self.seconds > 0 else None,
            "report": self.path,
            "sources": self.sources,
            "errors": self.errors,
            "episodes": [e.to_dict() for e in self.episodes],
            "mapping": self.mapping,
        }

    def write(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=1, allow_nan=False) + "\n")
        os.replace(tmp, path)
        return path

    def save(self, out: str | os.PathLike, report_path: str | os.PathLike | None = None) -> None:
        """Write the JSON to ``report_path``, else into the dataset when there is one (a folder
        holding only a report would make the next import refuse it as a non-empty non-dataset)."""
        if report_path is None and (Path(out) / DATASET_FILE).exists():
            report_path = Path(out) / REPORT_FILE
        if report_path is not None:
            self.path = str(self.write(report_path))

    def print(self) -> int:
        """Print the table and a JSON summary line; returns the importers' exit status: 0 if
        everything was imported, 1 if an episode was dropped or a source failed."""
        print(self.summary())
        print(json.dumps({k: v for k, v in self.to_dict().items() if k not in ("episodes", "mapping", "sources")}))
        return 0 if self.ok else 1

    def summary(self) -> str:
        """A readable table: one line per source episode, then the unreadable sources."""
        lines = [f"{'status':8} {'episode':>7} {'steps':>6} {'gaps':>5} {'bad':>5} {'trim':>5} {'misal':>5}  source / reason"]
        for e in self.episodes:
            ep = "-" if e.episode is None else str(e.episode)
            trim = e.trimmed_start + e.trimmed_end
            line = f"{e.status:8} {ep:>7} {e.steps:>6} {e.gap_steps:>5} {e.bad_steps:>5} {trim:>5} {e.misaligned_steps:>5}  {e.source}"
            if e.reason:
                line += f": {e.reason}"
            lines.append(line)
            base = e.start_s or 0.0  # times into the episode read better than clock times
            for gap in e.gaps:
                lines.append(f"{'':35}gap: {gap.stream} {gap.ticks} tick(s) at {gap.start_s - base:.3f}..{gap.end_s - base:.3f} s")
            for key, message in e.examples.items():
                stream, kind = key.rsplit(":", 1)
                lines.append(f"{'':35}bad: {stream} {kind} x{e.bad[stream][kind]} (e.g. {message})")
            for warning in e.warnings:
                lines.append(f"{'':35}warning: {warning}")
        for err in self.errors:
            text = err["error"] if err["source"] in err["error"] else f"{err['source']}: {err['error']}"
            lines.append(f"{'failed':8} {'-':>7} {'-':>6} {'-':>5} {'-':>5} {'-':>5} {'-':>5}  {text}")
        d = self.to_dict()
        lines.append(
            f"{d['episodes_written']} episode(s) written ({d['steps_written']} steps, {d['frames_written']} frames, "
            f"{d['frames_per_s']} frames/s), {d['episodes_dropped']} dropped, {d['sources_failed']} source(s) unreadable"
        )
        return "\n".join(lines)

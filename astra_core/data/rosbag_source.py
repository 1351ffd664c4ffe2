"""Opening rosbag2 recordings with ``rosbags`` (pure Python, no ROS install): a type store that
knows the project's messages, topic/type checks that name the bag, and reading that survives a
truncated recording.

What a recording can look like, and what :class:`BagSource` does with it:

* a bag folder (``metadata.yaml`` + sqlite3 ``.db3`` or ``.mcap`` files): read as rosbag2 does;
* a folder without ``metadata.yaml`` (``ros2 bag record`` was killed before writing it) or a bare
  ``.db3`` / ``.mcap`` file: its storage files are read directly, in name order;
* an MCAP file cut short (no footer: the recorder died, the disk filled): its complete records
  are copied into a temporary file with a proper end, which is read instead; ``truncated`` says
  how much was kept;
* a read error in the middle (corrupt chunk, malformed sqlite page): reading stops there and
  ``truncated`` says where. Callers keep what was complete before that point.
"""

from __future__ import annotations

import os
import sqlite3
import struct
import tempfile
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

from rosbags.rosbag2 import Reader, ReaderError
from rosbags.typesys import Stores, get_types_from_msg, get_typestore

from astra_core.data.ros_messages import PROJECT_PACKAGE

STORAGE_SUFFIXES = (".mcap", ".db3")
_MCAP_MAGIC = b"\x89MCAP0\r\n"
_MCAP_FOOTER, _MCAP_DATA_END = 0x02, 0x0F
# Errors that mean "the storage is damaged from here on" rather than a bug.
READ_ERRORS = (ReaderError, sqlite3.DatabaseError, OSError, EOFError, struct.error, ValueError)


class BagError(Exception):
    """A recording that cannot be imported as mapped: names the bag, the topic and the problem."""

    def __init__(self, bag: str | os.PathLike, topic: str | None, problem: str) -> None:
        self.bag, self.topic, self.problem = str(bag), topic, problem
        where = f"bag {self.bag}" + (f", topic '{topic}'" if topic else "")
        super().__init__(f"{where}: {problem}")


def default_msg_dirs() -> list[Path]:
    """Where the project's .msg files may be: the checkout's msg/, then installed ROS prefixes."""
    dirs = [Path(__file__).resolve().parents[2] / "msg"]
    for prefix in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep):
        if prefix:
            dirs.append(Path(prefix) / "share" / PROJECT_PACKAGE / "msg")
    return dirs


def project_typestore(msg_dir: str | os.PathLike | None = None):
    """ROS 2 Kilted types plus the project's messages from ``msg/*.msg`` (get_types_from_msg).

    ``msg_dir`` overrides the search (:func:`default_msg_dirs`). The project's types are only
    needed for bags that carry them; a missing folder is reported when such a topic is read.
    """
    store = get_typestore(Stores.ROS2_KILTED)
    candidates = [Path(msg_dir)] if msg_dir else default_msg_dirs()
    for folder in candidates:
        files = sorted(folder.glob("*.msg")) if folder.is_dir() else []
        if files:
            types: dict = {}
            for path in files:
                types.update(get_types_from_msg(path.read_text(), f"{PROJECT_PACKAGE}/msg/{path.stem}"))
            store.register(types)
            store.astra_msg_dir = str(folder)  # for error messages
            break
    else:
        if msg_dir:
            raise FileNotFoundError(f"msg_dir {msg_dir}: no .msg files there")
        store.astra_msg_dir = None
    return store


def salvage_mcap(src: Path, dst: Path) -> tuple[int, int]:
    """Copy the complete records of a truncated MCAP file and give the copy a valid end.

    MCAP is a sequence of ``opcode (1 byte) + length (uint64) + body`` records, so the complete
    prefix is found by hopping over record headers. The copy ends with DataEnd + a footer without
    a summary, which rosbags reads by scanning. Returns (bytes kept, bytes in ``src``).
    """
    size = src.stat().st_size
    with src.open("rb") as f:
        if f.read(8) != _MCAP_MAGIC:
            raise ReaderError("not an MCAP file (bad magic)")
        pos = 8
        while pos + 9 <= size:
            f.seek(pos)
            op = f.read(1)[0]
            (length,) = struct.unpack("<Q", f.read(8))
            if op in (_MCAP_DATA_END, _MCAP_FOOTER) or pos + 9 + length > size:
                break
            pos += 9 + length
    with src.open("rb") as fin, dst.open("wb") as fout:
        remaining = pos
        while remaining:
            block = fin.read(min(remaining, 1 << 22))
            fout.write(block)
            remaining -= len(block)
        fout.write(bytes([_MCAP_DATA_END]) + struct.pack("<QI", 4, 0))
        fout.write(bytes([_MCAP_FOOTER]) + struct.pack("<QQQI", 20, 0, 0, 0) + _MCAP_MAGIC)
    return pos, size


@dataclass
class TopicInfo:
    topic: str
    msgtype: str
    count: int
    digest: str  # RIHS01 type hash the recorder stored ("" when the bag has none)


class BagSource:
    """One recording, opened for reading (a context manager). See the module docstring."""

    def __init__(self, path: str | os.PathLike, typestore, tmp_dir: str | os.PathLike | None = None) -> None:
        self.path = Path(path)
        self.typestore = typestore
        self._tmp_dir = tmp_dir
        self._stack = ExitStack()
        self._readers: list[Reader] = []
        self.topics: dict[str, TopicInfo] = {}
        self.truncated: str | None = None  # why reading ended early (None: read completely)
        self.last_read_ns: int | None = None

    # -- opening --------------------------------------------------------------------------------

    def __enter__(self) -> "BagSource":
        try:
            self._open()
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self._stack.close()

    def _open(self) -> None:
        if not self.path.exists():
            raise BagError(self.path, None, "does not exist")
        if self.path.is_dir() and (self.path / "metadata.yaml").is_file():
            try:
                self._add_reader(self.path)
            except READ_ERRORS as err:
                # Damaged storage behind a valid metadata.yaml: fall back to the files themselves.
                self._readers.clear()
                self._open_files(self._storage_files(), first_error=err)
        else:
            self._open_files(self._storage_files())
        for reader in self._readers:
            for conn in reader.connections:
                known = self.topics.get(conn.topic)
                if known is not None and known.msgtype != conn.msgtype:
                    raise BagError(self.path, conn.topic, f"recorded with two types, {known.msgtype} and {conn.msgtype}")
                count = conn.msgcount + (known.count if known else 0)
                self.topics[conn.topic] = TopicInfo(conn.topic, conn.msgtype, count, conn.digest or "")

    def _storage_files(self) -> list[Path]:
        if self.path.is_file():
            if self.path.suffix not in STORAGE_SUFFIXES:
                raise BagError(self.path, None, f"not a rosbag2 folder or storage file ({', '.join(STORAGE_SUFFIXES)})")
            return [self.path]
        files = sorted(p for p in self.path.iterdir() if p.suffix in STORAGE_SUFFIXES)
        if not files:
            raise BagError(self.path, None, "no metadata.yaml and no .mcap / .db3 storage file")
        return files

    def _open_files(self, files: list[Path], first_error: BaseException | None = None) -> None:
        for i, path in enumerate(files):
            try:
                self._add_reader(path)
                continue
            except READ_ERRORS as err:
                error = err
            if path.suffix == ".mcap":
                try:
                    self._add_salvaged(path)
                    continue
                except READ_ERRORS as err:
                    error = err
            # A damaged file ends the recording there; the files before it are still good.
            self.truncated = f"{path.name} cannot be read ({error}); the recording ends before it"
            if i == 0:
                cause = first_error or error
                raise BagError(self.path, None, f"cannot be read: {cause}")
            return

    def _add_reader(self, path: Path) -> None:
        reader = Reader(path)
        reader.open()
        self._stack.callback(reader.close)
        self._readers.append(reader)

    def _add_salvaged(self, path: Path) -> None:
        tmp = Path(self._stack.enter_context(tempfile.TemporaryDirectory(prefix="astra-salvage-", dir=self._tmp_dir)))
        copy = tmp / path.name
        kept, size = salvage_mcap(path, copy)
        self._add_reader(copy)
        self.truncated = (f"{path.name} is truncated (no MCAP footer): read its {kept} complete bytes of {size}; "
                          f"the recording ends there")

    # -- checks ---------------------------------------------------------------------------------

    def check_topic(self, topic: str, allowed: Iterable[str], role: str) -> str:
        """The topic's message type, after checking it exists with one of the ``allowed`` types."""
        allowed = tuple(allowed)
        info = self.topics.get(topic)
        if info is None:
            have = ", ".join(f"{t} ({i.msgtype})" for t, i in sorted(self.topics.items())) or "none"
            raise BagError(self.path, topic, f"{role} topic is not in the bag; its topics: {have}")
        if info.msgtype not in allowed:
            raise BagError(self.path, topic, f"{role} topic has type {info.msgtype}; expected {' or '.join(allowed)}")
        if info.msgtype.startswith(f"{PROJECT_PACKAGE}/"):
            self._check_project_type(info)
        return info.msgtype

    def _check_project_type(self, info: TopicInfo) -> None:
        if info.msgtype not in self.typestore.types:
            where = self.typestore.astra_msg_dir or ", ".join(str(d) for d in default_msg_dirs())
            raise BagError(self.path, info.topic, f"type {info.msgtype} is unknown: no project .msg files found ({where}); set msg_dir")
        ours = self.typestore.hash_rihs01(info.msgtype)
        if info.digest and info.digest != ours:
            raise BagError(self.path, info.topic, f"recorded with another definition of {info.msgtype} (type hash {info.digest}) "
                                                  f"than msg/ has ({ours}); import with the msg/ folder it was recorded with (msg_dir)")

    # -- reading --------------------------------------------------------------------------------

    def messages(self, topics: Iterable[str]) -> Iterator[tuple[str, int, Any]]:
        """``(topic, receive time ns, message)`` in receive order; a message that does not
        deserialise comes as the exception instead. A storage error ends the iteration and sets
        ``truncated``."""
        wanted = set(topics)
        for reader in self._readers:
            connections = [c for c in reader.connections if c.topic in wanted]
            if not connections:
                continue
            iterator = reader.messages(connections=connections)
            while True:
                try:
                    conn, t_ns, raw = next(iterator)
                except StopIteration:
                    break
                except READ_ERRORS as err:
                    at = "" if self.last_read_ns is None else f" after t={self.last_read_ns / 1e9:.3f} s"
                    self.truncated = f"read error{at}: {err}; the recording ends there"
                    return
                self.last_read_ns = t_ns
                try:
                    msg = self.typestore.deserialize_cdr(raw, conn.msgtype)
                except Exception as err:  # corrupt bytes: any decoder error, reported per message
                    msg = err
                yield conn.topic, t_ns, msg

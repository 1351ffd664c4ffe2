"""Checks of an incoming instruction text. Pure Python.

rclpy decodes std_msgs/String data as UTF-8 with replacement: bytes that are not valid UTF-8
(e.g. ff fe fd, or "pick \\xc3\\x28 up") arrive as text containing U+FFFD. Such text is not what the
sender meant; acting on it (new episode, commands for a garbled task) is worse than ignoring it,
so it is refused like an empty or over-long instruction.
"""

from __future__ import annotations

REPLACEMENT_CHARACTER = "\ufffd"


class InstructionError(ValueError):
    """A refused instruction; `kind` is the problem counter's key."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


# the problem kinds this module raises (counted as bad messages by the node)
INSTRUCTION_PROBLEMS = ("empty_instruction", "long_instruction", "invalid_utf8")


def check_instruction(text: str, max_chars: int) -> str:
    """-> the instruction to act on (surrounding whitespace removed); InstructionError otherwise."""
    if REPLACEMENT_CHARACTER in text:
        where = text.index(REPLACEMENT_CHARACTER)
        raise InstructionError("invalid_utf8", f"instruction is not valid UTF-8 (undecodable bytes at "
                                               f"character {where} of {len(text)}); ignored")
    text = text.strip()
    if not text:
        raise InstructionError("empty_instruction", "received an empty instruction; ignored")
    if len(text) > max_chars:
        raise InstructionError("long_instruction",
                               f"instruction of {len(text)} characters exceeds instruction_max_chars={max_chars}; ignored")
    return text

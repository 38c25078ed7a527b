"""What a Mac says reaches the admin's terminal as text to read, never as commands to the terminal.

A broken or compromised Mac can put escape sequences in its log or its tools' output: retitle
the window, clear the screen, write the clipboard (OSC 52). Every console fleetctl prints on is
a `Console` from here: it shows control characters the way Python's repr does (`\\x1b`), keeps
tabs and newlines, and never parses markup or emoji codes in what it prints. Files keep the
exact text (JSON escapes it); HTML and JUnit pass it through `visible` too.
"""
from __future__ import annotations

import re
from typing import Iterable

import rich.console
from rich.segment import Segment

# C0 controls but tab and newline, DEL, C1 controls, the bidirectional overrides that reorder
# what is shown ("Trojan Source"), and the two non-characters XML refuses.
_HIDDEN = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\ufffe\uffff]")


def _shown(match: re.Match) -> str:
    code = ord(match[0])
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def visible(text: str) -> str:
    """TEXT with every control character written out (`\\x1b`, `\\x00`, `\\u202e`); tabs and newlines kept."""
    return _HIDDEN.sub(_shown, text)


class Console(rich.console.Console):
    """A rich Console for output that may carry a Mac's words: no markup, emoji or highlighting
    is read from them, and control characters are shown, not sent. Text is made visible before
    layout (so tables stay aligned) and again as it is written, which also covers Text objects."""

    def __init__(self, **kwargs) -> None:
        super().__init__(markup=False, emoji=False, highlight=False, **kwargs)

    def render_str(self, text: str, **kwargs) -> "rich.text.Text":
        return super().render_str(visible(text), **kwargs)

    def _render_buffer(self, buffer: Iterable[Segment]) -> str:
        # Control segments are rich's own cursor moves (live progress); everything else is text.
        return super()._render_buffer(segment if segment.control else Segment(visible(segment.text), segment.style)
                                      for segment in buffer)

"""What a Mac writes on one stream of one step, kept within bounds.

A broken Mac can write a 60 MB line or never stop writing: the controller keeps at most
LINE_MAX bytes of a line and STREAM_MAX bytes of a stream, and says where it cut
(`… (N bytes cut)`), so one Mac costs the controller the same memory as any other.
"""
from __future__ import annotations

LINE_MAX = 4096  # bytes of one line; the agent's own log lines are far shorter
STREAM_MAX = 1 << 20  # bytes of one stream of one step: a status probe with 500 log records fits
MAC_LINE_MAX = LINE_MAX // 2  # scripts that read the agent's log cut its lines on the Mac, marker and all


def cut_marker(count: int) -> bytes:
    return f"… ({count} bytes cut)".encode()


class Capture:
    """Bytes as they arrive, capped per line and in all; `text()` is what was kept."""

    def __init__(self, line_max: int = LINE_MAX, stream_max: int = STREAM_MAX):
        self.line_max, self.stream_max = line_max, stream_max
        self.parts: list[bytes] = []
        self.kept = 0  # bytes in parts
        self.line = 0  # bytes of the current line seen so far
        self.line_cut = 0  # bytes of the current line not kept
        self.cut = 0  # bytes dropped once STREAM_MAX was reached

    def add(self, data: bytes) -> None:
        start = 0
        while start < len(data):
            if self.kept >= self.stream_max:
                self.cut += len(data) - start
                return
            newline = data.find(b"\n", start)
            end = len(data) if newline < 0 else newline
            self._keep(data[start:end])
            if newline < 0:
                return
            self._end_line()
            start = newline + 1

    def _keep(self, piece: bytes) -> None:
        line_room = max(0, self.line_max - self.line)
        kept = piece[:min(line_room, max(0, self.stream_max - self.kept))]
        if kept:
            self.parts.append(kept)
            self.kept += len(kept)
        self.line += len(piece)
        over_line = max(0, len(piece) - line_room)
        self.line_cut += over_line
        self.cut += len(piece) - len(kept) - over_line

    def _end_line(self) -> None:
        if self.line_cut:
            self.parts.append(b" " + cut_marker(self.line_cut))
        self.parts.append(b"\n")
        self.kept += 1
        self.line = self.line_cut = 0

    def text(self) -> str:
        """What was kept, as text: invalid UTF-8 written as `\\xff`, never dropped or guessed."""
        kept = b"".join(self.parts) + (b" " + cut_marker(self.line_cut) if self.line_cut else b"")
        if self.cut:
            kept += (b"" if kept.endswith(b"\n") or not kept else b"\n") + cut_marker(self.cut)
        return kept.decode(errors="backslashreplace")

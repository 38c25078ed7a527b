"""Parse the key=value lines the fact and verify scripts print on a Mac."""
from __future__ import annotations


def parse(output: str) -> dict[str, list[str]]:
    """Every key maps to its values in order (some keys, like log_error, repeat)."""
    found: dict[str, list[str]] = {}
    for line in output.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.isidentifier():
            found.setdefault(key, []).append(value.strip())
    return found


def first(facts: dict[str, list[str]], key: str, default: str = "") -> str:
    values = facts.get(key)
    return values[0] if values else default


def number(facts: dict[str, list[str]], key: str) -> int | None:
    text = first(facts, key)
    return int(text) if text.isdigit() else None


def installer_failure(output: str) -> str:
    """The reason in `installer: The install failed. (<reason>)`, or the last line said."""
    for line in reversed(output.splitlines()):
        if line.startswith("installer: The install failed."):
            text = line.removeprefix("installer: The install failed.").strip()
            return text[1:-1] if text.startswith("(") and text.endswith(")") else text or "install failed"
    lines = [l for l in output.splitlines() if l.strip()]
    return lines[-1] if lines else "installer failed without output"

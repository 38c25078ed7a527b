"""What the macOS command shims share: the lab's per-host facts, the invocation counter, and
how a command fails. Lies beside macshim.py in /usr/local/bin/.lib on every simulated Mac.
"""
import fcntl
import os
import sys

LAB = "/private/var/fleetlab"


# What a shim costs is mostly Python starting and importing: json alone (through re and enum)
# doubled the cost of a `sysctl`, and plistlib tripled a `pkgutil --pkg-info`; fleetctl's probe
# runs three shims on every Mac, so the lab at 1,000 Macs spent more on imports than on
# answering. The two readers below give exactly what json.loads and plistlib.loads give
# (for what they do not handle themselves, they ask those modules), importing neither.

_JSON_SPACE = " \t\n\r"


class _JSONDecoder:  # the settings json.loads uses by default, for the C scanner json itself uses
    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = {"-Infinity": float("-inf"), "Infinity": float("inf"), "NaN": float("nan")}.__getitem__
    memo: dict = {}


def loads(text: str):
    """json.loads(TEXT), without importing json unless TEXT is not valid JSON (then json.loads
    raises its own error)."""
    try:
        from _json import make_scanner

        start = len(text) - len(text.lstrip(_JSON_SPACE))
        value, end = make_scanner(_JSONDecoder())(text, start)
        if not text[end:].strip(_JSON_SPACE):
            return value
    except Exception:
        pass
    import json

    return json.loads(text)


class _NotPlain(Exception):
    """An XML plist with more than dict, array, key, string, decimal integer, true, false."""


def _plain_xml_plist(data: bytes):
    from pyexpat import ParserCreate

    top, stack, keys, chars = [], [], [], []

    def add(value):
        if not stack:
            if top:
                raise _NotPlain()
            top.append(value)
        elif isinstance(stack[-1], dict):
            if keys[-1] is None:
                raise _NotPlain()
            stack[-1][keys[-1]] = value
            keys[-1] = None
        else:
            stack[-1].append(value)

    def start(tag, attrs):
        chars.clear()
        if tag in ("dict", "array"):
            value = {} if tag == "dict" else []
            add(value)
            stack.append(value)
            keys.append(None)
        elif tag not in ("plist", "key", "string", "integer", "true", "false") or attrs and tag != "plist":
            raise _NotPlain()

    def end(tag):
        text = "".join(chars)
        if tag in ("dict", "array"):
            if keys.pop() is not None:
                raise _NotPlain()
            stack.pop()
        elif tag == "key":
            if not stack or not isinstance(stack[-1], dict) or keys[-1] is not None:
                raise _NotPlain()
            keys[-1] = text
        elif tag == "string":
            add(text)
        elif tag == "integer":
            if not (text[1:] if text[:1] == "-" else text).isdigit() or not text.isascii():
                raise _NotPlain()
            add(int(text))
        elif tag in ("true", "false"):
            add(tag == "true")

    def no_entities(*_):
        raise _NotPlain()

    parser = ParserCreate()
    parser.StartElementHandler, parser.EndElementHandler = start, end
    parser.CharacterDataHandler = chars.append
    parser.EntityDeclHandler = no_entities
    parser.Parse(data, True)
    if len(top) != 1 or stack:
        raise _NotPlain()
    return top[0]


def read_plist(path: str):
    """plistlib.load of the file at PATH (OSError if it cannot be read). The plain XML plists
    the lab writes are read with expat directly; anything else goes to plistlib, which returns
    or raises what it always does."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:5] == b"<?xml" or data[:6] == b"<plist":
        try:
            return _plain_xml_plist(data)
        except Exception:
            pass
    import plistlib

    return plistlib.loads(data)


def facts() -> dict:
    with open(LAB + "/host.json") as f:
        return loads(f.read())


def count(name: str) -> None:
    """Add one to this command's invocation counter (atomic under concurrent calls).

    One copy per place it is installed: this one for every shim in /usr/local/bin/.lib; the
    simulated agent, installed by its package into the app bundle, has its own
    (agent/agentcommon.py), and so does string-util, which must run standalone."""
    fd = os.open(f"{LAB}/counts/{name}", os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        n = int(os.read(fd, 32) or b"0")
        os.lseek(fd, 0, 0)
        os.ftruncate(fd, 0)
        os.write(fd, b"%d\n" % (n + 1))
        if os.fstat(fd).st_uid == os.geteuid():
            os.fchmod(fd, 0o666)
    finally:
        os.close(fd)


def fail(message: str, code: int = 1) -> None:
    print(message, file=sys.stderr)
    sys.exit(code)

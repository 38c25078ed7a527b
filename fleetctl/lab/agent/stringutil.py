#!/usr/bin/python3 -S
"""string-util: the simulated vendor tool that encrypts a proxy user or password.

Shipped twice in the lab package: as the program Contents/MacOS/string-util (this file,
standalone, so it also runs straight out of an extracted payload) and as a module beside
qagent.py, which decodes what it printed. Usage, as the guide documents it:

    sudo string-util "<text>"   ->  prints the encoded text, bare, on one line

The proxy file then carries it after a "#": https://#<user>:#<password>@host:port, where the
encrypted text is the percent-encoded credential (the agent decrypts, then percent-decodes).
The encoding is a keyed XOR in URL-safe base64 without padding, so the output needs no
percent-encoding in a URL. Stdlib only: it runs with the Mac's /usr/bin/python3.
"""
import base64
import fcntl
import os
import sys

KEY = b"fleetlab/QualysCloudAgent/string-util"
USAGE = 'Usage: string-util "<text>"'


def _xor(data: bytes) -> bytes:
    return bytes(b ^ KEY[i % len(KEY)] for i, b in enumerate(data))


def encode(text: str) -> str:
    """What string-util prints for TEXT (without the '#' the proxy file adds)."""
    return base64.urlsafe_b64encode(_xor(text.encode())).decode().rstrip("=")


def decode(encoded: str) -> str:
    """The clear text behind ENCODED; ValueError when it is not string-util output."""
    try:
        raw = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
        return _xor(raw).decode()
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError("not a string-util value") from e


def _count() -> None:
    """Count this call like every lab tool does (only on a simulated Mac)."""
    try:
        fd = os.open("/private/var/fleetlab/counts/string-util", os.O_RDWR | os.O_CREAT, 0o666)
    except OSError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        n = int(os.read(fd, 32) or b"0")
        os.lseek(fd, 0, 0)
        os.ftruncate(fd, 0)
        os.write(fd, b"%d\n" % (n + 1))
    finally:
        os.close(fd)


def main(args: list) -> int:
    _count()
    if os.geteuid() != 0:
        print("string-util: must be run as root (use sudo)", file=sys.stderr)
        return 1
    if len(args) != 1 or not args[0]:
        print(USAGE, file=sys.stderr)
        return 1
    print(encode(args[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

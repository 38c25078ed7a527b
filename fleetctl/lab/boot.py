"""Start one lab process (a Mac's sshd, the proxy) inside its own mount namespace.

Run as `unshare --mount --uts --propagation private python3 -I -S boot.py DIR`: reads
DIR/boot.json, bind-mounts each [source, target], sets the host name, then execs argv.
Stdlib only and no shell, so nothing is ever parsed as a command line.
"""
import ctypes
import json
import os
import socket
import sys

MS_BIND = 4096
MS_REC = 16384


def main(directory: str) -> None:
    with open(os.path.join(directory, "boot.json")) as f:
        boot = json.load(f)
    libc = ctypes.CDLL(None, use_errno=True)
    # Open every source first: a bind over /tmp must not hide a source that lives under /tmp.
    sources = [os.open(source, os.O_PATH) for source, _ in boot["binds"]]
    for fd, (source, target) in zip(sources, boot["binds"]):
        if libc.mount(f"/proc/self/fd/{fd}".encode(), target.encode(), None, MS_BIND | MS_REC, None) != 0:
            err = ctypes.get_errno()
            sys.exit(f"fleetlab boot: mount {source} on {target}: {os.strerror(err)}")
    for fd in sources:
        os.close(fd)
    if boot.get("hostname"):
        socket.sethostname(boot["hostname"])
    os.execv(boot["argv"][0], boot["argv"])


if __name__ == "__main__":
    main(sys.argv[1])

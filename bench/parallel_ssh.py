"""Start every job (ssh with a file on stdin) at once and wait for all; exit 1 if any failed."""
import json
import subprocess
import sys


def main(path: str) -> int:
    jobs = json.loads(open(path).read())
    procs = []
    for job in jobs:
        with open(job["stdin"], "rb") as stdin:
            procs.append(subprocess.Popen(job["argv"], stdin=stdin, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL))
    return 1 if any(p.wait(timeout=3600) != 0 for p in procs) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))

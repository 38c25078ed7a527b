"""The simulated Qualys Cloud Agent, installed by the lab's fake package on simulated Macs.

The entry point behind the real script names: each wrapper the package installs (see
pkgbuild.TOOLS) puts Contents/Resources first on sys.path, imports this module and calls
main([command, *args]). It does what ../../shared/spec/qualys-macos-agent.md says the real
agent does, and never more kindly. Stdlib only. The modules, all top-level in Resources:

    qagent.py       this entry point: the command table
    agentcommon.py  paths, configuration file, invocation counter, the log (its messages listed)
    configtool.py   qualys-cloud-agent.sh: option validation and saving
    proxyfile.py    the strict proxy-file parser and credential decoding
    agentdaemon.py  qualys-cloud-agent: contact with the platform, cycles, on-demand scans
    agenttools.py   qagent_upgrade.sh, qagent_restart.sh, qagent_uninstall.sh, cloudagentctl.sh
    stringutil.py   string-util's encoding (also shipped alone as the program MacOS/string-util)
"""
import sys

import agentdaemon
import agenttools
import configtool
from agentcommon import Invalid, count

COMMANDS = {"configure": configtool.configure, "daemon": agentdaemon.daemon, "upgrade": agenttools.upgrade,
            "restart": agenttools.restart, "uninstall": agenttools.uninstall, "ctl": agenttools.ctl}
SCRIPT_NAMES = {"configure": "qualys-cloud-agent.sh", "upgrade": "qagent_upgrade.sh", "restart": "qagent_restart.sh",
                "uninstall": "qagent_uninstall.sh", "ctl": "cloudagentctl.sh", "daemon": "qualys-cloud-agent"}


def main(argv: list) -> None:
    command = argv[0]
    count(SCRIPT_NAMES[command])
    try:
        COMMANDS[command](argv[1:])
    except Invalid as e:
        print(e, file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main(sys.argv[1:])

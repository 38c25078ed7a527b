"""One module per action: the scripts it runs (what `fleetctl plan` shows) and its decisions."""
from datetime import timedelta

from fleetctl.actions import configure, install, scan, status, uninstall, upgrade

# `action: status` in a playbook: the health of each Mac, from its agent's last day of records.
ACTIONS = {"install": install, "upgrade": upgrade, "uninstall": uninstall, "configure": configure, "scan": scan,
           "status": status.Check(timedelta(hours=24))}

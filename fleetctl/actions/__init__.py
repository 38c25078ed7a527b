"""One module per action: the scripts it runs (what `fleetctl plan` shows) and its decisions."""
from fleetctl.actions import configure, install, scan, uninstall, upgrade

ACTIONS = {"install": install, "upgrade": upgrade, "uninstall": uninstall, "configure": configure, "scan": scan}

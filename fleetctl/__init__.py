"""fleetctl: roll the Qualys Cloud Agent out to fleets of Macs over SSH."""

__version__ = "0.1.0"

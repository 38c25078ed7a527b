"""One exception family, so the CLI can turn any failure into one clear line and an exit code."""


class FleetError(Exception):
    """A failure the user can act on; the message says what and how to fix it."""

    exit_code = 1


class UsageError(FleetError):
    """Bad input (options, files, specs): nothing was touched."""

    exit_code = 2


class LabError(FleetError):
    """The simulated fleet could not be started, inspected or stopped."""

    exit_code = 1

"""The one exception type the CLI turns into a clear message and an exit code."""


class AbmError(Exception):
    """An expected problem the user can fix: bad input, bad configuration, missing setup."""

    exit_code = 2


class ConfigError(AbmError):
    """A configuration or input file is wrong; the message names file, line and field."""

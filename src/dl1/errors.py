"""Errors that reach the user as one line (no traceback)."""


class DL1Error(Exception):
    """A problem the user can fix (missing data, missing weights, bad file): one line, exit status 1."""

    exit_code = 1


class UsageError(DL1Error):
    """A bad flag or value on the command line: one line, exit status 2."""

    exit_code = 2

"""Errors that reach the user as one line (no traceback)."""


class DL1Error(Exception):
    """A problem the user can fix (missing data, missing weights, bad file): one line, exit status 1."""

    exit_code = 1


class UsageError(DL1Error):
    """A bad flag or value on the command line: one line, exit status 2."""

    exit_code = 2


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first non-empty line of an exception's message, cut at ``limit`` characters (its type name if empty).

    PyTorch's advice to pass ``weights_only=False`` is never repeated: dl1 does not switch off that check."""
    text = str(exc).strip()
    line = text.splitlines()[0].strip() if text else type(exc).__name__
    cut = line.find("weights_only=False")
    if cut >= 0 or "WeightsUnpickler" in line or "Weights only load failed" in line:
        line = "the file holds objects other than tensors and plain containers (refused: loading them could run code)"
    return line[:limit] + ("..." if len(line) > limit else "")

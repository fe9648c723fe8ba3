"""One exception type for mistakes a user can fix.

The CLI prints ``error: <message>`` and exits with status 2 instead of a traceback, so every
message should name the problem *and* the fix in one line.
"""


class MiniSPDFError(Exception):
    """A user-facing error: bad input, missing data, wrong checkpoint, no network."""

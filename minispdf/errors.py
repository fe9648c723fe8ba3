"""One exception type for mistakes a user can fix, one way to quote another error, and one way
to count things in a message.

The CLI prints ``error: <message>`` and exits with status 2 instead of a traceback, so every
message should name the problem *and* the fix in one line.
"""


class MiniSPDFError(Exception):
    """A user-facing error: bad input, missing data, wrong checkpoint, no network."""


def one_line(error: BaseException | str, limit: int = 200) -> str:
    """A caught error's message as one line to quote inside a :class:`MiniSPDFError`: its lines
    joined, whitespace collapsed, cut to ``limit`` characters (the type's name if it has no
    text)."""
    text = " ".join(str(error).split())
    if not text and isinstance(error, BaseException):
        text = type(error).__name__
    return text[:limit]


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """``n`` and its noun in the right number: ``1 thread``, ``2 threads``, ``0 cells``,
    ``1 GPU``; ``plural`` where adding an s is wrong."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


class Interrupted(KeyboardInterrupt):
    """Training stopped by SIGINT or SIGTERM after its current step. ``saved`` is the checkpoint
    written at that step (None without a run folder); ``signum`` the signal; the text says both."""

    def __init__(self, message: str, signum: int, step: int, saved: str | None):
        super().__init__(message)
        self.signum, self.step, self.saved = signum, step, saved

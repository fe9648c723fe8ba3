"""The training loop's bookkeeping, as callbacks ``cb(event, record)``: the log file
(``RunLog``), the progress bar (``ProgressBar``) and Ctrl-C / SIGTERM (``StopSignals``), and
``notify``, which tells them all. :func:`minispdf.train.train` installs them; the loop itself
holds no bookkeeping. Each is made from the loop's ``train.TrainState`` (``s``)."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading

from .errors import MiniSPDFError, one_line
from .fileio import write_text


class RunLog:
    """Keeps ``history`` and (on rank 0, with a run folder) appends it to ``log.jsonl``: every
    ``log_interval``-th step record, the last one, and every evaluation."""

    def __init__(self, out_dir: str | None, s, resume: bool):
        self.every, self.last = s.cfg.log_interval, s.cfg.max_steps
        self.history: list[dict] = []
        self.path = os.path.join(out_dir, "log.jsonl") if out_dir and s.rank == 0 else None
        if self.path:
            os.makedirs(out_dir, exist_ok=True)
            # drop the records written after the checkpoint
            if resume and os.path.exists(self.path):
                kept = [line for line, rec in self.read(self.path) if rec["step"] <= s.step]
                write_text(self.path, "".join(kept))  # atomic: an interrupt keeps the old log
            elif not resume:
                open(self.path, "w").close()

    @staticmethod
    def read(path: str) -> list[tuple[str, dict]]:
        """``(line, record)`` of every record; a torn last line (the run was killed while writing
        it) is dropped with a note, any other unreadable line is an error."""
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = [line for line in f if line.strip()]
        out = []
        for i, line in enumerate(lines, 1):
            try:
                rec = json.loads(line)
                if not (isinstance(rec, dict) and isinstance(rec.get("step"), int)):
                    raise ValueError("not a record with a step")
            except ValueError as e:
                if i == len(lines):
                    print(f"note: dropped the torn last line of {path} (the run was stopped "
                          f"while writing it)",
                          file=sys.stderr)
                    break
                raise MiniSPDFError(f"{path} line {i} is not a log record ({one_line(e, 80)}): "
                                    f"move the file away "
                                    "to resume without the old log") from None
            out.append((line if line.endswith("\n") else line + "\n", rec))
        return out

    def __call__(self, event: str, record: dict) -> None:
        if event == "eval" or (event == "step" and (record["step"] % self.every == 0
                                                    or record["step"] == self.last)):
            self.history.append(record)
            if self.path:
                with open(self.path, "a") as f:
                    f.write(json.dumps(record) + "\n")


class ProgressBar:
    """A tqdm bar with the current loss; a log file (not a terminal) gets an update every 30 s."""

    def __init__(self, s):
        from tqdm.auto import tqdm

        interactive = sys.stderr.isatty() or "ipykernel" in sys.modules
        kwargs = dict(total=s.cfg.max_steps, initial=s.step, desc=s.meta.get("phase", "train"),
                      leave=True,
                      mininterval=0.2 if interactive else 30)
        # a notebook's display handle: close() rewrites the saved output to the last state
        self.shown = None
        from tqdm.notebook import tqdm as widget_bar

        # tqdm.auto chose the widget (in a notebook with ipywidgets)
        if issubclass(tqdm, widget_bar):
            from IPython.display import display

            self.bar = tqdm(**kwargs, display=False)
            self.shown = display(self.bar.container, display_id=True)
        else:
            self.bar = tqdm(**kwargs)

    def __call__(self, event: str, record: dict) -> None:
        if event == "step":
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{record['loss']:.3f}", refresh=False)

    def close(self) -> None:
        self.bar.close()
        # a saved notebook then shows "1200/1200", not the 0% it was drawn at
        if self.shown is not None:
            self.shown.update(self.bar.container)


class StopSignals:
    """``with StopSignals() as signals:`` SIGINT (Ctrl-C) and SIGTERM ask the loop to stop after the
    current step (it is a callback that then returns True), so that ``train`` saves a checkpoint at
    a step boundary; a second signal stops at once (KeyboardInterrupt). Off outside the main thread
    (signal handlers cannot be set there) and under DDP (the ranks would stop at different
    steps)."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled and threading.current_thread() is threading.main_thread()
        self.signum: int | None = None
        self._previous: dict = {}

    def __enter__(self):
        if self.enabled:
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt  # the second: now
        self.signum = signum
        print(f"\n{signal.Signals(signum).name}: saving a checkpoint after this step (again to "
              f"stop at once)",
              file=sys.stderr, flush=True)

    def __call__(self, event: str, record: dict) -> bool:
        return self.signum is not None

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def notify(callbacks, event: str, record: dict) -> bool:
    """Tell every callback (none is skipped); True if any of them asks to stop."""
    return any([bool(cb(event, record)) for cb in callbacks])

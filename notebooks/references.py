"""Executed reference copies of the lessons, and the lessons' measured run times.

    python notebooks/references.py                 # execute every lesson at the default scale ->
    notebooks/reference/NAME.html
    python notebooks/references.py 00 03           # only these lessons
    python notebooks/references.py --text          # lesson text edited, code unchanged: refresh the
    references' text
    python notebooks/references.py --times         # also record wall and CPU time per lesson in
    results/lesson_times.md
    python notebooks/references.py --check         # exit 1 if a reference's code differs from its
    lesson's

Each lesson runs as a student runs it: a Jupyter kernel, the default scale, the lesson's
default thread setting (``THREADS = 1``: a ``MINISPDF_THREADS`` in the calling shell is dropped,
since other thread counts print other numbers), figures drawn inline (no ``MPLBACKEND``), from a
temporary copy of ``notebooks/`` whose ``../results`` is the repository's (lesson 05 reads the
committed study). Progress bars are widgets: their saved text is rewritten from the final widget
state, so a saved reference shows "1200/1200", not "0%".

``--times`` records per lesson the wall time of the whole execution (kernel start to finish)
and the CPU time (user + system) of the kernel process tree, with the command, machine and
load, in ``results/lesson_times.md`` and ``results/lesson_times.json``; ``sync.py`` copies the
figures into each lesson's header from there. Measure on a quiet machine: a busy one inflates
the wall time, and the header says what a student should expect.
"""

from __future__ import annotations

import argparse
import html
import json
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
OUT = HERE / "reference"
TIMES_MD = ROOT / "results" / "lesson_times.md"
TIMES_JSON = ROOT / "results" / "lesson_times.json"
sys.path.insert(0, str(ROOT))  # the minispdf next to this folder


def lessons(only=()) -> list[Path]:
    found = sorted(HERE.glob("[0-9][0-9]_*.ipynb"))
    return [p for p in found if not only or p.name[:2] in only or p.stem in only]


def _code(nb) -> list[str]:
    return [c.source for c in nb.cells if c.cell_type == "code"]


def _widget_text(nb) -> None:
    """Give every widget output (a progress bar) the text of its final state, from the widget
    state nbclient saved: the text a renderer without widgets shows, and what the bar ended at."""
    state = nb.metadata.get("widgets", {}).get("application/vnd.jupyter.widget-state+json",
                                               {}).get("state", {})

    def model(ref):
        return state.get(str(ref).removeprefix("IPY_MODEL_"), {}).get("state", {})

    for cell in nb.cells:
        for out in cell.get("outputs", []):
            view = out.get("data", {}).get("application/vnd.jupyter.widget-view+json")
            if not view:
                continue
            # tqdm's bar is an HBox: HTML (description, percent), FloatProgress, HTML (n/total,
            # rate, postfix)
            texts = [html.unescape(str(model(child).get("value", ""))).replace("\xa0", " ").strip()
                     for child in model(view.get("model_id")).get("children", [])
                     if isinstance(model(child).get("value"), str)]
            if any(texts):
                out["data"]["text/plain"] = " ".join(t for t in texts if t)


def kernel_env(environ) -> dict:
    """The kernel's environment: the caller's, run as a student runs a lesson (default scale, the
    lesson's own thread count, figures inline) with the minispdf next to this folder."""
    env = {k: v for k, v in environ.items() if k not in ("MPLBACKEND", "MINISPDF_THREADS")}
    env.update(MINISPDF_SCALE="default",
               PYTHONPATH=str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""))
    return env


def execute(path: Path, timeout: int = 3600) -> tuple[object, float, float]:
    """The executed notebook, its wall seconds and the CPU seconds of its kernel."""
    import nbformat
    from nbclient import NotebookClient

    with tempfile.TemporaryDirectory(prefix="minispdf-reference-") as tmp:
        work = Path(tmp) / "notebooks"
        work.mkdir()
        (Path(tmp) / "results").symlink_to(ROOT / "results")
        shutil.copy(path, work / path.name)
        nb = nbformat.read(str(path), as_version=4)
        # one cell more, removed after the run: the kernel's own torch, recorded with the outputs
        nb.cells.append(nbformat.v4.new_code_cell("import torch\nprint(torch.__version__, end='')"))
        env = kernel_env(os.environ)
        saved = os.environ.copy()
        os.environ.clear()
        os.environ.update(env)
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        try:
            NotebookClient(nb, timeout=timeout, kernel_name="python3", store_widget_state=True,
                           resources={"metadata": {"path": str(work)}}).execute()
        finally:
            os.environ.clear()
            os.environ.update(saved)
        wall = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)  # the kernel, reaped when it shut down
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    asked = nb.cells.pop()
    nb.metadata["minispdf_reference"] = {"torch": "".join(o.get("text", "") for o in asked.outputs
                                                          if o.get("name") == "stdout")}
    _widget_text(nb)
    return nb, wall, cpu


def _record(nb) -> dict:
    """What the tests read of a reference: its cells' sources, the text it printed (streams and
    plain-text results, figures left out), its errors, its progress bars' final text and the
    kernel's torch version."""
    printed, bars, errors = [], [], 0
    for cell in nb.cells:
        for out in cell.get("outputs", []) if cell.cell_type == "code" else []:
            data = out.get("data", {})
            if out.get("output_type") == "stream":
                printed.append(out.get("text", ""))
            elif out.get("output_type") == "error":
                errors += 1
            elif "application/vnd.jupyter.widget-view+json" in data:
                bars.append(data.get("text/plain", ""))
            elif "image/png" not in data:
                printed.append(data.get("text/plain", ""))
    return {"cells": [{"cell_type": c.cell_type, "source": c.source} for c in nb.cells],
            "printed": "\n".join(printed), "bars": bars, "errors": errors,
            "torch": nb.metadata.get("minispdf_reference", {}).get("torch")}


def _html(nb) -> str:
    """The reference as a page: progress bars as their final text (widgets need a live kernel)."""
    import copy

    from nbconvert import HTMLExporter

    page = copy.deepcopy(nb)
    page.metadata.pop("widgets", None)
    for cell in page.cells:
        for out in cell.get("outputs", []):
            out.get("data", {}).pop("application/vnd.jupyter.widget-view+json", None)
    return shared_style(HTMLExporter().from_notebook_node(page)[0])


# the pages' stylesheet, written once beside them (it is ~0.26 MB: nbconvert's, same for every page)
STYLE = "style.css"


def shared_style(page: str) -> str:
    """The page with its ``<style>`` blocks moved into ``reference/style.css`` and linked."""
    import re

    blocks = re.findall(r"<style[^>]*>(.*?)</style>", page, re.S)
    css = "\n".join(b.strip() for b in blocks) + "\n"
    OUT.mkdir(exist_ok=True)
    if not (OUT / STYLE).exists() or (OUT / STYLE).read_text(encoding="utf-8") != css:
        (OUT / STYLE).write_text(css, encoding="utf-8")
    first = True

    def link(_match):
        nonlocal first
        out, first = (f'<link rel="stylesheet" href="{STYLE}">' if first else ""), False
        return out

    return re.sub(r"<style[^>]*>.*?</style>", link, page, flags=re.S)


def write(nb, path: Path) -> Path:
    """``reference/NAME.html`` (committed: what a reader opens), ``reference/NAME.json`` (committed:
    what the tests check) and ``reference/NAME.ipynb`` (a local cache for ``--text``, not committed:
    notebooks are committed without outputs)."""
    import nbformat

    OUT.mkdir(exist_ok=True)
    for i, cell in enumerate(nb.cells):
        cell.id = f"ref{path.name[:2]}-{i:02d}"
    (OUT / path.name).write_text(nbformat.writes(nb) + "\n", encoding="utf-8")
    (OUT / f"{path.stem}.json").write_text(json.dumps(_record(nb), indent=1) + "\n",
                                           encoding="utf-8")
    target = OUT / f"{path.stem}.html"
    target.write_text(_html(nb), encoding="utf-8")
    return target


def refresh_text(path: Path) -> str:
    """Put the lesson's current cells into its reference, keeping the outputs, when the code
    is unchanged; otherwise say that the lesson must be executed again."""
    import nbformat

    ref_path = OUT / path.name
    if not ref_path.exists():
        return (f"{path.name}: no executed copy here (the executed notebooks are a local cache, "
                f"not committed): "
                f"run python notebooks/references.py {path.name[:2]}")
    lesson, ref = nbformat.read(str(path), as_version=4), nbformat.read(str(ref_path), as_version=4)
    if _code(lesson) != _code(ref):
        return (f"{path.name}: its code changed since the reference ran: run python "
                f"notebooks/references.py {path.name[:2]}")
    outputs = iter([(c.outputs, c.execution_count) for c in ref.cells if c.cell_type == "code"])
    for cell in lesson.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = next(outputs)
    lesson.metadata = ref.metadata
    _widget_text(lesson)
    write(lesson, path)
    return ""


def stale(only=()) -> list[str]:
    """Lessons whose reference is missing or whose code differs from the reference's."""
    import nbformat

    problems = []
    for path in lessons(only):
        record = OUT / f"{path.stem}.json"
        if not record.exists():
            problems.append(f"{path.name}: no reference")
            continue
        ran = [c["source"] for c in json.loads(record.read_text())["cells"]
               if c["cell_type"] == "code"]
        if _code(nbformat.read(str(path), as_version=4)) != ran:
            problems.append(f"{path.name}: the reference ran other code")
    return problems


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f
                        if line.startswith("model name")), cpu)
    except OSError:
        pass
    import torch

    return (f"{cpu}, {os.cpu_count()} CPUs, Python {platform.python_version()}, torch "
            f"{torch.__version__}, "
            f"{platform.system()} {platform.release()}")


def record_times(times: dict[str, dict], command: str) -> None:
    """Merge ``times`` (lesson stem -> wall, cpu, load) into results/lesson_times.json and .md."""
    data = json.loads(TIMES_JSON.read_text()) if TIMES_JSON.exists() else {"lessons": {}}
    data["lessons"].update(times)
    data.update(command=command, machine=_machine(),
                measured=time.strftime("%Y-%m-%d", time.gmtime()))
    TIMES_JSON.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    rows = [f"| `{stem}` | {t['wall_s'] / 60:.1f} | {t['cpu_s'] / 60:.1f} | {t['load_before']:.2f} "
            f"| {t['started']} |"
            for stem, t in sorted(data["lessons"].items())]
    TIMES_MD.write_text(f"""# Lesson run times at the default scale

Written by `{command}` (`notebooks/references.py`), last on {data['measured']} on
{data['machine']}.

Each lesson was executed once, as a student runs it: a Jupyter kernel, the default scale, the
lesson's own thread setting (`THREADS = 1`), figures drawn inline (no `MPLBACKEND`), from a
temporary copy of `notebooks/`. **Wall** is the whole execution, kernel start to last cell;
**CPU** is user + system time of the kernel process tree. The load average before each lesson
says whether the machine was quiet (a busy machine inflates the wall time, not the CPU time).
`python notebooks/sync.py` copies these figures into each lesson's header.

| lesson | wall min | CPU min | load before | started (UTC) |
|---|---|---|---|---|
{chr(10).join(rows)}
""")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("only", nargs="*", help="lesson numbers or stems (default: all)")
    ap.add_argument("--text", action="store_true",
                    help="refresh the references' text; execute nothing")
    ap.add_argument("--times", action="store_true",
                    help="record wall and CPU time in results/lesson_times.*")
    ap.add_argument("--check", action="store_true",
                    help="exit 1 if a reference is missing or ran other code")
    ap.add_argument("--timeout", type=int, default=3600, help="seconds per cell")
    args = ap.parse_args(argv)
    chosen = lessons(args.only)
    if not chosen:
        ap.error(f"no lesson matches {' '.join(args.only)}: pass numbers such as 00 03")
    if args.timeout <= 0:
        ap.error(f"--timeout {args.timeout}: give the seconds a cell may take, such as 3600")
    if args.check:
        problems = stale(args.only)
        print("\n".join(problems) or "references match their lessons")
        return 1 if problems else 0
    if args.text:
        problems = [p for p in map(refresh_text, chosen) if p]
        print("\n".join(problems) or f"refreshed {len(chosen)} references")
        return 1 if problems else 0
    times = {}
    for path in chosen:
        load = os.getloadavg()[0]
        started = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
        nb, wall, cpu = execute(path, args.timeout)
        target = write(nb, path)
        print(f"{path.stem}: wall {wall:.0f} s, CPU {cpu:.0f} s (load before {load:.2f}) -> "
              f"{target.relative_to(ROOT)} ({target.stat().st_size / 1e6:.2f} MB)", flush=True)
        times[path.stem] = dict(wall_s=round(wall, 1), cpu_s=round(cpu, 1),
                                load_before=round(load, 2), started=started)
    if args.times:
        record_times(times,
                     "python notebooks/references.py --times" + "".join(f" {o}" for o in args.only))
    return 0


if __name__ == "__main__":
    sys.exit(main())

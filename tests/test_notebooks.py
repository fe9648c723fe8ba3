"""The lesson notebooks: jupytext .py sources paired with their .ipynb, committed without outputs,
and
every one runs top to bottom at the smoke scale (headless, in a temporary folder, no network)."""

import importlib.util
import json
import os
import re
import shutil
import sys
import time
from pathlib import Path

import nbformat
import pytest
import torch

from minispdf.errors import MiniSPDFError
from minispdf.model import PRESETS

ROOT = Path(__file__).resolve().parents[1]
NB_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(NB_DIR.glob("[0-9][0-9]_*.ipynb"))
STUDENT = sorted((NB_DIR / "student").glob("*.ipynb"))
# lessons that draw no progress bar
NO_TRAINING = {"02_flop_accounting", "05_paper_findings_small_scale"}
EXPECTED = ["00_quickstart", "01_gpt_and_masks", "02_flop_accounting", "03_sparse_pretraining",
            "04_dense_finetuning", "05_paper_findings_small_scale", "06_beyond_the_paper"]


def _script(name):
    """One of the scripts beside the lessons (``sync``, ``references``), imported as a module."""
    spec = importlib.util.spec_from_file_location(name, NB_DIR / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    # no __pycache__ among the lessons
    saved, sys.dont_write_bytecode = sys.dont_write_bytecode, True
    try:
        spec.loader.exec_module(module)
    finally:
        sys.dont_write_bytecode = saved
    return module


def _code_cells(path):
    return [c for c in nbformat.read(str(path), as_version=4).cells if c.cell_type == "code"]


def test_all_lessons_are_there():
    assert [p.stem for p in NOTEBOOKS] == EXPECTED
    assert [p.stem for p in STUDENT] == EXPECTED


@pytest.mark.parametrize("path", NOTEBOOKS + STUDENT, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_committed_without_outputs(path):
    nbformat.validate(nbformat.read(str(path), as_version=4))
    for cell in _code_cells(path):
        assert cell.outputs == [], (f"{path.name}: cell {cell.id} has outputs; run python "
                                    f"notebooks/sync.py")
        assert cell.execution_count is None, f"{path.name}: cell {cell.id} has an execution count"


def test_each_notebook_is_paired_with_its_source_and_in_sync():
    sources = sorted(NB_DIR.glob("[0-9][0-9]_*.py"))
    assert [p.stem for p in sources] == EXPECTED
    for source in sources:
        assert "formats: ipynb,py:percent" in (
            source.read_text(encoding="utf-8")), f"{source.name}: not paired"
    assert _script("sync").out_of_sync() == [], "run python notebooks/sync.py"


def test_sync_sees_an_edited_source(tmp_path):
    """The pair check can fail: a source edited after its notebook was written is reported."""
    for path in [NB_DIR / "00_quickstart.py", NB_DIR / "00_quickstart.ipynb"]:
        shutil.copy(path, tmp_path / path.name)
    (tmp_path / "student").mkdir()
    sync = _script("sync")
    source = tmp_path / "00_quickstart.py"
    source.write_text(source.read_text(encoding="utf-8") + "\n# %%\nprint('new cell')\n",
                      encoding="utf-8")
    problems = sync.out_of_sync(tmp_path)
    assert any("00_quickstart.ipynb differs from 00_quickstart.py" in p for p in problems)
    assert any("student" in p and "missing" in p for p in problems)


def test_exercise_metadata_survives_the_py_source():
    """jupytext's cell metadata keeps the exercise tag and name the grader looks for."""
    import jupytext

    cells = [c for c in jupytext.read(NB_DIR / "01_gpt_and_masks.py").cells
             if c.cell_type == "code"]
    exercises = {c.metadata["minispdf"]["exercise"]: c.metadata["tags"] for c in cells
                 if "minispdf" in c.metadata}
    assert exercises == {"random_mask": ["exercise"], "magnitude_mask": ["exercise"]}


def test_sources_are_lint_clean():
    """The lesson sources are code: pyflakes finds no undefined or unused names in them."""
    pyflakes = pytest.importorskip("pyflakes.api")
    from pyflakes.reporter import Reporter
    import io

    out = io.StringIO()
    for p in sorted(NB_DIR.glob("[0-9][0-9]_*.py")):
        pyflakes.checkPath(str(p), Reporter(out, out))
    # the setup import binds hint for the student to call ("hint('masked_step')"), not the lesson
    found = [line for line in out.getvalue().splitlines()
             if "'minispdf.lessons.hint' imported but unused" not in line]
    assert not found, "\n".join(found)


def _presets(P):
    """Every model preset a scale names (directly, in a list, or in a sizes dict)."""
    found = []
    for key, value in P.items():
        if key.endswith("preset"):
            found.append(value)
        elif key.endswith("presets"):
            found += list(value)
        elif key == "sizes":
            found += [v["preset"] for v in value.values()]
    return found


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_one_parameters_cell_with_three_scales(path, monkeypatch):
    cells = _code_cells(path)
    first = cells[0]
    assert "parameters" in first.metadata.get("tags",
                                              []), "the first code cell must be tagged 'parameters'"
    assert sum("parameters" in c.metadata.get("tags", []) for c in cells) == 1
    # the setup is one import (minispdf.lessons)
    assert "SCALE, P, THREADS = setup(SCALES)" in first.source
    keys = {}
    threads = torch.get_num_threads()
    monkeypatch.delenv("MINISPDF_THREADS", raising=False)
    for scale in ("default", "gpu", "smoke"):
        monkeypatch.setenv("MINISPDF_SCALE", scale)
        ns = {}
        try:
            torch.set_num_threads(3)
            exec(first.source, ns)
            assert (ns["THREADS"] == 1
                    and torch.get_num_threads() == 1), "the cell must set one torch thread"
        finally:
            torch.set_num_threads(threads)
        assert ns["SCALE"] == scale and ns["DEVICE"] == "auto"
        keys[scale] = set(ns["P"])
        for preset in _presets(ns["P"]):
            assert preset in PRESETS, f"{path.name}, scale {scale}: unknown preset {preset!r}"
    assert keys["default"] == keys["gpu"] == keys["smoke"], (f"{path.name}: the scales set "
                                                             f"different keys")
    monkeypatch.setenv("MINISPDF_SCALE", "huge")
    with pytest.raises(MiniSPDFError, match="choose one of"):
        exec(first.source, {})


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_lesson_states_question_and_measured_runtime(path):
    first = nbformat.read(str(path), as_version=4).cells[0]
    assert first.cell_type == "markdown" and first.source.startswith("# ")
    assert "Question" in first.source or "questions" in first.source
    # the run-time line is written by sync.py from results/lesson_times.json (references.py --times)
    times = _script("sync").read_times()
    if times and path.stem in times["lessons"]:
        assert ("min of wall-clock time (" in first.source
                and "min of CPU time) at the default scale" in first.source)
        assert "? min" not in first.source
    else:
        assert "not measured yet as a student runs it" in first.source.replace("\n", " ")
    assert f"(reference/{path.stem}.html)" in first.source, ("the header links the "
                                                             "executed reference")
    assert not re.search(r"@\w+@", first.source), "a placeholder is left in the first cell"


def test_header_run_times_come_from_the_measurement():
    sync = _script("sync")
    times = {"measured": "2027-01-01",
             "machine": "Some CPU, 2 CPUs, Python 3.11.7, torch 2.13.0, Linux 6",
             "lessons": {"00_quickstart": {"wall_s": 150.0, "cpu_s": 120.0}}}
    line = " ".join(sync.header_line("00_quickstart", times).split())
    assert "about 2.5 min of wall-clock time (2.0 min of CPU time)" in line.replace("# ", "")
    assert "measured 2027-01-01 on Some CPU, 2 CPUs" in line.replace("# ", "")
    assert "not measured yet" in sync.header_line("01_gpt_and_masks", times).replace("\n# ", " ")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_lesson_opens_with_goals_and_paper_and_closes_with_questions(path):
    cells = nbformat.read(str(path), as_version=4).cells
    first = cells[0].source
    for part in ("**Learning goals.**", "**Prerequisites.**", "https://arxiv.org/abs/2303.10464"):
        assert part in first, f"{path.name}: the first cell lacks {part}"
    text = "\n".join(c.source for c in cells)
    assert "**What you should see.**" in text and not re.search(r"@\w+@", text)
    questions = [i for i, c in enumerate(cells) if "## Check your understanding" in c.source]
    answers = [i for i, c in enumerate(cells) if "answer" in c.metadata.get("tags", [])]
    assert questions and answers and min(answers) > questions[-1], "answers follow the questions"
    assert all(cells[i].cell_type == "markdown" for i in answers)


@pytest.mark.parametrize("path", STUDENT, ids=lambda p: p.stem)
def test_student_copies_drop_the_answers(path):
    cells = nbformat.read(str(path), as_version=4).cells
    assert not [c for c in cells if "answer" in c.metadata.get("tags", [])]
    assert not [c for c in cells if "Answers (instructor's copy)" in c.source]
    assert any("## Check your understanding" in c.source for c in cells)


# exercise -> a source snippet that gives its answer away and must come after the exercise cell
GIVEAWAYS = {"block_flops": "L·2T·(3d² + d² + 8d²)", "loss_mask": 'print("".join("^" if m else " "'}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_exercises_have_a_hint_and_no_answer_above(path):
    cells = nbformat.read(str(path), as_version=4).cells
    for i, cell in enumerate(cells):
        name = cell.metadata.get("minispdf", {}).get("exercise")
        if not name:
            continue
        assert "<details><summary>Hint</summary>" in cells[i - 1].source, (f"{path.name}: {name} "
                                                                           f"has no hint above it")
        assert f'check("{name}"' in cells[i + 1].source, (f"{path.name}: the cell under {name} "
                                                          f"must check it")
        if name in GIVEAWAYS:
            before = "\n".join(c.source for c in cells[:i])
            assert GIVEAWAYS[name] not in before, (f"{path.name}: the answer to {name} is "
                                                   f"shown above it")
            assert GIVEAWAYS[name] in "\n".join(c.source for c in cells[i:])


SMOKE_ENV = {"MINISPDF_SCALE": "smoke", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
             "MPLBACKEND": "Agg",
             # one torch thread: the smoke models are too small to gain from a second one, and
             # two OpenMP threads on cores shared with other jobs run many times slower
             "OMP_NUM_THREADS": "1"}


def _execute(path, workdir):
    from nbclient import NotebookClient

    nb = nbformat.read(str(path), as_version=4)
    # the notebook's folder is a temporary copy: runs/ and data/ land there
    shutil.copy(path, workdir / path.name)
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(workdir)}}).execute()
    return nb


def _run_at_smoke_scale(path, tmp_path, monkeypatch):
    """``path`` executed top to bottom at the smoke scale (CellExecutionError on the first failing
    cell), checked for what a student would see as broken: a cell that did not run, a printed
    traceback or warning, output on stderr (shaded red like an error), a progress bar whose
    saved text is not its finished state."""
    for key, value in {**SMOKE_ENV, "HF_HOME": str(tmp_path / "hf")}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("MINISPDF_DATA_DIR", raising=False)
    t = time.perf_counter()
    nb = _execute(path, tmp_path)
    print(f"{path.parent.name}/{path.stem}: {time.perf_counter() - t:.1f} s at smoke scale")
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1))
    printed = [o.get("text", "") for c in code for o in c.outputs
               if o.get("output_type") == "stream"]
    assert not [t for t in printed if "Traceback (most recent call last)" in t]
    # no warning in any output: a red IProgress/Warning line in a lesson looks broken to a student
    warned = [line for t in printed for line in t.splitlines()
              if re.search(r"IProgress|Warning\b", line)]
    assert not warned, f"{path.stem} prints warnings:\n" + "\n".join(warned)
    shaded = [o["text"] for c in code for o in c.outputs if o.get("name") == "stderr"]
    assert not shaded, (f"{path.stem} writes normal output to stderr, which a notebook shades "
                        f"red: {shaded}")
    bars = [o["data"].get("text/plain", "") for c in code for o in c.outputs
            if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    assert bars or path.stem in NO_TRAINING, "no progress bar was drawn"
    unfinished = [b for b in bars if "100%" not in b]
    assert not unfinished, (f"saved progress bars that do not show their finished state: "
                            f"{unfinished}")
    assert not (ROOT / "notebooks" / "runs").exists() and not (ROOT / "notebooks" / "data").exists()
    return nb


# the student copies below run the same cells (and the kit's answers); the grader tests
@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)  # run these solutions
def test_notebook_runs_at_smoke_scale(path, tmp_path, monkeypatch):
    _run_at_smoke_scale(path, tmp_path, monkeypatch)


@pytest.mark.parametrize("stem", EXPECTED)
def test_student_copy_runs_to_the_last_cell(stem, tmp_path, monkeypatch):
    """Run All on a fresh student copy reaches the last cell: each unsolved exercise's check says
    "not solved yet" and hands the cells after it the kit's own answer, saying so."""
    nb = _run_at_smoke_scale(NB_DIR / "student" / f"{stem}.ipynb", tmp_path, monkeypatch)
    from minispdf.assignments import exercise_name

    names = [exercise_name(c) for c in nb.cells if exercise_name(c)]
    assert names, f"{stem} has no exercise"
    for name in names:
        checked = next(c for c in nb.cells
                       if c.cell_type == "code" and f'check("{name}"' in c.source)
        text = "".join(o.get("text", "") for o in checked.outputs)
        assert f"exercise {name}: not solved yet. The cells below use the kit's own" in text, text
        assert "not written yet (exercise: " in text  # the stub's message, check by check


# ---- the executed references (notebooks/reference/, written by notebooks/references.py)

REFERENCE = NB_DIR / "reference"
NUMBER = re.compile(r"[-+]?\d[\d,]*(?:\.\d+)?(?:e[-+]?\d+)?")


def _printed_numbers(record: dict) -> list[float]:
    return [float(n.replace(",", "")) for n in NUMBER.findall(record["printed"])]


def _stated_numbers(nb) -> list[str]:
    """The numbers the "What you should see" prose and the answer key mark as a run's (in
    **bold**)."""
    cells = [c.source for c in nb.cells if c.cell_type == "markdown" and
             ("**What you should see.**" in c.source or "answer" in c.metadata.get("tags", []))]
    bold = re.findall(r"\*\*([^*]+)\*\*", "\n".join(cells).replace("**What you should see.**", ""))
    return [n for b in bold for n in NUMBER.findall(b)]


def _matches(stated: str, printed: list[float]) -> bool:
    """Within half a unit of the prose's last digit (1.995 matches 1.9953, not 1.997): the prose
    rounds what was printed, and nothing else."""
    mantissa, _, exponent = stated.replace(",", "").partition("e")
    decimals = len(mantissa.split(".")[1]) if "." in mantissa else 0
    value = float(stated.replace(",", ""))
    tol = 0.5 * 10 ** (-decimals + int(exponent or 0)) * (1 + 1e-9)
    return any(abs(abs(value) - abs(p)) <= tol for p in printed)


def test_a_reference_runs_as_a_student_runs_the_lesson_whatever_the_shell_sets():
    """The references' kernel gets the default scale and the lesson's own thread count: a
    MINISPDF_THREADS or MINISPDF_SCALE in the developer's shell would print other numbers."""
    env = _script("references").kernel_env({"MINISPDF_THREADS": "2", "MINISPDF_SCALE": "smoke",
                                          "MPLBACKEND": "Agg", "HOME": "/home/x"})
    assert "MINISPDF_THREADS" not in env and "MPLBACKEND" not in env
    assert env["MINISPDF_SCALE"] == "default" and env["HOME"] == "/home/x"
    assert env["PYTHONPATH"].split(os.pathsep)[0] == str(ROOT)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_reference_ran_this_lesson_and_the_prose_states_its_numbers(path):
    ref = REFERENCE / f"{path.stem}.json"
    assert ref.exists() and (REFERENCE / f"{path.stem}.html").exists(), \
        f"no executed reference of {path.name}: run python notebooks/references.py {path.name[:2]}"
    lesson, executed = nbformat.read(str(path), as_version=4), json.loads(ref.read_text())
    assert [c.source for c in lesson.cells if c.cell_type == "code"] == \
           [c["source"] for c in executed["cells"] if c["cell_type"] == "code"], \
        (f"{ref.name} ran other code than {path.name}: run python notebooks/references.py "
         f"{path.name[:2]}")
    assert [c.source for c in lesson.cells] == [c["source"] for c in executed["cells"]], \
        f"{ref.name} has old text: run python notebooks/references.py --text"
    stated, printed = _stated_numbers(lesson), _printed_numbers(executed)
    assert (stated
            or path.stem == "05_paper_findings_small_scale"), "mark the run's numbers in **bold**"
    drifted = [n for n in stated if not _matches(n, printed)]
    assert not drifted, f"{path.name} states {drifted}, which its reference run did not print"
    assert executed["errors"] == 0


def test_prose_numbers_are_checked_against_what_was_printed():
    assert (_matches("1.995", [2.0, 1.9953]) and _matches("1.68", [1.68])
            and _matches("22.2", [22.24]))
    assert not _matches("0.461", [0.463, 18.6]) and not _matches("19.2", [18.6, 0.463])
    assert _matches("2.68e12", [2.68e12]) and _matches("1,200", [1200.0])


def test_references_are_small_and_show_finished_progress_bars():
    total = sum(p.stat().st_size for p in REFERENCE.glob("*.html"))
    assert total < 8e6, f"references take {total / 1e6:.1f} MB: keep figures few and small"
    for ref in REFERENCE.glob("*.json"):
        for bar in json.loads(ref.read_text())["bars"]:
            assert not bar.startswith("HBox") and "&lt;" not in bar, (ref.name, bar)
    page = (REFERENCE / "00_quickstart.html").read_text()
    assert "<img" in page and "widget-view" not in page  # figures inline; bars as their final text
    assert ("<style" not in page and 'href="style.css"' in page
            and (REFERENCE / "style.css").stat().st_size > 1e5)


@pytest.mark.slow  # ~10 s: a kernel reads the committed study
def test_lesson_05_at_gpu_scale_refuses_the_hour_long_study_without_its_own_switch(tmp_path,
                                                                                   monkeypatch):
    for key, value in {"MINISPDF_SCALE": "gpu", "MINISPDF_RERUN": "1", "HF_HUB_OFFLINE": "1",
                       "MPLBACKEND": "Agg",
                       "OMP_NUM_THREADS": "1"}.items():
        monkeypatch.setenv(key, value)
    work = tmp_path / "notebooks"
    work.mkdir()
    (tmp_path / "results").symlink_to(ROOT / "results")
    nb = _execute(NB_DIR / "05_paper_findings_small_scale.ipynb", work)
    printed = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                      for o in c.outputs)
    assert ('refusing to start the gpu-quick study (about an hour) on RERUN = True: set RERUN '
            '= "gpu-quick"' in printed)
    assert not (work / "runs").exists()  # nothing was started


def test_the_instructors_page_states_the_kits_exercises_points_and_measured_times():
    """The sequence table of notebooks/INSTRUCTORS.md: every lesson, its exercises in order with
    their points, and the wall / CPU minutes of results/lesson_times.json, so it cannot drift."""
    from minispdf.assignments import EXERCISES

    page = (NB_DIR / "INSTRUCTORS.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| `(\d\d_\w+)` \| (.+?) \| ([\d.]+) / ([\d.]+) \|$", page, re.M)
    assert [r[0] for r in rows] == EXPECTED
    times = _script("sync").read_times()["lessons"]
    numbered = []
    for stem, exercises, wall, cpu in rows:
        assert (wall, cpu) == (f"{times[stem]['wall_s'] / 60:.1f}",
                               f"{times[stem]['cpu_s'] / 60:.1f}"), stem
        found = re.findall(r"(\d+) `(\w+)` \((\d)\)", exercises)
        assert [(n, int(p)) for _, n, p in found] == [(e.name, e.points) for e in EXERCISES.values()
                                                      if e.notebook == stem], stem
        numbered += [int(i) for i, _, _ in found]
    assert numbered == list(range(len(EXERCISES)))  # numbered in lesson order, each once
    total = sum(e.points for e in EXERCISES.values())
    assert (f"{len(EXERCISES)} exercises" in page.replace("Nine exercises", "9 exercises")
            and f"{total} points" in page)


def test_the_readme_lesson_table_states_the_measured_times_and_date():
    """The README's lesson table: every lesson, with the wall / CPU minutes and the date of
    results/lesson_times.json (the table went stale once when only the instructor's page was
    checked)."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| `(\d\d_\w+)` \| .+ \| ([\d.]+) / ([\d.]+) min \|$", readme, re.M)
    times = _script("sync").read_times()
    assert [r[0] for r in rows] == EXPECTED
    for stem, wall, cpu in rows:
        assert (wall, cpu) == (f"{times['lessons'][stem]['wall_s'] / 60:.1f}",
                               f"{times['lessons'][stem]['cpu_s'] / 60:.1f}"), stem
    assert f"measured on {times['measured']}" in " ".join(readme.split())


def test_the_torch_the_prose_names_is_the_one_the_references_ran_on():
    """Every "torch X.Y.Z" in the lessons' prose and the instructor's page is the torch each
    executed reference recorded from its kernel and the torch of the last timed execution
    (results/lesson_times.json): references executed on another torch (a CUDA wheel pulled in by
    accident, a newer release) must not pass for the stated one."""
    torch_version = re.compile(r"torch (\d+\.\d+\.\d+)")  # the local "+cpu" left out
    # "AMD EPYC, 2 CPUs, Python 3.11.7, torch 2.13.0+cpu, Linux ..."
    ran = {"lesson_times.json": torch_version.search(_script("sync").read_times()["machine"])[1]}
    for path in NOTEBOOKS:
        record = json.loads((REFERENCE / f"{path.stem}.json").read_text())
        ran[path.stem] = torch_version.match(f"torch {record['torch']}")[1]
    pages = [*NB_DIR.glob("[0-9][0-9]_*.py"), NB_DIR / "INSTRUCTORS.md"]
    stated = {(page.name, v) for page in pages
              for v in torch_version.findall(page.read_text("utf-8"))}
    assert len(stated) >= 7  # the six "What you should see" paragraphs and the instructor's page
    assert {v for _, v in stated} | set(ran.values()) == {ran["lesson_times.json"]}, \
        (ran, sorted(stated))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_exercises_are_numbered_in_order(path):
    """The lessons number their exercises 0, 1, 2, ... in the order a student meets them, each once,
    and as the instructor's page does."""
    text = "\n".join(c.source for c in nbformat.read(str(path), as_version=4).cells)
    page = (NB_DIR / "INSTRUCTORS.md").read_text(encoding="utf-8")
    titled = [int(n) for n in re.findall(r"\*\*Exercise (\d+):", text)]
    row = re.search(rf"^\| `{path.stem}` \| (.+?) \|", page, re.M).group(1)
    assert titled == [int(n) for n in re.findall(r"(\d+) `", row)], path.stem



def test_lesson_setup_reads_the_scale_and_threads_and_refuses_a_bad_one(monkeypatch):
    """The one import every lesson's first cell makes: the scale's settings, one torch thread
    unless MINISPDF_THREADS says otherwise, and a one-line error naming the choices."""
    from minispdf.lessons import setup

    scales = {"default": {"steps": 10}, "smoke": {"steps": 1}}
    threads = torch.get_num_threads()
    try:
        monkeypatch.setenv("MINISPDF_SCALE", "smoke")
        monkeypatch.setenv("MINISPDF_THREADS", "2")
        assert tuple(setup(scales)) == ("smoke", {"steps": 1}, 2) and torch.get_num_threads() == 2
        monkeypatch.delenv("MINISPDF_THREADS")
        monkeypatch.delenv("MINISPDF_SCALE")
        assert setup(scales).params == {"steps": 10} and torch.get_num_threads() == 1
        monkeypatch.setenv("MINISPDF_THREADS", "two")
        with pytest.raises(MiniSPDFError, match="whole number"):
            setup(scales)
        with pytest.raises(MiniSPDFError, match=r"choose one of \['default', 'smoke'\]"):
            setup(scales, scale="gpu")
    finally:
        torch.set_num_threads(threads)


def _png_widths(page: str) -> list[int]:
    """The pixel widths of the PNG figures embedded in an executed reference page."""
    import base64
    import struct

    heads = re.findall(r"data:image/png;base64,([A-Za-z0-9+/]{32})", page)
    return [struct.unpack(">I", base64.b64decode(h)[16:20])[0] for h in heads]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_reference_figures_fit_a_column_at_100_percent(path):
    """Every figure a lesson shows is at most COLUMN_PX wide as executed (inline, 100 dpi), so a
    reader at 100% zoom sees its fonts at their size (the library draws none below 9 pt:
    tests/test_plots.py); a wider one is shrunk to fit, and its fonts with it."""
    from minispdf.canvas import COLUMN_PX

    widths = _png_widths((REFERENCE / f"{path.stem}.html").read_text(encoding="utf-8"))
    assert widths or path.stem == "05_paper_findings_small_scale", "no figure in the reference"
    wide = [w for w in widths if w > COLUMN_PX]
    assert not wide, (f"{path.stem} shows figures {wide} px wide: lay out "
                      f"{COLUMN_PX / 100:g} in at most")

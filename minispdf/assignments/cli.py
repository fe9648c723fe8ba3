"""The command line: ``minispdf assign student|check|release|grade|hint``."""

from __future__ import annotations

import argparse
import functools
import json
import sys
from pathlib import Path

from ..config import Parser
from ..errors import MiniSPDFError, counted
from .exercises import EXERCISES, hint
from . import gradebook, manifest
from .grading import DEFAULT_TIMEOUT, grade_submissions
from .notebooks import (DEFAULT_DST, DEFAULT_SRC, check_student_copies, exercise_name,
                        make_student_copies, read_notebook)
from .bundle import release


def _parser(prog: str) -> argparse.ArgumentParser:
    # the kit's one-line errors, pointing to `minispdf assign --help`; argparse's help layout
    one_line = functools.partial(Parser, help_prog=prog, allow_abbrev=True,
                                 formatter_class=argparse.HelpFormatter)
    parser = one_line(prog=prog,
                      description="Course mode: student copies of the notebooks, a bundle "
                                             "to hand out, and a grader for their exercises.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=one_line)
    p = sub.add_parser("student",
                       help="write student copies (solutions replaced by stubs, answers dropped)")
    p.add_argument("--src", default=DEFAULT_SRC)
    p.add_argument("--dst", default=DEFAULT_DST)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p = sub.add_parser("check",
                       help="exit 1 unless the student copies are in sync with the sources")
    p.add_argument("--src", default=DEFAULT_SRC)
    p.add_argument("--dst", default=DEFAULT_DST)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p = sub.add_parser("release",
                       help="write the student bundle (no solutions, no answers) into a new folder")
    p.add_argument("dir", help="the bundle's folder: new or empty (or --overwrite)")
    p.add_argument("--src", default=DEFAULT_SRC,
                   help="the instructor's notebooks (default: %(default)s)")
    p.add_argument("--results", default=None,
                   help="study results to include (default: results/ next to --src)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty folder")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p = sub.add_parser("grade",
                       help="run and check the exercises of notebooks or a folder of submissions")
    p.add_argument("notebooks", nargs="*",
                   help="notebooks, or folders of submissions: DIR/NAME.ipynb is NAME's, "
                                                "DIR/NAME/*.ipynb are NAME's (default: "
                                                f"{DEFAULT_DST}/*.ipynb with exercises)")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT,
                   help="seconds per exercise before it fails (default: %(default)g)")
    p.add_argument("--csv", default=None,
                   help="write the gradebook to this file: one row per student and exercise "
                                               "(or per student with --format canvas|moodle)")
    p.add_argument("--format", default="csv", choices=gradebook.FORMATS,
                   help="--csv's form: plain, or a Canvas or Moodle gradebook import (default: "
                        "%(default)s)")
    p.add_argument("--manifest", default=None,
                   help="the release's manifest.json: what each student is graded on (default: "
                        "./manifest.json if "
                        "there, else the kit's exercises of the lessons the class handed in)")
    p.add_argument("--hidden", default=None, metavar="FILE.py",
                   help="the instructor's hidden checks (HIDDEN_CHECKS = {exercise: checks}), run "
                        "at grading only")
    p.add_argument("--unconfined", action="store_true",
                   help="where the machine offers no confinement (not Linux, no root and no "
                        "Landlock): run "
                        "student code anyway, with your own user's rights; every row's "
                        "notes says so")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p = sub.add_parser("hint", help="print the hint of an exercise")
    p.add_argument("exercise", choices=list(EXERCISES))
    return parser


def _student(args) -> int:
    written = [str(p) for p in make_student_copies(args.src, args.dst)]
    print(json.dumps({"written": written}, indent=2) if args.json
          else "\n".join(f"wrote {p}" for p in written))
    return 0


def _check(args, prog: str) -> int:
    problems = check_student_copies(args.src, args.dst)
    if args.json:
        print(json.dumps({"in_sync": not problems, "problems": problems, "src": args.src,
                          "dst": args.dst}, indent=2))
    elif problems:
        print("\n".join(problems))
        print(f"student copies are out of sync: run `{prog} student --src {args.src} "
              f"--dst {args.dst}`")
    else:
        print(f"student copies in {args.dst} are in sync with {args.src}")
    return 1 if problems else 0


def _release(args) -> int:
    written = release(args.dir, args.src, overwrite=args.overwrite, results=args.results)
    if args.json:
        print(json.dumps({"dir": args.dir, "written": written}, indent=2))
    else:
        print(f"wrote the student bundle to {args.dir}: {counted(len(written), 'file')} (no "
              f"solutions, no answers)")
    return 0


def _grade(args) -> int:
    paths = args.notebooks or [str(p) for p in sorted(Path(DEFAULT_DST).glob("*.ipynb"))
                               if any(exercise_name(c) for c in read_notebook(p).cells)]
    if not paths:
        raise MiniSPDFError(
            f"no notebooks to grade: pass paths, or create {DEFAULT_DST} with `student`")
    if not args.timeout > 0:
        raise MiniSPDFError(f"--timeout {args.timeout:g} must be a positive number of seconds")
    if args.format != "csv" and not args.csv:
        raise MiniSPDFError(
            f"--format {args.format} is the form of the --csv file: pass --csv FILE too")
    found = args.manifest or (manifest.FILE if Path(manifest.FILE).is_file() else None)
    release = manifest.read(found) if found else None
    results = grade_submissions(paths, timeout=args.timeout, unconfined=args.unconfined,
                                release=release,
                                hidden=args.hidden)
    rows = gradebook.write(args.csv, results, args.format) if args.csv else None
    if args.json:
        print(json.dumps(results if len(results) > 1 else results[0], indent=2))
    else:
        print(f"manifest: {found}" if found
              else "manifest: none, so the kit's exercises of the lessons handed in")
        print(gradebook.summary(results))
        if args.csv:
            print(f"wrote {args.csv} ({counted(rows, 'row')})")
    return 0 if all(r["all_passed"] for r in results) else 1


def main(argv=None, prog: str = "minispdf assign") -> int:
    """The command line; ``prog`` is the command as the user typed it (shown in help and
    messages)."""
    try:
        args = _parser(prog).parse_args(argv)
        if args.command == "hint":
            hint(args.exercise)
            return 0
        if args.command == "check":
            return _check(args, prog)
        return {"student": _student, "release": _release, "grade": _grade}[args.command](args)
    except SystemExit as e:  # only --help exits: it printed the help
        return int(e.code or 0)
    except MiniSPDFError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

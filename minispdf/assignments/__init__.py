"""Assignment mode: student copies of the notebooks, a bundle to hand out, and a grader.

Some code cells of the notebooks are exercises: a function that is a real part of the method
(a random mask with an exact count, a magnitude mask, the sparse FLOPs of one block, the masked
AdamW step, the loss mask of fine-tuning, the equal-FLOP step count). Such a cell carries
``{"minispdf": {"exercise": NAME}}`` in its metadata and nbgrader-style markers around the
reference solution::

    def random_mask(shape, sparsity, generator=None):
        ### BEGIN SOLUTION
        ...
        ### END SOLUTION

* :func:`make_student_copies` writes copies of every notebook in which each marked block is
  replaced by ``raise NotImplementedError("exercise: ...")`` (same indentation) and cells tagged
  ``answer`` (the instructor's answers) are dropped; :func:`check_student_copies` says whether
  the committed copies are in sync; :func:`release` writes the bundle handed to students.
* :func:`grade` runs only the exercise cells of a notebook, each exercise in a fresh namespace
  in a confined worker process with a time limit (:mod:`.sandbox`), records its function's calls
  under the checks, and decides pass or fail in the grader by replaying that record into its own
  checks against the library's implementation (:mod:`.replay`); :func:`grade_submissions` does
  so for a folder of students.
  The same checks run inside the notebook, in the cell under each exercise (:func:`check`), so
  the tests a student is graded by are visible to them; :func:`hint` prints an exercise's hint.

Command line: ``minispdf assign student|check|release|grade|hint`` (``--help`` on each).
"""

from ..errors import MiniSPDFError
from .checks import CheckFailed
from .cli import main
from .exercises import EXERCISES, Exercise, check, check_exercise, format_result, hint
from .gradebook import write as write_csv
from .grading import DEFAULT_TIMEOUT, grade, grade_submissions, outside_names, submissions
from .notebooks import (ANSWER_TAG, BEGIN, END, STUDENT_NOTE_ID, check_student_copies, dumps,
                        exercise_name,
                        make_student_copies, read_notebook, stub_source, student_notebook)
from .bundle import release

__all__ = ["ANSWER_TAG", "BEGIN", "CheckFailed", "DEFAULT_TIMEOUT", "END", "EXERCISES", "Exercise",
           "MiniSPDFError",
           "STUDENT_NOTE_ID", "check", "check_exercise", "check_student_copies", "dumps",
           "exercise_name",
           "format_result", "grade", "grade_submissions", "hint", "main", "make_student_copies",
           "outside_names",
           "read_notebook", "release", "stub_source", "student_notebook", "submissions",
           "write_csv"]

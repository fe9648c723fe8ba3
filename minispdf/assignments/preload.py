"""Imported by the grader's fork server only, never by the grader itself: what workers start
with."""

from .worker import warm

warm()

"""Downstream tasks for dense fine-tuning, as one small uniform structure::

    Task(name, metric, train=[Example, ...], val=[...], test=[...], description)
    Example(input="name[The Copper Kettle], eatType[pub], ...", references=["...", "..."])

The SPDF paper fine-tunes on three data-to-text tasks (E2E, WebNLG, DART; metric BLEU) and one
summarisation task (Curation Corpus; metric perplexity). One module per concern:

==============  ===================================================================
``core``        Task, Example, grouping by input, split counts, ``split_task``
``builtin``     the built-in generator (E2E-style MRs, template references)
``tables``      E2E CSV and Curation CSV/Parquet; E2E meaning representations
``triples``     DART JSON/XML and WebNLG XML; ``linearize_triples``
``files``       a file, a file per split, or a directory of the official files
``hub_copies``  the Hugging Face hub copies
``spec``        ``--task SPEC``: ``load_task``, ``resolve_task``
``finetune``    the fine-tuning format: tokens, loss mask, padded batches
==============  ===================================================================

The batches the training loop reads from a task (``TaskBatches``) live in :mod:`minispdf.batches`,
next to the pre-training batches.
"""

from .builtin import BUILTIN_LEVELS, make_builtin_task
from .core import (TASK_METRICS, TASK_NAMES, Example, NoReferencesError, Task, seeded_order,
                   split_counts, split_task, task_stats)
from .files import load_task_files
from .finetune import (SEPARATOR, FinetuneBatches, encode_example, encode_prompt, pair_fits,
                       pair_length,
                       training_pairs)
from .spec import TASK_SPEC, load_task, resolve_task
from .tables import E2E_SLOTS, format_mr, parse_mr
from .triples import WEBNLG_SEEN, WEBNLG_UNSEEN, linearize_triples

__all__ = [
    "Example", "Task", "TASK_NAMES", "TASK_METRICS", "TASK_SPEC", "SEPARATOR", "load_task",
    "load_task_files", "resolve_task", "split_task",
    "split_counts", "WEBNLG_SEEN", "WEBNLG_UNSEEN", "make_builtin_task", "task_stats",
    "linearize_triples",
    "parse_mr", "format_mr", "training_pairs", "encode_example", "encode_prompt", "pair_fits",
    "pair_length", "seeded_order",
    "FinetuneBatches", "BUILTIN_LEVELS", "E2E_SLOTS", "NoReferencesError",
]


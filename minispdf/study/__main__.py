"""``python -m minispdf.study README.md``: refresh the blocks of a Markdown file that include a
study's generated text (``<!-- include: results/default/README_section.md -->``)."""

import sys

from ..errors import MiniSPDFError
from .report import sync_includes

try:
    for path in sys.argv[1:] or ["README.md"]:
        print(f"{path}: {'updated' if sync_includes(path) else 'already in sync'}")
except MiniSPDFError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)

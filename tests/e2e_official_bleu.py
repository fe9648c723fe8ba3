"""Recompute the official BLEU values pinned in test_evaluate.py (OFFICIAL_BLEU). Not a test.

Needs a checkout of the official E2E scorer and Perl's XML::Twig (Debian: libxml-twig-perl)::

    git clone https://github.com/tuetschek/e2e-metrics /tmp/e2e-metrics   # commit 1b9c4d8 used
    python tests/e2e_official_bleu.py /tmp/e2e-metrics

It calls the scorer's own ``run_mteval`` (mteval-v13a-sig.pl), as ``measure_scores.py`` does;
the COCO metrics it also imports are not needed for BLEU and are stubbed out.
"""

import os
import sys
import types

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def main(scorer_dir: str) -> None:
    for name, attr in (("pycocotools.coco", "COCO"), ("pycocoevalcap.eval", "COCOEvalCap")):
        sys.modules.setdefault(name.split(".")[0], types.ModuleType(name.split(".")[0]))
        sys.modules[name] = types.ModuleType(name)
        setattr(sys.modules[name], attr, None)
    sys.path.insert(0, scorer_dir)
    import measure_scores

    import test_evaluate

    for name in sorted(test_evaluate.OFFICIAL_BLEU):
        preds, refs = getattr(test_evaluate, name)
        bleu = measure_scores.run_mteval(refs, preds, [""] * len(preds))["BLEU"]
        print(f"{name}: official BLEU {bleu:.4f}, pinned {test_evaluate.OFFICIAL_BLEU[name]:.4f}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "e2e-metrics")

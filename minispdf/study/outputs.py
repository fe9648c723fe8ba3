"""Everything a study writes into its folder, from its judged results (``reproduce`` and
``reproduce --report`` both end here)."""

from __future__ import annotations

import os

from ..fileio import write_json, write_text
from . import frontier
from .readme import readme_section
from .report import (CLAIM_FIELDS, CSV_FIELDS, FIGURES, _csv, _save, arms_table, claims_markdown,
                     plot_claims,
                     plot_gaps, plot_lost_vs_flops, plot_pretraining, summary_markdown)


def write_outputs(results: dict, out: str) -> None:
    """results.json, results.csv, claims.json (the judged claims), flop_claim.json (arithmetic),
    summary.md, claims.md, README_section.md, figures."""
    write_json(os.path.join(out, "results.json"), results)
    write_text(os.path.join(out, "results.csv"), _csv(results["rows"], CSV_FIELDS))
    write_json(os.path.join(out, "claims.json"),
               [{k: c.get(k) for k in CLAIM_FIELDS} for c in results["claims"]])
    write_json(os.path.join(out, "flop_claim.json"), results["flop_claim"])
    write_text(os.path.join(out, "summary.md"), summary_markdown(results["summary"]))
    write_text(os.path.join(out, "claims.md"), claims_markdown(results["claims"]) + "\n")
    write_text(os.path.join(out, "README_section.md"),
               readme_section(results, link=f"results/{results['grid']['name']}/"))
    write_text(os.path.join(out, "arms.md"), arms_table(results) + "\n")
    if results.get("frontier"):
        fr = results["frontier"]
        write_text(os.path.join(out, "frontier.md"), frontier.table(fr, results["claims"]))
        frontier.plot(results, fr, os.path.join(out, "frontier.png"))
    if results["rows"]:
        plot_pretraining(results, os.path.join(out, FIGURES[0]))
        _save(plot_gaps(results).axes[0], os.path.join(out, FIGURES[1]))
        plot_claims(results, os.path.join(out, FIGURES[2]))
        _save(plot_lost_vs_flops(results).axes[0], os.path.join(out, FIGURES[3]))


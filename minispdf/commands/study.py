"""``demo`` and ``reproduce``: the recipe at small scale, and the study judged against the paper."""

from __future__ import annotations

from dataclasses import asdict, fields

from ..config import build, given
from ..demo import DemoConfig, DemoScale
from ..errors import MiniSPDFError, counted
from ..study.reproduce_config import RealTasks, ReproduceConfig
from . import emit, progress_log


def demo(args):
    from ..demo import results_table, run_demo

    results = run_demo(build(DemoConfig, args), build(DemoScale, args),
                       log=(lambda *a: None) if args.json else print)
    emit(args.json, {k: v for k, v in results.items()
                     if k not in ("pretrains", "rows")} | {"rows": results["rows"]},
         f"\nSPDF demo ({results['grid']['name']} grid, {results['timing']['wall_s']:.0f} s)\n"
         f"task: {next(iter(results['grid']['tasks'].values()))['about']}"
         f"\n\n{results_table(results)}\n\n"
         f"written: {results['out']}/results.md, results.json, results.csv, claims.json, "
         f"pretrain_loss_vs_flops.png")


def reproduce(args):
    from ..study import rejudge, resolve_grid, run_study
    from ..study.report import FIGURES, headline_table

    s = build(ReproduceConfig, args)
    _check_mode(s, args)
    if s.verify:
        return _verify(s, args)
    if s.report:
        results = rejudge(s.report)
        emit(args.json, {"out": s.report, "claims": results["claims"]},
             f"{headline_table(results['claims'])}\n\nrewritten in {s.report}: claims.json, "
             f"claims.md, summary.md, "
             f"README_section.md, figures")
        return None
    name = s.grid or ("quick" if s.quick else "default")
    if s.quick and name != "quick":
        raise MiniSPDFError(f"--quick and --grid {name} disagree: pass one of them")
    grid = resolve_grid(name, seeds=s.seeds, real_tasks=asdict(build(RealTasks, args)))
    out = s.out or f"runs/study-{grid['name']}"
    results = run_study(grid, out, device=s.device, jobs=s.jobs, log=progress_log(args.json),
                        dry_run=s.dry_run,
                        command="minispdf reproduce " + " ".join(args.argv),
                        power_from=s.power_from,
                        redeclare=s.redeclare)
    if s.dry_run:
        emit(args.json, results, "(dry run: nothing was trained)")
        return None
    emit(args.json, {"out": out, "timing": results["timing"], "claims": results["claims"],
                     "flop_claim": results["flop_claim"]},
         f"\n{headline_table(results['claims'])}\n\nwritten to {out}: declared.json, results.csv, "
         f"claims.json, "
         f"results.json, summary.md, claims.md, README_section.md, {', '.join(FIGURES)}")
    return None


# What only a study run reads: with --report or --verify (which read a finished study) it would do
# nothing.
RUN_ONLY = ("grid", "quick", "out", "seeds", "jobs", "dry_run", "power_from", "redeclare",
            *(f.name for f in fields(RealTasks)))


def _check_mode(s: ReproduceConfig, args) -> None:
    if s.report and s.verify:
        raise MiniSPDFError("--report and --verify are two modes: pass one of them")
    mode = "--report" if s.report else "--verify" if s.verify else None
    unused = [k for k in RUN_ONLY if k in given(args)] if mode else []
    if unused:
        raise MiniSPDFError(
            f"--{unused[0]} does nothing with {mode}, which reads a finished study: drop it")
    if "cells" in given(args) and not s.verify:
        raise MiniSPDFError("--cells applies only with --verify DIR: add --verify DIR, or drop it")


def _cells(text: str) -> int | list[str]:
    text = text.strip()
    if text.isdigit():
        return int(text)
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise MiniSPDFError(
            "--cells is empty: give a number of cells or their names from results.csv")
    return names


def _verify(s: ReproduceConfig, args) -> None:
    from ..study.verify import verify

    result = verify(s.verify, _cells(s.cells), device="cpu" if s.device == "auto" else s.device,
                    log=progress_log(args.json))
    bad = [c["cell"] for c in result["cells"] if c["differences"]]
    emit(args.json, result,
         f"{len(result['cells']) - len(bad)} of {len(result['cells'])} cells identical to "
                            f"{s.verify}/results.csv")
    if bad:
        raise MiniSPDFError(f"{counted(len(bad), 'cell')} differ from {s.verify}: "
                            f"{', '.join(bad)} (listed above): the code or the machine computes "
                            "other numbers than the committed study")

"""Mask schedules: how the masks of sparse pre-training change during the run.

SPDF keeps one mask from the first step to the last. Since then the field has tried masks that
move, masks that arrive gradually, a pattern that GPUs accelerate, and a dense tail:

=========== ============================================================================================
``static``  one mask for all of pre-training (SPDF), drawn by :func:`minispdf.sparsity.sparsify`
``set``     every ``update_interval`` steps, drop the smallest-magnitude kept weights of each tensor
            and
            regrow as many pruned slots at random (SET, Mocanu et al. 2018)
``rigl``    the same drop; regrow where the dense gradient is largest (RigL, Evci et al. 2020). The
            backward pass of an update step computes the dense weight gradient, and its FLOPs count
``gmp``     start dense; prune by magnitude on a cubic ramp from ``gmp_start`` to ``gmp_end`` of the
            run
            (gradual magnitude pruning, Zhu & Gupta 2017)
``nm``      keep the N largest of every M consecutive weights along the input dimension (2:4: the
            pattern current GPUs accelerate); chosen once, at the start, by magnitude
=========== ============================================================================================

``dense_from`` (any schedule) drops the masks at that fraction of pre-training: Variable SPDF's
dense tail. SET and RigL drop ``drop_fraction`` of a tensor's kept weights at the first update,
decayed by a cosine to 0 at ``stop_fraction`` of the run, after which the mask stays fixed (the
SPDF authors' Model Zoo ``rigl75``/``set75``: 0.3, every 100 steps, stop at 75%).

A schedule only *moves* masks. Keeping the zeros between moves is the masks' own job (the hooks of
:mod:`minispdf.sparsity`), so any loop keeps a moved mask. A move zeroes the dropped weights and
the optimizer moments of every slot that changed: regrown weights start at zero with zero moments,
as in RigL. Ties are broken by position (the lower flat index first), so a move is exact.

:class:`SparsityConfig` holds every setting of the masks (how much, how drawn, how they move);
``SparsityConfig(0.75, schedule="rigl").make_schedule(max_steps)`` is the schedule of a run.
Use it in :func:`minispdf.train.train` (``schedule=``) or in a loop of your own::

    sched = make_schedule("rigl", sparsity=0.75, max_steps=1000)
    sched.start(model)                      # the first masks
    for step in range(1, 1001):
        sched.prepare(step)                 # RigL: read the dense gradient of this step's backward
        loss = model(x, y)[1]; loss.backward(); opt.step(); opt.zero_grad()
        sched.update(model, opt, step)      # moves the masks when ``step`` is an update step
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
import torch.nn as nn

from . import sparsity as sp
from .settings import Settings, setting
from .errors import MiniSPDFError
# the moves of one tensor; check_nm is the lessons' too
from .moves import check_nm, cosine_fraction, cubic_sparsity, drop_and_grow, magnitude_keep, nm_mask

__all__ = ["SCHEDULES", "SparsityConfig", "MaskSchedule", "make_schedule", "applies_to", "parse_nm",
           "check_nm", "drop_and_grow", "magnitude_keep", "nm_mask", "cosine_fraction",
           "cubic_sparsity"]

SCHEDULES = ("static", "set", "rigl", "gmp", "nm")
DYNAMIC = ("set", "rigl")  # masks that move: drop and regrow


def parse_nm(text) -> tuple[int, int]:
    """``"2:4"`` -> (2, 4): keep N of every M."""
    try:
        n, m = (int(v) for v in str(text).split(":"))
    except ValueError:
        raise MiniSPDFError(f"nm={text!r} is not N:M: give two integers, e.g. 2:4") from None
    if not 0 < n < m:
        raise MiniSPDFError(f"nm={text!r}: N must be between 1 and M - 1, e.g. 2:4")
    return n, m


# ------------------------------------------------------------------------------ the settings


def schedule_setting(default, help: str, applies_to=SCHEDULES, **bounds):
    """A setting of how the masks move, declared once: its default, help and bounds, and the
    schedules it ``applies_to`` (a grid's ``[schedules]`` table passes it to those arms only).
    The command line, a grid file, the checkpoint and the resume check all read it from here."""
    only = {} if tuple(applies_to) == SCHEDULES else {"applies": ("schedule", tuple(applies_to))}
    return setting(default, help, applies_to=tuple(applies_to), **only, **bounds)


@dataclass
class SparsityConfig(Settings):
    """Sparsity: how much of each masked matrix is pruned, and how the masks are drawn."""
    sparsity: float = setting(0.0, "fraction of the q/k/v, attention-out and MLP weights held at "
                              "zero", min=0, below=1,
                              hint="the fraction of weights held at zero, e.g. 0.75")
    method: str = setting("random", "how masks are drawn", choices=sp.METHODS)
    distribution: str = setting("uniform", "sparsity per layer: uniform (the paper's) or erk",
                                choices=sp.DISTRIBUTIONS)
    scope: str = setting("tensor", "rank weights per tensor, or globally (magnitude only)",
                         choices=("tensor", "global"))
    include: str | None = setting(None, "regex of the parameter names to sparsify (default: the "
                                  "block matrices)", metavar="REGEX")
    mask_seed: int = setting(0, "seed of random masks")
    schedule: str = schedule_setting(
        "static", "how the masks change during pre-training: static (SPDF's one mask), set, rigl, "
        "gmp or nm (see minispdf.schedules)", choices=SCHEDULES)
    update_interval: int = schedule_setting(
        100, "set, rigl, gmp: steps between mask updates", ("set", "rigl", "gmp"), min=1)
    drop_fraction: float = schedule_setting(
        0.3, "set, rigl: fraction of each tensor's kept weights dropped and regrown at the first "
        "update, decayed by a cosine to 0 at --stop_fraction", ("set", "rigl"), above=0, below=1,
        hint="the fraction of kept weights moved at the first update, e.g. 0.3")
    stop_fraction: float = schedule_setting(
        0.75, "set, rigl: the mask stays fixed after this fraction of the steps", ("set", "rigl"),
        above=0, max=1, hint="e.g. 0.75 fixes the mask for the last quarter of the run")
    gmp_start: float = schedule_setting(
        0.25, "gmp: dense until this fraction of the steps, then pruning starts", ("gmp",),
        min=0, below=1)
    gmp_end: float = schedule_setting(
        0.75, "gmp: the full --sparsity is reached at this fraction of the steps", ("gmp",),
        above=0, max=1)
    nm: str = schedule_setting(
        "2:4", "nm: keep the N largest of every M consecutive weights along the input dimension",
        ("nm",), metavar="N:M")
    dense_from: float = schedule_setting(
        0.0, "drop the masks at this fraction of pre-training: Variable SPDF's dense tail (0: "
        "never)", min=0, below=1,
        hint="the fraction of pre-training after which the masks are dropped")

    def __post_init__(self):
        sp.check_mask_options(self.method, self.distribution, self.scope, self.include)
        super().__post_init__()  # choices and the declared bounds
        self.sparsity = self._check_combination()

    def _check_combination(self) -> float:
        """Refuse settings that do not go together, with one line; returns the sparsity reached."""
        if self.gmp_start >= self.gmp_end:
            raise MiniSPDFError(f"gmp_start={self.gmp_start!r}, gmp_end={self.gmp_end!r}: need "
                                "gmp_start < gmp_end")
        if self.schedule == "nm":
            n, m = parse_nm(self.nm)
            if self.scope != "tensor":
                raise MiniSPDFError("schedule nm keeps N of every M weights within a tensor: drop "
                                    "--scope global")
            if self.sparsity not in (0.0, 1 - n / m):
                raise MiniSPDFError(f"schedule nm {self.nm} means sparsity {1 - n / m:g}, not "
                                    f"{self.sparsity:g}: pass --sparsity {1 - n / m:g} or leave it "
                                    "out")
            return 1 - n / m
        if self.sparsity == 0.0 and (self.schedule != "static" or self.dense_from):
            tail = " with dense_from" if self.dense_from else ""
            raise MiniSPDFError(f"schedule {self.schedule}{tail} needs --sparsity S > 0")
        if self.schedule in (*DYNAMIC, "gmp") and self.scope != "tensor":
            raise MiniSPDFError(f"schedule {self.schedule} moves masks tensor by tensor: drop "
                                "--scope global")
        return self.sparsity

    def check_timing(self, max_steps: int) -> None:
        """The one check that needs the run's length: updates must fit in the moving part of it."""
        if self.schedule not in (*DYNAMIC, "gmp"):
            return
        end = self.stop_fraction if self.schedule in DYNAMIC else self.gmp_end
        if self.update_interval >= end * max_steps:
            raise MiniSPDFError(f"update_interval {self.update_interval} is not shorter than the "
                                f"{round(end * max_steps)} steps in which schedule {self.schedule} "
                                f"moves the masks (of max_steps {max_steps}): give a smaller "
                                "--update_interval")

    def schedule_options(self) -> dict:
        return {k: getattr(self, k) for k in SCHEDULE_FIELDS if k != "schedule"}

    def schedule_words(self) -> str:
        """"" for SPDF's one static mask; else e.g. "rigl" or "static, dense from 80% of the
        steps"."""
        if self.schedule == "static" and not self.dense_from:
            return ""
        tail = f", dense from {self.dense_from:.0%} of the steps" if self.dense_from else ""
        return self.schedule + tail

    def make_schedule(self, max_steps: int):
        """The schedule of these settings for a run of ``max_steps`` (``start`` draws the masks)."""
        return KINDS[self.schedule](self, max_steps)


# how the masks move (the other fields: how they are drawn)
SCHEDULE_FIELDS = tuple(f.name for f in fields(SparsityConfig) if "applies_to" in f.metadata)
SparsityConfig.SCHEDULE_FIELDS = SCHEDULE_FIELDS


def applies_to(kind: str) -> tuple[str, ...]:
    """The schedule settings that mean something for the schedule ``kind``."""
    return tuple(f.name for f in fields(SparsityConfig) if kind in f.metadata.get("applies_to", ()))


# ------------------------------------------------------------------------------ schedules


class MaskSchedule:
    """``static``: the masks ``sparsify`` draws, unchanged until ``dense_from`` (if set).

    Steps are counted from 1: ``update(model, optimizer, step)`` runs after the ``step``-th
    optimizer step, and what it changes holds from step ``step + 1`` on.
    """
    kind = "static"

    def __init__(self, cfg: SparsityConfig, max_steps: int):
        cfg.check_timing(max_steps)
        self.sparsity, self.max_steps, self.interval = cfg.sparsity, max_steps, cfg.update_interval
        self.mask_options = dict(method=cfg.method, distribution=cfg.distribution,
                                 include=cfg.include, scope=cfg.scope, seed=cfg.mask_seed)
        self.drop_fraction, self.stop_step = cfg.drop_fraction, round(cfg.stop_fraction * max_steps)
        self.gmp_steps = (round(cfg.gmp_start * max_steps), round(cfg.gmp_end * max_steps))
        self.nm = parse_nm(cfg.nm)
        self.dense_step = round(cfg.dense_from * max_steps) if cfg.dense_from else 0
        self.generator = torch.Generator().manual_seed(cfg.mask_seed + 7919)  # SET's regrowth
        self.history: list[dict] = []  # one record per change of the masks

    # -------------------------------------------------- what a loop calls

    def start(self, model: nn.Module) -> None:
        """Give ``model`` its first masks."""
        sp.draw_masks(model, self.sparsity, **self.mask_options)  # checked by SparsityConfig

    @property
    def timed(self) -> bool:
        """Whether the schedule's steps depend on ``max_steps`` (then a resume must keep it)."""
        return self.kind != "static" or bool(self.dense_step)

    def prepare(self, step: int) -> None:
        """Before the ``step``-th step's backward (RigL reads its dense gradient)."""

    def density_at(self, step: int) -> float:
        """The nominal density of the masked matrices during the ``step``-th step (for FLOP
        sums)."""
        return 1.0 if self.dense_step and step > self.dense_step else 1.0 - self.sparsity

    def reads_dense_gradient_at(self, step: int) -> bool:
        return False

    @property
    def reading_dense_gradient(self) -> bool:
        return False

    @torch.no_grad()
    def update(self, model: nn.Module, optimizer, step: int) -> dict | None:
        """After the ``step``-th optimizer step: change the masks if this is an update step.
        Returns the change or None: ``step``, ``dropped`` and ``grown`` (slots that left and joined
        the masks, as fractions of those kept before) and ``density`` (kept fraction after)."""
        if self.dense_step and step == self.dense_step:
            sp.densify(model)
            record = {"step": step, "dropped": 0.0, "grown": 0.0, "density": 1.0, "event": "dense"}
        elif self.dense_step and step > self.dense_step:
            return None
        else:
            record = self._move(model, optimizer, step)
        if record is not None:
            self.history.append(record)
        return record

    def _move(self, model, optimizer, step: int) -> dict | None:
        return None

    # -------------------------------------------------- checkpoints

    def state_dict(self) -> dict:
        return {"kind": self.kind, "max_steps": self.max_steps, "history": list(self.history),
                "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict | None) -> None:
        if state is None and self.kind == "static" and not self.dense_step:
            return  # a checkpoint from before schedules: static, nothing to restore
        state = state or {}
        if state.get("kind") != self.kind:
            raise MiniSPDFError(f"the checkpoint's mask schedule is {state.get('kind')!r}, not "
                                f"{self.kind!r}: "
                                f"pass --schedule {state.get('kind')}")
        if self.timed and state.get("max_steps") != self.max_steps:
            raise MiniSPDFError(f"the {self.kind} mask schedule of this run is timed for max_steps "
                                f"{state.get('max_steps')}: "
                                f"resume with --max_steps {state.get('max_steps')}")
        self.history = list(state["history"])
        self.generator.set_state(state["generator"])

    # -------------------------------------------------- shared by the moving schedules

    def _apply(self, model, optimizer, new_masks: dict, step: int) -> dict:
        """Attach ``new_masks`` and zero the weights and optimizer moments of every slot that
        changed."""
        old = {name: mask for name, _, mask in sp.masked_parameters(model)}
        params = dict(model.named_parameters())
        grown = dropped = kept = 0
        for name, new in new_masks.items():
            flipped = new ^ old[name]
            grown += int((new & ~old[name]).sum())
            dropped += int((old[name] & ~new).sum())
            kept += int(old[name].sum())
            p = params[name]
            p[flipped] = 0.0  # dropped: zero now; grown: starts at zero
            for v in (optimizer.state.get(p, {}).values() if optimizer is not None else ()):
                if torch.is_tensor(v) and v.shape == p.shape:
                    v[flipped] = 0.0
            sp.register_masks(model, {name: new})
        numel = sum(m.numel() for m in new_masks.values())
        density = sum(int(m.sum()) for m in new_masks.values()) / numel
        return {"step": step, "dropped": dropped / max(kept, 1), "grown": grown / max(kept, 1),
                "density": density}


class SET(MaskSchedule):
    """Drop the smallest-magnitude kept weights, regrow as many at random."""
    kind = "set"

    def is_update(self, step: int) -> bool:
        return step % self.interval == 0 and 0 < step < self.stop_step

    def _grow_score(self, name: str, p: torch.Tensor) -> torch.Tensor:
        return torch.rand(p.shape, generator=self.generator).to(p.device)

    def _move(self, model, optimizer, step: int) -> dict | None:
        if not self.is_update(step):
            return None
        fraction = cosine_fraction(step, self.drop_fraction, self.stop_step)
        new = {name: drop_and_grow(mask, p, self._grow_score(name, p),
                                   round(fraction * int(mask.sum())))
               for name, p, mask in sp.masked_parameters(model)}
        return self._apply(model, optimizer, new, step)


class RigL(SET):
    """Drop the smallest-magnitude kept weights, regrow where the dense gradient is largest."""
    kind = "rigl"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._grads: dict[int, torch.Tensor] = {}
        self._reading = False

    def prepare(self, step: int) -> None:
        self._grads.clear()
        self._reading = self.is_update(step)
        sp.tap_dense_gradients(self._tap if self._reading else None)

    @property
    def reading_dense_gradient(self) -> bool:
        return self._reading

    def reads_dense_gradient_at(self, step: int) -> bool:
        return self.is_update(step)

    def _tap(self, param: torch.Tensor, grad: torch.Tensor, mask: torch.Tensor) -> None:
        """Called by the mask's gradient hook before it clears the pruned slots, once per
        micro-batch: the pruned slots hold this micro-batch's gradient only, so they accumulate."""
        g = grad.detach().clone()
        previous = self._grads.get(id(param))
        if previous is not None:
            g += previous.masked_fill(mask, 0.0)
        self._grads[id(param)] = g

    def _grow_score(self, name: str, p: torch.Tensor) -> torch.Tensor:
        g = self._grads.get(id(p))
        if g is None:
            raise MiniSPDFError(f"RigL found no dense gradient for {name}: call "
                                f"schedule.prepare(step) before the "
                                "step's backward")
        return g.abs()

    def _move(self, model, optimizer, step: int) -> dict | None:
        try:
            return super()._move(model, optimizer, step)
        finally:
            sp.tap_dense_gradients(None)
            self._grads.clear()
            self._reading = False


class GMP(MaskSchedule):
    """Start dense (masks of all ones); prune by magnitude towards ``sparsity`` on a cubic ramp."""
    kind = "gmp"

    def start(self, model: nn.Module) -> None:
        sp.register_masks(model, {name: torch.ones_like(p, dtype=torch.bool)
                                  for name, p in sp.target_parameters(model,
                                          self.mask_options["include"])})

    def is_update(self, step: int) -> bool:
        start, end = self.gmp_steps
        return start < step <= end and ((step - start) % self.interval == 0 or step == end)

    def density_at(self, step: int) -> float:
        if self.dense_step and step > self.dense_step:
            return 1.0
        # the masks' last move before it
        last = max([t for t in range(1, step) if self.is_update(t)], default=0)
        return 1.0 - (cubic_sparsity(last, self.sparsity, *self.gmp_steps) if last else 0.0)

    def _move(self, model, optimizer, step: int) -> dict | None:
        if not self.is_update(step):
            return None
        target = cubic_sparsity(step, self.sparsity, *self.gmp_steps)
        new = {name: magnitude_keep(mask, p, round((1 - target) * mask.numel()))
               for name, p, mask in sp.masked_parameters(model)}
        return self._apply(model, optimizer, new, step)


class NM(MaskSchedule):
    """N:M masks chosen by magnitude at the start, fixed for the run."""
    kind = "nm"

    def start(self, model: nn.Module) -> None:
        n, m = self.nm
        sp.register_masks(model, {name: nm_mask(p, n, m)
                                  for name, p in sp.target_parameters(model,
                                          self.mask_options["include"])})


KINDS = {cls.kind: cls for cls in (MaskSchedule, SET, RigL, GMP, NM)}


def make_schedule(schedule: str, sparsity: float, max_steps: int, *, seed: int = 0,
                  **options) -> MaskSchedule:
    """The schedule named ``schedule`` (one of :data:`SCHEDULES`); ``options`` are the fields of
    :class:`SparsityConfig` (``seed``: its ``mask_seed``)."""
    cfg = SparsityConfig(sparsity, schedule=schedule, mask_seed=seed, **options)
    return cfg.make_schedule(max_steps)

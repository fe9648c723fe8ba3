"""Mask schedules: how the masks of sparse pre-training change during the run.

SPDF keeps one mask from the first step to the last. Since then the field has tried masks that
move, masks that arrive gradually, a pattern that GPUs accelerate, and a dense tail:

=========== ============================================================================================
``static``  one mask for all of pre-training (SPDF), drawn by :func:`minispdf.sparsity.sparsify`
``set``     every ``update_interval`` steps, drop the smallest-magnitude kept weights of each tensor and
            regrow as many pruned slots at random (SET, Mocanu et al. 2018)
``rigl``    the same drop; regrow where the dense gradient is largest (RigL, Evci et al. 2020). The
            backward pass of an update step computes the dense weight gradient, and its FLOPs count
``gmp``     start dense; prune by magnitude on a cubic ramp from ``gmp_start`` to ``gmp_end`` of the run
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

import math
from dataclasses import dataclass

import torch
import torch.nn as nn

from . import sparsity as sp
from .config import Settings, setting
from .errors import MiniSPDFError

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


def check_schedule(schedule: str, sparsity: float, *, update_interval: int = 100, drop_fraction: float = 0.3,
                   stop_fraction: float = 0.75, gmp_start: float = 0.25, gmp_end: float = 0.75, nm: str = "2:4",
                   dense_from: float = 0.0, scope: str = "tensor", max_steps: int | None = None) -> float:
    """Refuse a bad combination with one line; returns the sparsity the schedule reaches."""
    if schedule not in SCHEDULES:
        raise MiniSPDFError(f"unknown schedule {schedule!r}: choose one of {', '.join(SCHEDULES)}")
    if isinstance(update_interval, bool) or not isinstance(update_interval, int) or update_interval < 1:
        raise MiniSPDFError(f"update_interval={update_interval!r} must be a positive number of steps")
    if not 0.0 < drop_fraction < 1.0:
        raise MiniSPDFError(f"drop_fraction={drop_fraction!r} is outside (0, 1): give the fraction of kept weights "
                            "moved at the first update, e.g. 0.3")
    if not 0.0 < stop_fraction <= 1.0:
        raise MiniSPDFError(f"stop_fraction={stop_fraction!r} is outside (0, 1]: e.g. 0.75 fixes the mask for the "
                            "last quarter of the run")
    if not 0.0 <= gmp_start < gmp_end <= 1.0:
        raise MiniSPDFError(f"gmp_start={gmp_start!r}, gmp_end={gmp_end!r}: need 0 <= gmp_start < gmp_end <= 1")
    if not 0.0 <= dense_from < 1.0:
        raise MiniSPDFError(f"dense_from={dense_from!r} is outside [0, 1): the fraction of pre-training after which "
                            "the masks are dropped (0: never)")
    if schedule == "nm":
        n, m = parse_nm(nm)
        if scope != "tensor":
            raise MiniSPDFError("schedule nm keeps N of every M weights within a tensor: drop --scope global")
        if sparsity not in (0.0, 1 - n / m):
            raise MiniSPDFError(f"schedule nm {nm} means sparsity {1 - n / m:g}, not {sparsity:g}: pass "
                                f"--sparsity {1 - n / m:g} or leave it out")
        sparsity = 1 - n / m
    elif sparsity == 0.0 and (schedule != "static" or dense_from):
        raise MiniSPDFError(f"schedule {schedule}{' with dense_from' if dense_from else ''} needs --sparsity S > 0")
    if schedule in (*DYNAMIC, "gmp") and scope != "tensor":
        raise MiniSPDFError(f"schedule {schedule} moves masks tensor by tensor: drop --scope global")
    if max_steps is not None and schedule in (*DYNAMIC, "gmp"):
        end = stop_fraction if schedule in DYNAMIC else gmp_end
        if update_interval >= end * max_steps:
            raise MiniSPDFError(f"update_interval {update_interval} is not shorter than the {round(end * max_steps)} "
                                f"steps in which schedule {schedule} moves the masks (of max_steps {max_steps}): "
                                "give a smaller --update_interval")
    return sparsity


# ------------------------------------------------------------------------------ the settings

SET_RIGL, GMP = ("schedule", ("set", "rigl")), ("schedule", ("gmp",))  # `applies`: the schedules a setting is for


@dataclass
class SparsityConfig(Settings):
    """Sparsity: how much of each masked matrix is pruned, and how the masks are drawn."""
    SCHEDULE_FIELDS = ("schedule", "update_interval", "drop_fraction", "stop_fraction", "gmp_start", "gmp_end", "nm",
                       "dense_from")  # how the masks move (the rest: how they are drawn)

    sparsity: float = setting(0.0, "fraction of the q/k/v, attention-out and MLP weights held at zero")
    method: str = setting("random", "how masks are drawn", choices=sp.METHODS)
    distribution: str = setting("uniform", "sparsity per layer: uniform (the paper's) or erk", choices=sp.DISTRIBUTIONS)
    scope: str = setting("tensor", "rank weights per tensor, or globally (magnitude only)", choices=("tensor", "global"))
    include: str | None = setting(None, "regex of the parameter names to sparsify (default: the block matrices)",
                                  metavar="REGEX")
    mask_seed: int = setting(0, "seed of random masks")
    schedule: str = setting("static", "how the masks change during pre-training: static (SPDF's one mask), set, rigl, "
                                      "gmp or nm (see minispdf.schedules)", choices=SCHEDULES)
    update_interval: int = setting(100, "set, rigl, gmp: steps between mask updates",
                                   applies=("schedule", ("set", "rigl", "gmp")))
    drop_fraction: float = setting(0.3, "set, rigl: fraction of each tensor's kept weights dropped and regrown at "
                                        "the first update, cosine-decayed to 0 at --stop_fraction", applies=SET_RIGL)
    stop_fraction: float = setting(0.75, "set, rigl: the mask stays fixed after this fraction of the steps",
                                   applies=SET_RIGL)
    gmp_start: float = setting(0.25, "gmp: dense until this fraction of the steps, then pruning starts", applies=GMP)
    gmp_end: float = setting(0.75, "gmp: the full --sparsity is reached at this fraction of the steps", applies=GMP)
    nm: str = setting("2:4", "nm: keep the N largest of every M consecutive weights along the input dimension",
                      metavar="N:M", applies=("schedule", ("nm",)))
    dense_from: float = setting(0.0, "drop the masks at this fraction of pre-training: Variable SPDF's dense tail "
                                     "(0: never)")

    def __post_init__(self):
        sp.check_sparsity(self.sparsity)
        sp.check_mask_options(self.method, self.distribution, self.scope, self.include)
        super().__post_init__()
        self.sparsity = check_schedule(self.schedule, self.sparsity, **self.schedule_options(), scope=self.scope)

    def schedule_options(self) -> dict:
        return {k: getattr(self, k) for k in self.SCHEDULE_FIELDS if k != "schedule"}

    def schedule_words(self) -> str:
        """"" for SPDF's one static mask; else e.g. "rigl" or "static, dense from 80% of the steps"."""
        if self.schedule == "static" and not self.dense_from:
            return ""
        return self.schedule + (f", dense from {self.dense_from:.0%} of the steps" if self.dense_from else "")

    def make_schedule(self, max_steps: int):
        """The mask schedule of these settings for a run of ``max_steps`` (its ``start`` draws the masks)."""
        return make_schedule(self.schedule, self.sparsity, max_steps, method=self.method,
                             distribution=self.distribution, include=self.include, scope=self.scope,
                             seed=self.mask_seed, **self.schedule_options())


# ------------------------------------------------------------------------------ moves (pure functions of tensors)


def _lowest(scores: torch.Tensor, slots: torch.Tensor, k: int) -> torch.Tensor:
    """The ``k`` of ``slots`` (flat indices) with the lowest scores; ties: the lower index first."""
    return slots[torch.argsort(scores[slots], stable=True)[:k]]


def _highest(scores: torch.Tensor, slots: torch.Tensor, k: int) -> torch.Tensor:
    return slots[torch.argsort(scores[slots], descending=True, stable=True)[:k]]


def drop_and_grow(mask: torch.Tensor, weight: torch.Tensor, grow_score: torch.Tensor, n_move: int) -> torch.Tensor:
    """One SET/RigL move of one tensor: drop the ``n_move`` kept slots of smallest |weight|, then grow
    the ``n_move`` slots of largest ``grow_score`` among those not kept after the drop (a slot just
    dropped may come back, keeping its weight). The number kept is unchanged."""
    flat = mask.flatten().clone()
    dropped = _lowest(weight.detach().abs().flatten().float(), flat.nonzero().squeeze(1), n_move)
    flat[dropped] = False
    grown = _highest(grow_score.flatten().float(), (~flat).nonzero().squeeze(1), n_move)
    flat[grown] = True
    return flat.view_as(mask)


def magnitude_keep(mask: torch.Tensor, weight: torch.Tensor, n_keep: int) -> torch.Tensor:
    """The ``n_keep`` kept slots of largest |weight| (GMP's prune step); never revives a pruned slot."""
    flat = torch.zeros(mask.numel(), dtype=torch.bool, device=mask.device)
    flat[_highest(weight.detach().abs().flatten().float(), mask.flatten().nonzero().squeeze(1), n_keep)] = True
    return flat.view_as(mask)


def nm_mask(weight: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Keep the ``n`` largest |w| of every ``m`` consecutive weights along the input dimension (the
    last one: a Linear's weight is out x in); ties: the earlier weight first."""
    rows, cols = weight.shape[0], weight[0].numel()
    if cols % m:
        raise MiniSPDFError(f"a weight of shape {tuple(weight.shape)} has {cols} inputs, not a multiple of M={m}: "
                            "N:M needs every group of M whole")
    groups = weight.detach().abs().float().reshape(rows, cols // m, m)
    top = torch.argsort(groups, dim=-1, descending=True, stable=True)[..., :n]
    keep = torch.zeros_like(groups, dtype=torch.bool).scatter_(-1, top, True)
    return keep.reshape(weight.shape)


def check_nm(mask: torch.Tensor, n: int, m: int) -> None:
    """Raise unless every group of ``m`` consecutive inputs keeps exactly ``n``."""
    counts = mask.reshape(mask.shape[0], -1, m).sum(-1)
    if not bool((counts == n).all()):
        bad = int((counts != n).sum())
        raise MiniSPDFError(f"{bad} groups of {m} do not keep exactly {n}: not an {n}:{m} mask")


def cosine_fraction(step: int, drop_fraction: float, end: int) -> float:
    """RigL's cosine decay of the fraction moved: ``drop_fraction`` at step 0, 0 at ``end``."""
    return drop_fraction / 2 * (1 + math.cos(math.pi * min(step, end) / end))


def cubic_sparsity(step: int, final: float, start: int, end: int) -> float:
    """GMP's target sparsity at ``step``: 0 before ``start``, ``final`` from ``end``, cubic between."""
    progress = min(1.0, max(0.0, (step - start) / (end - start)))
    return final * (1 - (1 - progress) ** 3)


# ------------------------------------------------------------------------------ schedules


class MaskSchedule:
    """``static``: the masks ``sparsify`` draws, unchanged until ``dense_from`` (if set).

    Steps are counted from 1: ``update(model, optimizer, step)`` runs after the ``step``-th
    optimizer step, and what it changes holds from step ``step + 1`` on.
    """
    kind = "static"

    def __init__(self, sparsity: float, max_steps: int, *, method: str = "random", distribution: str = "uniform",
                 include: str | None = None, scope: str = "tensor", seed: int = 0, update_interval: int = 100,
                 drop_fraction: float = 0.3, stop_fraction: float = 0.75, gmp_start: float = 0.25,
                 gmp_end: float = 0.75, nm: str = "2:4", dense_from: float = 0.0):
        self.sparsity = check_schedule(self.kind, sparsity, update_interval=update_interval,
                                       drop_fraction=drop_fraction, stop_fraction=stop_fraction, gmp_start=gmp_start,
                                       gmp_end=gmp_end, nm=nm, dense_from=dense_from, scope=scope,
                                       max_steps=max_steps)
        self.max_steps, self.interval = max_steps, update_interval
        self.mask_options = dict(method=method, distribution=distribution, include=include, scope=scope, seed=seed)
        self.drop_fraction, self.stop_step = drop_fraction, round(stop_fraction * max_steps)
        self.gmp_steps = (round(gmp_start * max_steps), round(gmp_end * max_steps))
        self.nm = parse_nm(nm)
        self.dense_step = round(dense_from * max_steps) if dense_from else 0
        self.generator = torch.Generator().manual_seed(seed + 7919)  # SET's regrowth: its own stream
        self.history: list[dict] = []  # one record per change of the masks

    # -------------------------------------------------- what a loop calls

    def start(self, model: nn.Module) -> None:
        """Give ``model`` its first masks."""
        o = self.mask_options
        sp.sparsify(model, self.sparsity, method=o["method"], distribution=o["distribution"], include=o["include"],
                    scope=o["scope"], seed=o["seed"])

    @property
    def timed(self) -> bool:
        """Whether the schedule's steps depend on ``max_steps`` (then a resume must keep it)."""
        return self.kind != "static" or bool(self.dense_step)

    def prepare(self, step: int) -> None:
        """Before the ``step``-th step's backward (RigL reads its dense gradient)."""

    def density_at(self, step: int) -> float:
        """The nominal density of the masked matrices during the ``step``-th step (for FLOP sums)."""
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
            raise MiniSPDFError(f"the checkpoint's mask schedule is {state.get('kind')!r}, not {self.kind!r}: "
                                f"pass --schedule {state.get('kind')}")
        if self.timed and state.get("max_steps") != self.max_steps:
            raise MiniSPDFError(f"the {self.kind} mask schedule of this run is timed for max_steps {state.get('max_steps')}: "
                                f"resume with --max_steps {state.get('max_steps')}")
        self.history = list(state["history"])
        self.generator.set_state(state["generator"])

    # -------------------------------------------------- shared by the moving schedules

    def _apply(self, model, optimizer, new_masks: dict, step: int) -> dict:
        """Attach ``new_masks`` and zero the weights and optimizer moments of every slot that changed."""
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
        return {"step": step, "dropped": dropped / max(kept, 1), "grown": grown / max(kept, 1), "density": density}


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
        new = {name: drop_and_grow(mask, p, self._grow_score(name, p), round(fraction * int(mask.sum())))
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
            raise MiniSPDFError(f"RigL found no dense gradient for {name}: call schedule.prepare(step) before the "
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
                                  for name, p in sp.target_parameters(model, self.mask_options["include"])})

    def is_update(self, step: int) -> bool:
        start, end = self.gmp_steps
        return start < step <= end and ((step - start) % self.interval == 0 or step == end)

    def density_at(self, step: int) -> float:
        if self.dense_step and step > self.dense_step:
            return 1.0
        last = max([t for t in range(1, step) if self.is_update(t)], default=0)  # the masks' last move before it
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
                                  for name, p in sp.target_parameters(model, self.mask_options["include"])})


KINDS = {cls.kind: cls for cls in (MaskSchedule, SET, RigL, GMP, NM)}


def make_schedule(schedule: str, sparsity: float, max_steps: int, **options) -> MaskSchedule:
    """The schedule named ``schedule`` (one of :data:`SCHEDULES`); ``options`` as in :class:`MaskSchedule`."""
    if schedule not in KINDS:
        raise MiniSPDFError(f"unknown schedule {schedule!r}: choose one of {', '.join(SCHEDULES)}")
    return KINDS[schedule](sparsity, max_steps, **options)

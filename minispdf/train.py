"""One training loop for both SPDF phases: sparse pre-training and dense (or sparse) fine-tuning.

``train(model, batches, config)`` is an importable function, not a script: a notebook calls it,
the CLI calls it, ``torchrun`` calls it. The phases differ only in what they are given:

* sparse pre-training: a model with masks (``sparsity.sparsify``) and token batches;
* dense fine-tuning: the same model after ``sparsity.densify`` and task batches with a loss mask;
* sparse fine-tuning (SPSF): the masked model, not densified.

The loop is the same for both: a masked model keeps its own zeros (see ``sparsity``).

``batches`` is any object with ``get_batch(split, generator, device) -> (x, y, loss_mask|None)``;
sampling must draw from ``generator`` so that a checkpoint of its state restores the data
position exactly. Callbacks are callables ``cb(event, record)`` with event "step", "eval" or
"end"; one that returns True stops training after the current step.

Reading order: ``train`` is ``setup`` (device, seed, optimizer), ``restore`` (from a checkpoint,
with ``resume``) and ``loop`` (the steps), then a final evaluation and ``save``. The log file and
the progress bar are callbacks too (``minispdf.callbacks``), so the loop holds no bookkeeping.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import sys
import time
from dataclasses import asdict, dataclass, field

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from .settings import MAX_STEPS, STEPS_HINT, Settings, device_setting, setting
from .callbacks import ProgressBar, RunLog, StopSignals, notify
from .checkpoint import read_checkpoint, save_checkpoint
from .devices import autocast_for, check_device_name, dist_info, pick_device
from .errors import Interrupted, MiniSPDFError, one_line
from .flops import flop_report
from .run_folder import check_resumable
from .sparsity import densify, mask_state_keys, register_masks, tap_dense_gradients


@dataclass
class TrainConfig(Settings):
    """Training: the optimizer, its schedule, evaluation, checkpoints and the device."""
    max_steps: int = setting(200, "optimizer steps; also the length of the LR schedule", min=1,
                             max=MAX_STEPS,
                             hint=STEPS_HINT)
    batch_size: int = setting(12, "sequences per micro-batch (per rank)", min=1)
    grad_accum: int = setting(1, "micro-batches per optimizer step", min=1, max=10_000,
                              hint="a larger batch takes a larger --batch_size")
    lr: float = setting(1e-3, "peak learning rate", above=0)
    min_lr_ratio: float = setting(0.1, "the cosine decays to lr * min_lr_ratio", min=0, max=1)
    warmup_steps: int = setting(20, "linear warmup steps", min=0)
    weight_decay: float = setting(0.1,
                                  "AdamW weight decay, on matrices only (not biases, LayerNorms)",
                                  min=0,
                                  hint="0 turns it off")
    beta1: float = setting(0.9, "AdamW beta1", min=0, below=1, hint="torch's AdamW default is 0.9")
    beta2: float = setting(0.95, "AdamW beta2", min=0, below=1,
                           hint="torch's AdamW default is 0.999; GPT pre-training "
                                "commonly uses 0.95")
    eps: float = setting(1e-8, "AdamW epsilon", above=0, hint="e.g. 1e-8")
    grad_clip: float = setting(1.0, "clip the gradient norm to this (0: no clipping)", min=0,
                               hint="0 turns it off")
    eval_interval: int = setting(50, "steps between evaluations (0: only at the end)", min=0)
    eval_iters: int = setting(10, "batches per evaluation", min=1, max=10_000,
                              hint="each is a forward pass")
    log_interval: int = setting(1, "steps between log.jsonl records", min=1)
    checkpoint_interval: int = setting(
        0, "steps between checkpoints (0: only at the end; Ctrl-C, SIGTERM and "
                                          "--stop_after always save one at the current step)",
                                       min=0)
    stop_after: int = setting(0, "stop (with a checkpoint) at this step, to continue later with "
                                 "--resume (0: never)",
                              min=0)
    seed: int = setting(1337, "seed of the initial weights, dropout and the data order")
    device: str = device_setting()
    compile: bool = setting(False, "torch.compile the model")
    progress: bool = setting(True, "show a progress bar")

    def __post_init__(self):
        super().__post_init__()
        check_device_name(self.device)


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warmup to ``lr``, then cosine decay to ``lr * min_lr_ratio`` at ``max_steps``."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    span = max(1, cfg.max_steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    coeff = 0.5 * (1.0 + math.cos(math.pi * progress))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * coeff)


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    kwargs = dict(lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps)
    try:
        # The fused kernel (CUDA, and CPU since torch 2.4) is one pass over each tensor. On a CPU
        # the default per-op AdamW is ~3x slower, and slower still on a masked model: its sqrt
        # of the pruned slots' zero second moments takes a slow path (1.1 ms more per step on
        # the tiny preset, measured).
        return torch.optim.AdamW(groups, fused=True, **kwargs)
    except RuntimeError:  # an older torch, or a device without fused kernels
        return torch.optim.AdamW(groups, **kwargs)


@torch.no_grad()
def estimate_loss(model, batches, split: str, iters: int, device: str, seed: int,
                  autocast) -> float:
    """Mean loss over ``iters`` batches drawn with a fixed seed (the same batches every time)."""
    was_training = model.training
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    losses = []
    for _ in range(iters):
        x, y, m = batches.get_batch(split, gen, device)
        with autocast():
            _, loss = model(x, y, m)
        losses.append(loss.item())
    model.train(was_training)
    return sum(losses) / len(losses)


def forward_backward(model, x, y, loss_mask, grad_accum: int, autocast) -> float:
    """Forward and backward of one micro-batch; gradients accumulate. Returns the loss."""
    with autocast():
        _, loss = model(x, y, loss_mask)
    (loss / grad_accum).backward()
    return loss.item()


def finish_step(model, optimizer, grad_clip: float) -> None:
    """Clip, step, clear gradients: the end of every step.

    A masked model needs nothing more: its masks keep the pruned weights, gradients and AdamW
    moments at zero by themselves (hooks installed by ``sparsity.sparsify``).
    """
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


# ------------------------------------------------------------------------------ the state of a run


@dataclass
class TrainState:
    """What the loop changes, and so what a checkpoint must hold to resume it exactly."""
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    cfg: TrainConfig
    device: str
    data_gen: torch.Generator  # draws the batches: its state is the data position
    rank: int = 0
    world: int = 1
    ckpt_path: str | None = None
    # stored in the checkpoint: tokenizer, data, phase, ...
    meta: dict = field(default_factory=dict)
    schedule: object = None  # a ``schedules.MaskSchedule`` that moves the masks, or None
    step: int = 0
    flops: float = 0.0  # training FLOPs so far, counting the masks
    flops_dense: float = 0.0  # the same steps if every weight were dense
    tokens: int = 0  # tokens that count in the loss (targets only, when fine-tuning)
    _flop_cache: dict = field(default_factory=dict)
    _t_last: float = field(default_factory=time.perf_counter)

    def count(self, x, loss_mask) -> None:
        """Add one micro-batch's FLOPs (every position, prompt and padding too) and tokens, on all
        ranks.

        At the masks' density now (a schedule's move empties the cache); a backward that computes
        the dense weight gradient (RigL's update step) costs the dense weight-gradient matmuls."""
        T = x.size(1)
        if T not in self._flop_cache:  # training FLOPs per token at this sequence length
            r = flop_report(self.model, seq_len=T)
            self._flop_cache[T] = (r.train_flops_per_token(True), r.train_flops_per_token(False),
                                   (r.forward_dense - r.forward_sparse) / T)
        sparse, dense, dense_grad_extra = self._flop_cache[T]
        if self.schedule is not None and self.schedule.reading_dense_gradient:
            sparse += dense_grad_extra
        self.flops += sparse * x.numel() * self.world
        self.flops_dense += dense * x.numel() * self.world
        self.tokens += (x.numel() if loss_mask is None else int(loss_mask.sum())) * self.world

    def record(self, **values) -> dict:
        now = time.perf_counter()
        rec = {"step": self.step, **values, "flops": self.flops, "flops_dense": self.flops_dense,
               "tokens": self.tokens, "step_ms": 1000 * (now - self._t_last)}
        self._t_last = now
        return rec


def setup(model, cfg: TrainConfig, ckpt_path: str | None, meta: dict, schedule=None) -> TrainState:
    """Pick the device (joining the process group under torchrun), seed, move the model, make the
    optimizer."""
    rank, local_rank, world = dist_info()
    device = pick_device(cfg.device)
    if world > 1:
        if device.startswith("cuda"):
            device = f"cuda:{local_rank}"
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
    torch.manual_seed(cfg.seed)
    model.to(device)
    if schedule is not None and schedule.kind == "rigl" and world > 1:
        raise MiniSPDFError("schedule rigl reads each rank's own dense gradient: run it on one "
                            "process (not torchrun)")
    return TrainState(model, make_optimizer(model, cfg), cfg, device,
                      torch.Generator().manual_seed(cfg.seed + 1000 * rank),
                      rank, world, ckpt_path, dict(meta), schedule)


def restore(s: TrainState) -> None:
    """Load model, masks, optimizer, counters and every RNG from ``s.ckpt_path``, checking they
    fit."""
    ckpt = read_checkpoint(s.ckpt_path, map_location=s.device)
    check_resumable(ckpt, s.ckpt_path, s.model.config, s.meta.get("tokenizer"), s.cfg.max_steps)
    try:
        # the checkpoint's masks, and none where it has none (a schedule may have dropped them)
        densify(s.model)
        register_masks(s.model, mask_state_keys(ckpt["model"]))
        s.model.load_state_dict(ckpt["model"])
        s.optimizer = make_optimizer(s.model, s.cfg)  # over the parameters as they are now
        s.optimizer.load_state_dict(ckpt["optimizer"])
        torch.set_rng_state(ckpt["rng"]["torch"].cpu())
        data_states = [d.cpu() for d in ckpt["rng"]["data"]]
    except (KeyError, ValueError, RuntimeError, TypeError, AttributeError) as e:
        raise MiniSPDFError(f"{s.ckpt_path} cannot be resumed ({one_line(e)}): the file is damaged "
                            f"or from another "
                            "version; start a new run without --resume") from None
    s.step, s.flops, s.flops_dense, s.tokens = (ckpt["step"], ckpt["flops"], ckpt["flops_dense"],
                                                ckpt["tokens"])
    if s.schedule is not None:
        s.schedule.load_state_dict(ckpt.get("schedule"))
    if s.device.startswith("cuda") and ckpt["rng"].get("cuda") is not None:
        torch.cuda.set_rng_state(ckpt["rng"]["cuda"].cpu())
    if len(data_states) == s.world:
        s.data_gen.set_state(data_states[s.rank])
    elif s.rank == 0:
        print(f"warning: checkpoint has data positions for {len(data_states)} ranks, running "
              f"{s.world}: the data "
              "order is reseeded, so this run will not match an unsplit one", file=sys.stderr)
    s.meta = {**ckpt.get("meta", {}), **s.meta}


def save(s: TrainState) -> None:
    """Write ``s.ckpt_path`` (rank 0), with every rank's data position (a collective under DDP)."""
    data_states = [s.data_gen.get_state()]
    if s.world > 1:
        data_states = [None] * s.world
        dist.all_gather_object(data_states, s.data_gen.get_state())
    if s.rank != 0 or not s.ckpt_path:
        return
    save_checkpoint(s.ckpt_path, dict(
        model=s.model.state_dict(), model_config=s.model.config.to_dict(),
        optimizer=s.optimizer.state_dict(),
        train_config=asdict(s.cfg), step=s.step, flops=s.flops,
        schedule=s.schedule.state_dict() if s.schedule is not None else None,
        flops_dense=s.flops_dense, tokens=s.tokens,
        rng=dict(torch=torch.get_rng_state(), data=data_states,
                 cuda=torch.cuda.get_rng_state() if s.device.startswith("cuda") else None),
        tokenizer=s.meta.get("tokenizer"), meta=s.meta,
    ))


def evaluate(s: TrainState, batches) -> dict:
    autocast = autocast_for(s.device)
    val_loss = estimate_loss(s.model, batches, "val", s.cfg.eval_iters, s.device, s.cfg.seed,
                             autocast)
    return {"step": s.step, "flops": s.flops, "flops_dense": s.flops_dense, "val_loss": val_loss}


def wrap(model, cfg: TrainConfig, s: TrainState):
    """The module the loop calls: compiled if asked, and inside DistributedDataParallel under
    torchrun."""
    if cfg.compile:
        model = torch.compile(model)
    if s.world > 1:
        model = DDP(model, device_ids=[int(s.device[5:])] if s.device.startswith("cuda") else None)
    return model


def sync_gradients(model, now: bool):
    """Under DDP, all-reduce the gradients once per step: on its last micro-batch, not on every
    one."""
    return model.no_sync() if isinstance(model, DDP) and not now else contextlib.nullcontext()


# ------------------------------------------------------------------------------ training


def train(model, batches, config: TrainConfig | None = None, out_dir: str | None = None,
          callbacks=(), resume: bool = False, meta: dict | None = None, schedule=None) -> dict:
    """Train ``model`` on ``batches``; returns a summary dict (losses, flops, history, paths).

    ``out_dir`` (optional) receives ``ckpt.pt`` and ``log.jsonl``; ``resume=True`` continues
    from ``out_dir/ckpt.pt`` so that a split run reproduces an unsplit one bit for bit on CPU.
    ``meta`` is stored in the checkpoint (tokenizer name, data source, phase, ...).
    ``schedule`` (a :class:`minispdf.schedules.MaskSchedule` whose ``start`` has given the model its
    masks) moves the masks during training; its state is part of the checkpoint.
    """
    cfg = config or TrainConfig()
    ckpt_path = os.path.join(out_dir, "ckpt.pt") if out_dir else None
    if resume and not (ckpt_path and os.path.exists(ckpt_path)):
        raise MiniSPDFError(
            f"cannot resume: no checkpoint in {out_dir}: drop --resume to start a new run")
    # from here, Ctrl-C stops at a step and saves it
    with StopSignals(enabled=dist_info()[2] == 1) as signals:
        s = setup(model, cfg, ckpt_path, meta or {}, schedule)
        if resume:
            restore(s)
        log = RunLog(out_dir, s, resume)
        bar = ProgressBar(s) if cfg.progress and s.rank == 0 else None
        model.train()
        try:
            train_loss = loop(s, batches, wrap(model, cfg, s),
                              [log, *([bar] if bar else []), *callbacks, signals])
        finally:  # an error message must start on its own line, not after the bar
            if bar:
                bar.close()
            if schedule is not None:
                # a step cut short must not leave RigL reading later runs' gradients
                tap_dense_gradients(None)
        if signals.signum is not None and s.step < cfg.max_steps:
            save(s)  # whatever checkpoint_interval: the work so far is kept
            name = signal.Signals(signals.signum).name
            raise Interrupted(f"{name} at step {s.step} of {cfg.max_steps}: " + (
                f"the checkpoint {ckpt_path} is saved at this step" if ckpt_path
                else "nothing saved (no run folder)"),
                signals.signum, s.step, ckpt_path)
        final = evaluate(s, batches)
        if s.step == cfg.max_steps:
            notify([log, *callbacks], "eval", final)
        save(s)
    result = {
        "step": s.step, "max_steps": cfg.max_steps, "finished": s.step >= cfg.max_steps,
        "train_loss": train_loss, "val_loss": final["val_loss"],
        "flops": s.flops, "flops_dense": s.flops_dense, "tokens": s.tokens,
        "sparsity": flop_report(model).sparsity, "device": s.device, "world_size": s.world,
        "out_dir": out_dir, "history": log.history,
    }
    notify(callbacks, "end", result)
    return result


def loop(s: TrainState, batches, train_model, callbacks) -> float:
    """The training loop. Returns the last step's training loss."""
    cfg, optimizer, autocast = s.cfg, s.optimizer, autocast_for(s.device)
    loss, stop = float("nan"), False
    while s.step < cfg.max_steps and not stop:
        lr = lr_at(s.step, cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss = 0.0
        if s.schedule is not None:
            s.schedule.prepare(s.step + 1)
        for micro in range(cfg.grad_accum):
            x, y, m = batches.get_batch("train", s.data_gen, s.device)
            with sync_gradients(train_model, now=micro == cfg.grad_accum - 1):
                loss += forward_backward(train_model, x, y, m, cfg.grad_accum, autocast)
            s.count(x, m)
        finish_step(s.model, optimizer, cfg.grad_clip)
        s.step += 1
        moved = s.schedule.update(s.model, optimizer, s.step) if s.schedule is not None else None
        if moved:
            s._flop_cache.clear()  # the next steps run at the new density
        loss /= cfg.grad_accum
        if not math.isfinite(loss):
            raise MiniSPDFError(
                f"loss became {loss} at step {s.step}: lower --lr or check the data")
        stop = notify(callbacks, "step",
                      s.record(loss=loss, lr=lr, **({"mask": moved} if moved else {})))
        if cfg.eval_interval and s.step % cfg.eval_interval == 0 and s.step < cfg.max_steps:
            stop |= notify(callbacks, "eval", evaluate(s, batches))
        stop |= bool(cfg.stop_after) and s.step >= cfg.stop_after
        if cfg.checkpoint_interval and s.step % cfg.checkpoint_interval == 0 and not stop:
            save(s)
    return loss

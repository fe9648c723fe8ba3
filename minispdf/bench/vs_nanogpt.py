"""The kit's dense training step against nanoGPT's, timed side by side on one model config.

    OMP_NUM_THREADS=1 python -m minispdf.bench.vs_nanogpt PATH/TO/nanoGPT/model.py --rounds 7
    --steps 50

nanoGPT is not part of the kit: give the path of its ``model.py`` (a checkout of
karpathy/nanoGPT). Both models get the same preset (``tiny``: nanoGPT's CPU configuration),
the same starting weights and the same batch; the first-step losses are printed, so you can see
that the two compute the same thing. One step is what each training script does on a CPU:
forward with targets, backward, ``clip_grad_norm_(1.0)``, the AdamW step, ``zero_grad``.

``--optimizer own`` (default) gives each its own AdamW: the kit's ``make_optimizer`` (the fused
kernel, CPU too) and nanoGPT's ``configure_optimizers`` (fused on CUDA only; on a CPU torch's
per-parameter loop). ``fused`` gives both the fused kernel, to compare forward and backward alone.
The arms alternate step by step (ABBA), and each round reports the ratio of median step times.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import statistics
import time

import torch

from ..errors import counted
from ..model import GPT, PRESETS, preset_config
from ..train import TrainConfig, finish_step, forward_backward, make_optimizer


def load_nanogpt(path: str):
    spec = importlib.util.spec_from_file_location("nanogpt_model", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model_py", help="path to nanoGPT's model.py")
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--batch_size", type=int, default=12)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--steps", type=int, default=50, help="interleaved steps per arm and round")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--optimizer", default="own", choices=["own", "fused"])
    a = ap.parse_args(argv)
    arms = make_steps(load_nanogpt(a.model_py), a.preset, a.batch_size, a.optimizer)
    same = arms["kit"]() == arms["nanoGPT"]()
    print(f"{a.preset}, batch {a.batch_size}, {counted(torch.get_num_threads(), 'thread')}, torch "
          f"{torch.__version__}; "
          f"optimizers: {a.optimizer}; first-step losses {'identical' if same else 'DIFFER'}")
    for _ in range(a.warmup):
        arms["kit"](), arms["nanoGPT"]()
    ratios, medians = [], {k: [] for k in arms}
    for r in range(a.rounds):
        m = time_round(arms, a.steps)
        ratios.append(m["kit"] / m["nanoGPT"])
        for k in arms:
            medians[k].append(m[k])
        print(f"round {r + 1}: kit {1000 * m['kit']:.2f} ms, nanoGPT {1000 * m['nanoGPT']:.2f} ms, "
              f"kit/nanoGPT {ratios[-1]:.3f}", flush=True)
    print(f"kit/nanoGPT: median {statistics.median(ratios):.3f} over {a.rounds} rounds of "
          f"{a.steps} interleaved "
          f"steps (range {min(ratios):.3f}-{max(ratios):.3f}); step "
          f"{1000 * statistics.median(medians['kit']):.2f} "
          f"vs {1000 * statistics.median(medians['nanoGPT']):.2f} ms")


def make_steps(ng, preset: str, batch_size: int, optimizer: str) -> dict:
    """``{"kit": step, "nanoGPT": step}``: one training step each, from the same weights and
    batch."""
    cfg = TrainConfig()
    torch.manual_seed(0)
    kit = GPT(preset_config(preset))
    with contextlib.redirect_stdout(io.StringIO()):  # nanoGPT prints its parameter count
        nano = ng.GPT(ng.GPTConfig(**PRESETS[preset], dropout=0.0, bias=True))
        nano.load_state_dict(kit.state_dict())  # the same names, the same starting weights
        nano_opt = (make_optimizer(nano, cfg) if optimizer == "fused" else
                    nano.configure_optimizers(cfg.weight_decay, cfg.lr, (cfg.beta1, cfg.beta2),
                                              "cpu"))
    kit_opt = make_optimizer(kit, cfg)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(kit.config.vocab_size, (batch_size, kit.config.block_size), generator=g)
    y = torch.randint(kit.config.vocab_size, (batch_size, kit.config.block_size), generator=g)

    def kit_step():  # what minispdf.train does
        loss = forward_backward(kit, x, y, None, 1, contextlib.nullcontext)
        finish_step(kit, kit_opt, cfg.grad_clip)
        return loss

    def nano_step():  # what nanoGPT's train.py does on a CPU (its GradScaler is off in fp32)
        _, loss = nano(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(nano.parameters(), cfg.grad_clip)
        nano_opt.step()
        nano_opt.zero_grad(set_to_none=True)
        return loss.item()

    return {"kit": kit_step, "nanoGPT": nano_step}


def time_round(arms: dict, steps: int) -> dict:
    """The median seconds of each arm's step over ``steps`` steps, alternated ABBA."""
    times = {k: [] for k in arms}
    for i in range(steps):
        for k in (("kit", "nanoGPT") if i % 2 == 0 else ("nanoGPT", "kit")):
            t = time.perf_counter()
            arms[k]()
            times[k].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


if __name__ == "__main__":
    main()

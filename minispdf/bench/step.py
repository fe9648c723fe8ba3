"""``minispdf bench``: what a masked training step really costs on your hardware.

Times the full training step (forward, backward with the masks' gradient hooks, clipping, AdamW
and the masks' step hook)
of one preset dense and masked, interleaved step by step so that drift in clock speed or
background load hits both arms alike, and reports medians, tokens/s, MFU and peak memory.

MFU is reported only against a known peak: the table below for GPUs, or ``--peak_tflops``.
On a CPU there is no honest datasheet number, so the bench *measures* the device's fp32 matmul
peak (a large square matmul) and reports MFU against that, labelled as measured.

Expect the masked step to cost the same as the dense one: dense kernels multiply the zeros.
The FLOP saving of sparse pre-training is theoretical on this hardware.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time

import torch

from ..settings import from_keywords
from ..errors import MiniSPDFError, counted
from ..flops import HONESTY_NOTE, flop_report
from ..model import GPT, preset_config
from ..sparsity import check_sparsity, masked_parameters, sparsify
from ..train import TrainConfig, finish_step, forward_backward, make_optimizer
from ..devices import autocast_for, pick_device
from .bench_config import BenchConfig

# Dense bf16 tensor-core peaks in TFLOP/s from the vendors' datasheets (no sparsity). Unknown
# devices get no MFU rather than a guessed one.
GPU_PEAK_TFLOPS = {
    "H200": 989.0, "H100 SXM": 989.0, "H100 NVL": 835.0, "H100 PCIe": 756.0, "H100": 756.0,
    "A100": 312.0, "A10G": 70.0, "A10": 125.0, "L40S": 362.0, "L4": 121.0,
    "RTX 4090": 165.2, "RTX 3090": 71.0, "V100": 125.0, "T4": 65.0,
}


def gpu_peak_tflops(name: str) -> float | None:
    for key in sorted(GPU_PEAK_TFLOPS, key=len, reverse=True):  # most specific first
        if key in name:
            return GPU_PEAK_TFLOPS[key]
    return None


def sync(device: str) -> None:
    """Wait for the device's queued kernels, so that a clock read after it times them."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def measure_matmul_peak(device: str, dtype=torch.float32, n: int = 1024, reps: int = 10) -> float:
    """Achieved FLOP/s of an n x n matmul: a measured ceiling for a CPU without a datasheet peak."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        sync(device)
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best


class Arm:
    """One arm of the bench: a model of ``preset`` (masked at ``sparsity`` > 0), its optimizer and
    one fixed random batch; :meth:`step` is one full training step."""

    def __init__(self, preset, sparsity, batch_size, block_size, device, compile_, seed=0):
        torch.manual_seed(seed)
        overrides = {"block_size": block_size} if block_size is not None else {}
        self.model = GPT(preset_config(preset, **overrides)).to(device)
        if sparsity > 0:
            sparsify(self.model, sparsity, seed=seed)
        self.optimizer = make_optimizer(self.model, TrainConfig())
        self.run_model = torch.compile(self.model) if compile_ else self.model
        T = self.model.config.block_size
        g = torch.Generator().manual_seed(seed)
        V = self.model.config.vocab_size
        self.x = torch.randint(V, (batch_size, T), generator=g).to(device)
        self.y = torch.randint(V, (batch_size, T), generator=g).to(device)

    def step(self, autocast):
        forward_backward(self.run_model, self.x, self.y, None, 1, autocast)
        finish_step(self.model, self.optimizer, 1.0)


def training_state_bytes(model, optimizer) -> dict:
    """Exact bytes of what a training step keeps alive, by kind: weights and other parameters,
    buffers (the masks), gradients (one per trainable parameter, alive from backward to the
    step) and optimizer state (AdamW's two moments and step counters).

    Peak RSS is dominated by torch itself (hundreds of MB) and cannot see a few MB of masks or a
    second copy of the weights; this count can.
    """
    out = {
        "parameters": sum(p.numel() * p.element_size() for p in model.parameters()),
        "buffers": sum(b.numel() * b.element_size() for b in model.buffers()),
        "gradients": sum(p.numel() * p.element_size() for p in model.parameters()
                         if p.requires_grad),
        "optimizer": sum(t.numel() * t.element_size() for s in optimizer.state.values()
                         for t in s.values() if torch.is_tensor(t)),
    }
    out["total"] = sum(out.values())
    return out


def _peak_rss_mb_of_arm(preset, sparsity, batch_size, block_size, steps) -> float:
    """Peak RSS of a fresh process that runs ``steps`` training steps of one arm (CPU only)."""
    code = (
        "import json,resource,torch;from minispdf.bench.step import Arm;from contextlib import "
        "nullcontext as n\n"
        f"a=Arm({preset!r},{sparsity},{batch_size},{block_size!r},'cpu',False)\n"
        f"[a.step(n) for _ in range({steps})]\n"
        "print(json.dumps(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))"
    )
    # holds minispdf/
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ,
               PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1]) / 1024  # ru_maxrss is in KiB on Linux


def step_autocast(device: str, dtype: str = "auto"):
    """(use_bf16, autocast context factory) for --dtype auto (bf16 on CUDA, fp32 elsewhere) | fp32 |
    bf16."""
    if dtype not in ("auto", "fp32", "bf16"):
        raise MiniSPDFError(f"--dtype {dtype!r}: choose auto, fp32 or bf16")
    use_bf16 = dtype == "bf16" or (dtype == "auto" and device.startswith("cuda"))
    autocast = (lambda: torch.autocast(device_type=device.split(":")[0],
                                       dtype=torch.bfloat16)) if use_bf16 \
        else autocast_for("cpu")
    return use_bf16, autocast


def _build_arms(s: BenchConfig, device: str, autocast) -> tuple[dict, dict]:
    """The dense and the masked arm, each built and warmed up (and compiled); on CUDA, the memory
    each one's warm-up took (what is allocated before it, the other arm, is not its cost)."""
    arms, mem = {}, {}
    for name, sparsity in (("dense", 0.0), ("sparse", s.sparsity)):
        if device.startswith("cuda"):
            sync(device)
            before = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
        arm = arms[name] = Arm(s.preset, sparsity, s.batch_size, s.block_size, device, s.compile)
        for _ in range(max(1, s.warmup)):
            arm.step(autocast)
        sync(device)
        if device.startswith("cuda"):
            mem[name] = (torch.cuda.max_memory_allocated() - before) / 2**20
    return arms, mem


def time_steps(arms: dict, steps: int, device: str, autocast) -> dict:
    """{arm: [seconds per step]}, the arms interleaved step by step."""
    times = {k: [] for k in arms}
    for _ in range(steps):
        for name, arm in arms.items():
            sync(device)
            t = time.perf_counter()
            arm.step(autocast)
            sync(device)
            times[name].append(time.perf_counter() - t)
    return times


def _peak(device: str, use_bf16: bool,
          peak_tflops: float | None) -> tuple[str, float | None, str | None]:
    """(device name, peak FLOP/s or None, where the peak comes from)."""
    if device.startswith("cuda"):
        name = torch.cuda.get_device_name()
        sheet = gpu_peak_tflops(name)
        peak = peak_tflops * 1e12 if peak_tflops else (sheet * 1e12 if sheet and use_bf16 else None)
        return name, peak, "given" if peak_tflops else ("datasheet bf16 dense" if peak else None)
    threads = torch.get_num_threads()
    name = f"{device} ({counted(threads, 'thread')})"
    if peak_tflops:
        return name, peak_tflops * 1e12, "given"
    if device == "cpu" and not use_bf16:
        return name, measure_matmul_peak("cpu"), "measured fp32 1024x1024 matmul"
    return name, None, None


def bench(*, settings: BenchConfig | None = None, memory: bool = True, **keywords) -> dict:
    """Interleaved timing of dense vs masked training steps; see the module docstring.

    ``settings`` (what the CLI passes), or keywords named like its fields:
    ``bench(preset="nano", sparsity=0.9, steps=10)``. ``memory``: the peak RSS of a fresh process
    per arm (CPU; a few seconds more).
    """
    (s,) = from_keywords(keywords, "bench", bench=(BenchConfig, settings))
    check_sparsity(s.sparsity)  # the other bounds are BenchConfig'
    device = pick_device(s.device)
    use_bf16, autocast = step_autocast(device, s.dtype)
    arms, mem = _build_arms(s, device, autocast)
    times = time_steps(arms, s.steps, device, autocast)
    if memory and device == "cpu":
        mem = {k: _peak_rss_mb_of_arm(s.preset, 0.0 if k == "dense" else s.sparsity, s.batch_size,
                                      s.block_size,
                                      min(5, s.steps)) for k in arms}
    name, peak, peak_source = _peak(device, use_bf16, s.peak_tflops)
    return _result(s, arms, times, mem, name, "bf16" if use_bf16 else "fp32", peak, peak_source,
                   cuda=device.startswith("cuda"))


def _result(s: BenchConfig, arms, times, mem, name, dtype, peak, peak_source, cuda) -> dict:
    cfg = arms["dense"].model.config
    T = cfg.block_size
    report = flop_report(cfg, sparsity=s.sparsity, seq_len=T)
    dense_ms = 1000 * statistics.median(times["dense"])
    sparse_ms = 1000 * statistics.median(times["sparse"])
    step_flops = report.train_dense * s.batch_size  # what the hardware executes, in both arms
    state = {k: training_state_bytes(a.model, a.optimizer) for k, a in arms.items()}
    result = {
        "preset": s.preset, "sparsity": s.sparsity, "batch_size": s.batch_size, "block_size": T,
        "device": name, "dtype": dtype, "compile": s.compile, "steps": s.steps,
        "params": arms["dense"].model.num_params(),
        "dense_step_ms": dense_ms, "sparse_step_ms": sparse_ms,
        "sparse_over_dense": sparse_ms / dense_ms,
        "tokens_per_s": s.batch_size * T / (dense_ms / 1000),
        "sparse_tokens_per_s": s.batch_size * T / (sparse_ms / 1000),
        "train_flops_per_step": step_flops,
        "theoretical_flop_reduction": report.reduction,
        "peak_flops": peak, "peak_source": peak_source,
        "mfu": step_flops / (dense_ms / 1000) / peak if peak else None,
        "sparse_mfu": step_flops / (sparse_ms / 1000) / peak if peak else None,
        "peak_memory_mb": mem or None,
        "memory_kind": "cuda max_memory_allocated" if cuda else "peak RSS of a fresh process",
        "mask_bytes": sum(m.numel() * m.element_size()
                          for _, _, m in masked_parameters(arms["sparse"].model)),
        "state_bytes": state,
        "note": HONESTY_NOTE
        + ("" if peak else " MFU: unknown peak for this device (pass --peak_tflops)."),
    }
    if mem and "dense" in mem and "sparse" in mem:
        result["memory_ratio"] = mem["sparse"] / mem["dense"]
    result["state_ratio"] = state["sparse"]["total"] / state["dense"]["total"]
    return result

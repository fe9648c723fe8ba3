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

from .errors import MiniSPDFError
from .flops import HONESTY_NOTE, flop_report
from .model import GPT, preset_config
from .sparsity import check_sparsity, masked_parameters, sparsify
from .train import TrainConfig, autocast_for, finish_step, forward_backward, make_optimizer, pick_device

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
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best


class _Arm:
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
        "gradients": sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad),
        "optimizer": sum(t.numel() * t.element_size() for s in optimizer.state.values()
                         for t in s.values() if torch.is_tensor(t)),
    }
    out["total"] = sum(out.values())
    return out


def _sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _peak_rss_mb_of_arm(preset, sparsity, batch_size, block_size, steps) -> float:
    """Peak RSS of a fresh process that runs ``steps`` training steps of one arm (CPU only)."""
    code = (
        "import json,resource,torch;from minispdf.bench import _Arm;from contextlib import nullcontext as n\n"
        f"a=_Arm({preset!r},{sparsity},{batch_size},{block_size!r},'cpu',False)\n"
        f"[a.step(n) for _ in range({steps})]\n"
        "print(json.dumps(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [_package_root(), os.environ.get("PYTHONPATH")])))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1]) / 1024  # ru_maxrss is in KiB on Linux


def _package_root() -> str:
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def step_autocast(device: str, dtype: str = "auto"):
    """(use_bf16, autocast context factory) for --dtype auto (bf16 on CUDA, fp32 elsewhere) | fp32 | bf16."""
    if dtype not in ("auto", "fp32", "bf16"):
        raise MiniSPDFError(f"--dtype {dtype!r}: choose auto, fp32 or bf16")
    use_bf16 = dtype == "bf16" or (dtype == "auto" and device.startswith("cuda"))
    autocast = (lambda: torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16)) if use_bf16 \
        else autocast_for("cpu")
    return use_bf16, autocast


def bench(preset: str = "tiny", sparsity: float = 0.75, batch_size: int = 12, block_size: int | None = None,
          steps: int = 30, warmup: int = 5, device: str = "auto", compile: bool = False,
          dtype: str = "auto", peak_tflops: float | None = None, memory: bool = True) -> dict:
    """Interleaved timing of dense vs masked training steps; see the module docstring."""
    check_sparsity(sparsity)
    if steps < 1 or warmup < 0 or batch_size < 1:
        raise MiniSPDFError("--steps and --batch_size must be >= 1 and --warmup >= 0")
    if peak_tflops is not None and not (0 < peak_tflops < float("inf")):
        raise MiniSPDFError(f"--peak_tflops {peak_tflops}: give the device's peak as a positive number of TFLOP/s")
    device = pick_device(device)
    use_bf16, autocast = step_autocast(device, dtype)
    arms, mem = {}, {}
    for name, s in (("dense", 0.0), ("sparse", sparsity)):  # build and warm up (and compile) each arm
        if device.startswith("cuda"):
            # this arm's own peak: what is allocated before it (the other arm) is not its cost
            _sync(device)
            before = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
        arm = arms[name] = _Arm(preset, s, batch_size, block_size, device, compile)
        for _ in range(max(1, warmup)):
            arm.step(autocast)
        _sync(device)
        if device.startswith("cuda"):
            mem[name] = (torch.cuda.max_memory_allocated() - before) / 2**20
    times = {k: [] for k in arms}
    for _ in range(steps):
        for name, arm in arms.items():
            _sync(device)
            t = time.perf_counter()
            arm.step(autocast)
            _sync(device)
            times[name].append(time.perf_counter() - t)

    cfg = arms["dense"].model.config
    T = cfg.block_size
    report = flop_report(cfg, sparsity=sparsity, seq_len=T)
    dense_ms = 1000 * statistics.median(times["dense"])
    sparse_ms = 1000 * statistics.median(times["sparse"])
    step_flops = report.train_dense * batch_size  # what the hardware executes, in both arms

    if device.startswith("cuda"):
        name = torch.cuda.get_device_name()
        peak = peak_tflops * 1e12 if peak_tflops else (
            gpu_peak_tflops(name) * 1e12 if gpu_peak_tflops(name) and use_bf16 else None)
        peak_source = "given" if peak_tflops else ("datasheet bf16 dense" if peak else None)
    else:
        name = f"{device} ({torch.get_num_threads()} threads)"
        if peak_tflops:
            peak, peak_source = peak_tflops * 1e12, "given"
        elif device == "cpu" and not use_bf16:
            peak, peak_source = measure_matmul_peak("cpu"), "measured fp32 1024x1024 matmul"
        else:
            peak, peak_source = None, None

    if not device.startswith("cuda") and memory and device == "cpu":
        mem_steps = min(5, steps)
        mem = {k: _peak_rss_mb_of_arm(preset, 0.0 if k == "dense" else sparsity, batch_size, block_size, mem_steps)
               for k in arms}
    result = {
        "preset": preset, "sparsity": sparsity, "batch_size": batch_size, "block_size": T,
        "device": name, "dtype": "bf16" if use_bf16 else "fp32", "compile": compile, "steps": steps,
        "params": arms["dense"].model.num_params(),
        "dense_step_ms": dense_ms, "sparse_step_ms": sparse_ms, "sparse_over_dense": sparse_ms / dense_ms,
        "tokens_per_s": batch_size * T / (dense_ms / 1000),
        "sparse_tokens_per_s": batch_size * T / (sparse_ms / 1000),
        "train_flops_per_step": step_flops,
        "theoretical_flop_reduction": report.reduction,
        "peak_flops": peak, "peak_source": peak_source,
        "mfu": step_flops / (dense_ms / 1000) / peak if peak else None,
        "sparse_mfu": step_flops / (sparse_ms / 1000) / peak if peak else None,
        "peak_memory_mb": mem or None,
        "memory_kind": "cuda max_memory_allocated" if device.startswith("cuda") else "peak RSS of a fresh process",
        "mask_bytes": sum(m.numel() * m.element_size() for _, _, m in masked_parameters(arms["sparse"].model)),
        "state_bytes": {k: training_state_bytes(a.model, a.optimizer) for k, a in arms.items()},
        "note": HONESTY_NOTE + ("" if peak else " MFU: unknown peak for this device (pass --peak_tflops)."),
    }
    if mem and "dense" in mem and "sparse" in mem:
        result["memory_ratio"] = mem["sparse"] / mem["dense"]
    result["state_ratio"] = result["state_bytes"]["sparse"]["total"] / result["state_bytes"]["dense"]["total"]
    return result


def format_bench(r: dict) -> str:
    lines = [
        f"bench {r['preset']} ({r['params']:,} params), batch {r['batch_size']} x {r['block_size']}, "
        f"{r['device']}, {r['dtype']}{', compiled' if r['compile'] else ''}",
        f"  dense step        {r['dense_step_ms']:8.2f} ms   {r['tokens_per_s']:,.0f} tokens/s",
        f"  {r['sparsity']:.0%} masked step  {r['sparse_step_ms']:8.2f} ms   "
        f"({r['sparse_over_dense']:.3f}x dense)",
        f"  theoretical FLOP reduction at {r['sparsity']:.0%}: {r['theoretical_flop_reduction']:.2f}x",
    ]
    if r["mfu"] is not None:
        lines.append(f"  MFU {r['mfu']:.1%} dense, {r['sparse_mfu']:.1%} masked "
                     f"(peak {r['peak_flops'] / 1e9:,.0f} GFLOP/s, {r['peak_source']})")
    else:
        lines.append("  MFU: not reported (unknown peak for this device; pass --peak_tflops)")
    if r["peak_memory_mb"]:
        m = r["peak_memory_mb"]
        lines.append(f"  peak memory ({r['memory_kind']}): dense {m['dense']:.0f} MB, masked {m['sparse']:.0f} MB; "
                     f"masks {r['mask_bytes'] / 2**20:.2f} MB")
    s = r["state_bytes"]
    lines.append(f"  training state (weights, masks, gradients, AdamW): dense {s['dense']['total'] / 2**20:.2f} MB, "
                 f"masked {s['sparse']['total'] / 2**20:.2f} MB ({r['state_ratio']:.3f}x)")
    lines.append("  " + r["note"])
    return "\n".join(lines)

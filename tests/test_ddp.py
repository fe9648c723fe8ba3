"""Data-parallel sparse training on CPU: 2 gloo ranks must end with identical masks and weights."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import socket
import subprocess
import sys
import textwrap

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

WORKER = textwrap.dedent('''
    import os, sys
    os.environ["HF_HUB_OFFLINE"] = "1"
    import torch
    import torch.distributed as dist
    torch.set_num_threads(1)
    from minispdf.model import GPT, preset_config
    from minispdf.sparsity import sparsify
    from minispdf.train import TrainConfig, train

    class RandomBatches:
        def get_batch(self, split, generator, device="cpu"):
            seq = torch.randint(0, 257, (4, 33), generator=generator)
            return seq[:, :-1].contiguous(), seq[:, 1:].contiguous(), None

    out = sys.argv[1]
    rank = int(os.environ["RANK"])
    torch.manual_seed(0)
    model = GPT(preset_config("nano"))
    sparsify(model, 0.75, seed=0)  # before train(): no process group yet, no broadcast
    torch.save(model.state_dict(), os.path.join(out, f"init{rank}.pt"))
    cfg = TrainConfig(max_steps=5, batch_size=4, lr=1e-2, warmup_steps=1, eval_interval=0, eval_iters=1,
                      device="cpu", progress=False, seed=3)
    res = train(model, RandomBatches(), cfg, out_dir=os.path.join(out, "run"))
    assert res["world_size"] == 2, res["world_size"]
    torch.save(model.state_dict(), os.path.join(out, f"rank{rank}.pt"))
    dist.barrier()
    dist.destroy_process_group()
''')


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_two_ranks(worker: str, tmp_path, *args: str) -> None:
    """Run the script text ``worker`` as two gloo ranks (argv: tmp_path, *args); both must
    succeed."""
    script = tmp_path / "worker.py"
    script.write_text(worker)
    port = free_port()
    procs = []
    for rank in range(2):
        env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
        env.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", LOCAL_WORLD_SIZE="2",
                   MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), HF_HUB_OFFLINE="1",
                   OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="",
                   PYTHONPATH=ROOT + os.pathsep + env.get("PYTHONPATH", ""))
        # cwd is the repo root, where mutmut (which runs this test on mutated code) finds its config
        procs.append(subprocess.Popen([sys.executable, str(script), str(tmp_path), *args], env=env,
                                      cwd=ROOT,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outputs = []
    try:
        for p in procs:
            outputs.append(p.communicate(timeout=90)[0])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for rank, (p, out) in enumerate(zip(procs, outputs)):
        assert p.returncode == 0, f"rank {rank} failed:\n{out[-3000:]}"


@pytest.mark.slow
def test_two_rank_gloo_training_keeps_ranks_identical(tmp_path):
    run_two_ranks(WORKER, tmp_path)
    init = torch.load(tmp_path / "init0.pt", weights_only=True)
    init1 = torch.load(tmp_path / "init1.pt", weights_only=True)
    # each rank's own sparsify output, saved before DDP's first broadcast could copy rank 0's
    # buffers
    own_masks = [k for k in init if k.endswith("_mask")]
    assert len(own_masks) == 8 and init.keys() == init1.keys()
    for k in init:
        assert torch.equal(init[k], init1[k]), k
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert r0.keys() == r1.keys()
    mask_keys = [k for k in r0 if k.endswith("_mask")]
    assert len(mask_keys) == 8
    for k in r0:
        assert torch.equal(r0[k], r1[k]), k
    for k in mask_keys:
        w = r0[k[: -len("_mask")]]
        m = r0[k]
        assert m.dtype == torch.bool
        assert int((~m).sum()) == round(0.75 * m.numel())
        assert torch.all(w[~m] == 0), k
        assert torch.equal(m, init[k])  # the mask is fixed during training
    trained = [k for k in r0 if not k.endswith("_mask") and not torch.equal(r0[k], init[k])]
    assert trained, "no weight changed: training did not run"
    # rank 0 wrote the run folder: checkpoint at step 5 and a log
    ckpt = torch.load(tmp_path / "run" / "ckpt.pt", weights_only=True)
    assert ckpt["step"] == 5
    assert len(ckpt["rng"]["data"]) == 2  # both ranks' data positions saved
    # ranks draw different data
    assert not torch.equal(ckpt["rng"]["data"][0], ckpt["rng"]["data"][1])
    for k in r0:
        assert torch.equal(ckpt["model"][k], r0[k]), k
    assert (tmp_path / "run" / "log.jsonl").exists()

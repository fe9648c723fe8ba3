"""The command line: outputs, --json, and one-line errors (exit 2, no traceback) for bad input."""

import json
import os
import re
import subprocess
import sys

import pytest
import torch

from minispdf.cli import main
from minispdf.errors import MiniSPDFError

os.environ["HF_HUB_OFFLINE"] = "1"


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_flops_json_reproduces_headline(capsys):
    code, out, _ = run(capsys, "flops", "--preset", "gpt3-xl", "--sparsity", "0.75", "--json")
    assert code == 0
    d = json.loads(out)
    assert round(d["reduction"], 2) == 2.49
    assert set(d["components"]) >= {"qkv", "attn_out", "mlp", "logits", "attn_scores"}
    assert d["train_dense"] == 3 * d["forward_dense"]


def test_flops_table(capsys):
    code, out, _ = run(capsys, "flops", "--table", "--json")
    rows = json.loads(out)["rows"]
    assert {(r["preset"], r["sparsity"]) for r in rows} >= {("gpt2", 0.9), ("gpt3-xl", 0.5)}


@pytest.mark.parametrize("argv, needle", [
    (["pretrain", "--sparsity", "1.0"], "sparsity=1.0 must be in [0, 1)"),
    (["pretrain", "--sparsity", "-0.1"], "sparsity=-0.1 must be in [0, 1)"),
    (["pretrain", "--no_such_key", "3"], "unknown setting --no_such_key"),
    (["pretrain", "--max_steps", "ten"], "expects an integer"),
    (["pretrain", "--lr", "fast"], "expects a number"),
    (["pretrain", "--data", "/no/such/file.txt"], "file.txt"),
    (["pretrain", "--preset", "gpt5"], "unknown preset"),
    (["pretrain", "--method", "lottery"], "unknown mask method"),
    (["pretrain", "--config", "/no/such/config.json"], "does not exist"),
    (["sample", "--ckpt", "/no/such/run"], "no checkpoint"),
    (["finetune", "--init_from", "/no/such/run", "--task", "builtin"], "no checkpoint"),
    (["finetune", "--task", "nosuchtask"], "unknown task"),
    (["finetune", "--task", "e2e"], "HF_HUB_OFFLINE"),
    (["pretrain", "--data", "tinystories"], "offline"),
    (["nosuchcommand"], "unknown command"),
    (["pretrain", "--include", "("], "not a valid regular expression"),
    (["pretrain", "--sparsity", "0.5", "--include", "no_such_param"], "no parameter name matches"),
    (["pretrain", "--beta1", "1.0"], "beta1=1.0 must be in [0, 1)"),
    (["pretrain", "--beta2", "-0.1"], "beta2=-0.1 must be in [0, 1)"),
    (["pretrain", "--eps", "0"], "eps=0.0 must be a positive number"),
    (["pretrain", "--weight_decay", "-1"], "weight_decay=-1.0 must be a number >= 0"),
    (["pretrain", "--grad_clip", "nan"], "grad_clip=nan"),
    (["pretrain", "--lr", "inf"], "lr=inf must be a positive number"),
    (["pretrain", "--min_lr_ratio", "2"], "min_lr_ratio=2.0 must be between 0 and 1"),
    (["pretrain", "--max_chars", "0"], "max_chars=0"),
    (["pretrain", "--out", "/proc/minispdf-run"], "cannot make the folder /proc/minispdf-run"),
    (["demo", "--quick", "--out", "/proc/minispdf-run"],
     "cannot make the folder /proc/minispdf-run"),
    (["reproduce", "--grid", "smoke", "--out", "/proc/minispdf-run"], "cannot make the folder"),
    (["sample", "--ckpt", "/no/such/run", "--temperature", "nan"], "temperature=nan"),
    (["sample", "--ckpt", "/no/such/run", "--top_k", "0"], "top_k=0"),
    (["sample", "--ckpt", "/no/such/run", "--num_samples", "0"], "num_samples=0"),
    (["bench", "--block_size", "0"], "block_size=0 must be a positive integer"),
    (["bench", "--peak_tflops", "-1"], "peak_tflops=-1.0 must be a positive number"),
    (["pretrain", "--init", "gpt2", "--preset", "tiny"], "--init gpt2 needs --preset gpt2"),
    (["prepare", "--data", "nosuchcorpus"], "unknown data source 'nosuchcorpus'"),
    (["prepare", "--data", "tinystories"], "HF_HUB_OFFLINE"),
    (["prepare", "--tokenizer", "bpe"], "unknown tokenizer 'bpe'"),
    (["prepare", "--max_chars", "-3"], "max_chars=-3"),
    (["prepare", "--data", "builtin", "--task", "builtin"], "not both"),
    (["prepare", "--task", "webnlg"], "webnlg:PATH"),
])
def test_bad_input_is_one_line_error(capsys, tmp_path, monkeypatch, argv, needle):
    monkeypatch.chdir(tmp_path)
    code, _, err = run(capsys, *argv)
    assert code == 2
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert needle.lower() in err.lower(), err
    assert not (tmp_path / "runs").exists()


def test_flops_sums_a_pretraining_run_with_pretrains_flags(capsys):
    from minispdf.flops import pretraining_flops
    from minispdf.model import preset_config
    from minispdf.schedules import SparsityConfig

    code, out, err = run(capsys, "flops", "--preset", "nano", "--sparsity", "0.75",
                         "--schedule", "rigl",
                         "--update_interval", "10", "--max_steps", "100", "--batch_size", "8",
                         "--json")
    assert code == 0, err
    schedule = SparsityConfig(0.75, schedule="rigl", update_interval=10).make_schedule(100)
    expected = pretraining_flops(schedule, preset_config("nano"), 8)
    assert json.loads(out)["run"] == pytest.approx(expected, rel=1e-12)
    assert expected["flops_dense"] / expected["flops"] == pytest.approx(expected["ratio"])
    code, _, err = run(capsys, "flops", "--max_steps", "0")
    assert code == 2 and "max_steps=0 must be between 1 and 1000000" in err


def test_config_file_and_overrides(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.json").write_text(json.dumps({"preset": "nano", "max_steps": 3, "block_size": 32,
                                                 "batch_size": 2, "eval_iters": 1,
                                                 "sparsity": 0.5}))
    code, out, err = run(capsys, "pretrain", "--config", "c.json", "--max_steps", "2", "--out", "r",
                         "--json")
    assert code == 0, err
    d = json.loads(out)
    assert d["step"] == 2 and d["sparsity"] == 0.5
    (tmp_path / "bad.json").write_text(json.dumps({"max_steps": "many"}))
    code, _, err = run(capsys, "pretrain", "--config", "bad.json")
    assert code == 2 and "expects an integer" in err
    (tmp_path / "unknown.json").write_text(json.dumps({"colour": "red"}))
    code, _, err = run(capsys, "pretrain", "--config", "unknown.json")
    assert code == 2 and "unknown setting 'colour'" in err


def test_pretrain_run_folder_resume_sample_and_no_clobber(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    base = ["--preset", "nano", "--block_size", "32", "--batch_size", "2", "--eval_iters", "1",
            "--eval_interval", "2", "--sparsity", "0.75", "--max_steps", "6"]
    code, out, err = run(capsys, "pretrain", *base, "--stop_after", "3", "--out", "run", "--json")
    assert code == 0, err
    assert json.loads(out)["step"] == 3
    assert (tmp_path / "run" / "ckpt.pt").exists() and (tmp_path / "run" / "log.jsonl").exists()
    # a second pretrain into the same folder refuses instead of destroying it
    before = (tmp_path / "run" / "ckpt.pt").read_bytes()
    code, _, err = run(capsys, "pretrain", *base, "--out", "run")
    assert code == 2 and "--resume" in err
    assert (tmp_path / "run" / "ckpt.pt").read_bytes() == before
    code, out, err = run(capsys, "pretrain", *base, "--out", "run", "--resume", "--json")
    assert code == 0, err
    assert json.loads(out)["step"] == 6
    records = [json.loads(line)
               for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in records if "loss" in r]
    assert steps == [1, 2, 3, 4, 5, 6]
    assert all({"step", "loss", "flops"} <= set(r) for r in records if "loss" in r)
    code, out, err = run(capsys, "sample", "--ckpt", "run", "--prompt", "The",
                         "--max_new_tokens", "5", "--json")
    assert code == 0, err
    # the sample is this checkpoint's own continuation of the prompt, drawn with --seed (default 0)
    import torch

    from minispdf.checkpoint import load_checkpoint
    from minispdf.data import get_tokenizer

    model, _ = load_checkpoint("run")
    tok = get_tokenizer("char")
    ids = tok.encode("The")
    y = model.eval().generate(torch.tensor([ids]), 5, temperature=0.8, top_k=50, eot_id=tok.eot_id,
                              generator=torch.Generator().manual_seed(0))
    assert json.loads(out) == {"prompt": "The", "samples": [tok.decode(y[0, len(ids):].tolist())]}
    code, _, err = run(capsys, "sample", "--ckpt", "run", "--prompt", "x" * 40)
    assert code == 2 and "context" in err


def test_corrupt_checkpoint(capsys, tmp_path):
    bad = tmp_path / "ckpt.pt"
    bad.write_bytes(b"not a checkpoint at all")
    code, _, err = run(capsys, "sample", "--ckpt", str(bad))
    assert code == 2 and "corrupt" in err


def test_bench_json(capsys):
    code, out, err = run(capsys, "bench", "--preset", "nano", "--steps", "2", "--warmup", "1",
                         "--json")
    assert code == 0, err
    d = json.loads(out)
    for key in ("dense_step_ms", "sparse_step_ms", "tokens_per_s", "mfu", "peak_memory_mb"):
        assert key in d
    assert d["dense_step_ms"] > 0 and d["sparse_step_ms"] > 0
    assert d["mask_bytes"] == 2 * 12 * 64 * 64  # one byte per sparsified weight of nano
    dense, sparse = d["state_bytes"]["dense"], d["state_bytes"]["sparse"]
    # fp32, no second copy (no weight_orig)
    assert dense["parameters"] == sparse["parameters"] == 4 * d["params"]
    assert dense["gradients"] == dense["parameters"]
    # two moments + step counters
    assert 2 * dense["parameters"] <= dense["optimizer"] <= 2 * dense["parameters"] + 1024
    # the masks are the only extra
    assert dense["buffers"] == 0 and sparse["buffers"] == d["mask_bytes"]
    assert sparse["total"] == dense["total"] + d["mask_bytes"]
    assert d["state_ratio"] < 1.1


def test_vs_nanogpt_runs_against_a_model_py_with_nanogpts_interface(capsys, tmp_path):
    # a stand-in for nanoGPT's model.py (GPT, GPTConfig, configure_optimizers); no speed is asserted
    stand_in = tmp_path / "model.py"
    stand_in.write_text(
        "import torch\nfrom minispdf.model import GPT as _GPT, GPTConfig\n"
        "class GPT(_GPT):\n"
        "    def configure_optimizers(self, weight_decay, learning_rate, betas, device_type):\n"
        "        return torch.optim.AdamW(self.parameters(), lr=learning_rate, betas=betas, "
        "weight_decay=weight_decay)\n"
    )
    from minispdf.bench.vs_nanogpt import main as vs_main
    vs_main([str(stand_in), "--preset", "nano", "--rounds", "1", "--steps", "1", "--warmup", "0"])
    out = capsys.readouterr().out
    assert "first-step losses identical" in out and "kit/nanoGPT: median" in out


def test_module_entry_point_has_no_traceback():
    proc = subprocess.run([sys.executable, "-m", "minispdf", "pretrain", "--sparsity", "2"],
                          capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and proc.stderr.startswith("error:")


def _nano_run(capsys, folder, *extra):
    code, out, err = run(capsys, "pretrain", "--preset", "nano", "--block_size", "32",
                         "--batch_size", "2",
                         "--eval_iters", "1", "--max_steps", "2", "--out", str(folder),
                         "--json", *extra)
    assert code == 0, err
    return json.loads(out)


def test_out_that_cannot_be_a_folder_is_refused_and_left_alone(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("keep me")
    for out, needle in (("afile", "is a file, not a folder"),
                        ("afile/sub", "is a file, so the folder cannot")):
        code, _, err = run(capsys, "pretrain", "--preset", "nano", "--max_steps", "1", "--out", out)
        assert code == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
        assert needle in err, err
    assert (tmp_path / "afile").read_text() == "keep me"


def test_bad_settings_with_overwrite_keep_the_old_run(capsys, tmp_path, monkeypatch):
    """Settings are checked before --overwrite clears a run folder: a typo destroys nothing."""
    monkeypatch.chdir(tmp_path)
    _nano_run(capsys, "run")
    before = (tmp_path / "run" / "ckpt.pt").read_bytes()
    code, _, err = run(capsys, "pretrain", "--preset", "nano", "--sparsity", "0.5",
                       "--include", "nomatch$",
                       "--out", "run", "--overwrite")
    assert code == 2 and "no parameter name matches" in err
    assert (tmp_path / "run" / "ckpt.pt").read_bytes() == before


def test_resume_refuses_other_sparsity(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _nano_run(capsys, "run", "--sparsity", "0.75", "--stop_after", "1")
    code, _, err = run(capsys, "pretrain", "--preset", "nano", "--block_size", "32",
                       "--max_steps", "2",
                       "--out", "run", "--resume")  # sparsity left at its default, 0
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "--sparsity 0.0 conflicts with the run in run (sparsity 0.75)" in err
    d = _nano_run(capsys, "run", "--sparsity", "0.75", "--resume")
    assert d["step"] == 2 and abs(d["sparsity"] - 0.75) < 0.01


@pytest.mark.parametrize("drop, needle", [
    ("model_config", "its 'model_config' entry is missing"),
    ("optimizer", "its 'optimizer' entry is missing"),
    ("rng", "its 'rng' entry is missing"),
])
def test_checkpoint_missing_entries(capsys, tmp_path, monkeypatch, drop, needle):
    import torch

    monkeypatch.chdir(tmp_path)
    _nano_run(capsys, "run", "--stop_after", "1")
    ckpt = torch.load(tmp_path / "run" / "ckpt.pt", weights_only=True)
    del ckpt[drop]
    torch.save(ckpt, tmp_path / "run" / "ckpt.pt")
    # sample needs only the model; resume needs the whole training state
    code, _, err = run(capsys, "sample", "--ckpt", "run", "--max_new_tokens", "2")
    if drop == "model_config":
        assert code == 2 and needle in err, err
    else:
        assert code == 0, err
    code, _, err = run(capsys, "pretrain", "--preset", "nano", "--block_size", "32",
                       "--batch_size", "2",
                       "--eval_iters", "1", "--max_steps", "2", "--out", "run", "--resume")
    assert code == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert needle in err and "damaged" in err, err


def test_finetune_reports_its_mode_and_checks_the_preset(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _nano_run(capsys, "pre", "--sparsity", "0.75")
    ft = ["finetune", "--init_from", "pre", "--data", "builtin", "--max_steps", "1",
          "--batch_size", "2",
          "--eval_iters", "1"]
    code, out, err = run(capsys, *ft)
    assert code == 0, err
    assert out.startswith("fine-tuned (dense) 1 step:"), out
    code, out, err = run(capsys, *ft, "--keep_masks", "--json")
    assert code == 0, err
    assert json.loads(out)["mode"] == "sparse (SPSF)"
    # the checkpoint's own preset: fine
    code, out, err = run(capsys, *ft, "--preset", "nano", "--json")
    assert code == 0, err
    code, _, err = run(capsys, *ft, "--preset", "tiny")
    assert code == 2 and "from another architecture" in err, err
    code, _, err = run(capsys, "finetune", "--init_from", "pre", "--task", "builtin",
                       "--max_steps", "1")
    assert (code == 2
            and "the context of pre is fixed: pre-train with a larger --block_size" in err), err
    code, _, err = run(capsys, *ft, "--out", "ft")
    assert code == 0, err
    code, _, err = run(capsys, *ft, "--out", "ft", "--resume", "--keep_masks")
    assert (code == 2 and "--keep_masks conflicts with the run in ft (keep_masks False): pass "
                          "--no-keep_masks" in err), err


def test_assign_check_json(capsys):
    from minispdf.assignments import main as assign_main

    code = assign_main(["check", "--json"])
    d = json.loads(capsys.readouterr().out)
    assert d["in_sync"] is True and d["problems"] == [] and code == 0


def test_only_rank_zero_prints_under_torchrun(capsys, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    code, out, _ = run(capsys, "flops", "--preset", "gpt2", "--json")
    assert code == 0 and out == ""
    monkeypatch.setenv("RANK", "0")
    code, out, _ = run(capsys, "flops", "--preset", "gpt2", "--json")
    assert code == 0 and json.loads(out)["preset"] == "gpt2"


def test_failed_overwrite_puts_the_old_run_back(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _nano_run(capsys, "run")
    before = {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir()}
    code, _, err = run(capsys, "pretrain", "--preset", "nano", "--block_size", "32",
                       "--batch_size", "2",
                       "--eval_iters", "1", "--max_steps", "3", "--lr", "1e30", "--out", "run",
                       "--overwrite",
                       "--progress")
    assert code == 2 and "loss became nan" in err, err
    # not after a bar
    assert [line for line in err.splitlines() if "error:" in line][0].startswith("error:")
    assert {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir()} == before
    assert sorted(os.listdir(tmp_path)) == ["data", "run"]  # nothing left beside it
    code, _, err = run(capsys, "pretrain", "--preset", "nano", "--block_size", "32",
                       "--batch_size", "2",
                       "--eval_iters", "1", "--max_steps", "3", "--lr", "1e30", "--out", "new")
    # a failed new run leaves no half-made folder
    assert code == 2 and not (tmp_path / "new").exists()
    _nano_run(capsys, "run", "--overwrite", "--seed", "5")  # a run that finishes does replace it
    assert (tmp_path / "run" / "ckpt.pt").read_bytes() != before["ckpt.pt"]
    assert sorted(os.listdir(tmp_path)) == ["data", "run"]


def test_finetune_into_its_own_checkpoint_folder_and_resuming_a_finished_run_are_refused(capsys,
        tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _nano_run(capsys, "pre")
    before = (tmp_path / "pre" / "ckpt.pt").read_bytes()
    code, _, err = run(capsys, "finetune", "--init_from", "pre", "--data", "builtin",
                       "--max_steps", "1",
                       "--out", "pre", "--overwrite")
    assert code == 2 and "is the folder of --init_from" in err, err
    code, _, err = run(capsys, "pretrain", "--preset", "nano", "--block_size", "32",
                       "--max_steps", "2",
                       "--out", "pre", "--resume")
    assert code == 2 and "already reached step 2 of max_steps 2" in err, err
    code, _, err = run(capsys, "pretrain", "--preset", "nano", "--block_size", "48",
                       "--max_steps", "3",
                       "--out", "pre", "--resume")
    assert code == 2 and "pass --block_size 32" in err, err
    assert (tmp_path / "pre" / "ckpt.pt").read_bytes() == before


@pytest.mark.parametrize("argv, config, needle", [
    (["pretrain", "--max_steps", "inf"], None, "expects an integer"),
    (["pretrain", "--seed", "1e30"], None, "out of range"),
    (["flops", "--seq_len", "1e400"], None, "expects an integer"),
    (["pretrain"], {"max_steps": 1e400}, "expects an integer"),
    (["pretrain", "--sparsity", "0.5"], {"mask_seed": None}, "'mask_seed' is null"),
    (["pretrain"], {"data": None}, "'data' is null"),
    (["bench", "--device", "tpu"], None, "device='tpu'"),
    (["demo", "--block_size", "64"], None, "unknown setting --block_size"),
    (["demo", "--pretrain_steps", "0"], None, "pretrain_steps=0 must be between 1 and 1000000"),
    (["demo", "--eval_inputs", "0"], None, "eval_inputs=0 must be a positive integer"),
    (["reproduce", "--seeds", "1e9", "--dry-run"], None,
     "--seeds 1000000000 must be a positive integer up to 100"),
    (["assign", "bogus"], None, "invalid choice: 'bogus'"),
])
def test_more_bad_values_are_one_line_errors(capsys, tmp_path, monkeypatch, argv, config, needle):
    monkeypatch.chdir(tmp_path)
    if config is not None:
        (tmp_path / "c.json").write_text(json.dumps(config))
        argv = argv + ["--config", "c.json"]
    code, _, err = run(capsys, *argv)
    assert code == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert needle in err, err


def test_sample_tiny_temperature_and_damaged_tokenizer(capsys, tmp_path, monkeypatch):
    import torch

    monkeypatch.chdir(tmp_path)
    _nano_run(capsys, "run")
    code, out, err = run(capsys, "sample", "--ckpt", "run", "--temperature", "1e-300",
                         "--max_new_tokens", "3",
                         "--prompt", "The", "--json")
    assert code == 0, err  # as greedy, not a NaN crash
    ckpt = torch.load(tmp_path / "run" / "ckpt.pt", weights_only=True)
    for key, value, needle in (("tokenizer", "gpt2",
                                "use the tokenizer the model was trained with"),
                               ("model_config", {**ckpt["model_config"], "dropout": "x"},
                                "dropout='x'")):
        torch.save({**ckpt, key: value}, tmp_path / "bad.pt")
        code, _, err = run(capsys, "sample", "--ckpt", "bad.pt", "--max_new_tokens", "2")
        assert code == 2 and len(err.strip().splitlines()) == 1 and needle in err, err


def test_assign_grade_malformed_notebook(capsys, tmp_path):
    from minispdf.assignments import main as assign_main

    for name, text in (("broken.ipynb", "{"), ("list.ipynb", "[1, 2]")):
        (tmp_path / name).write_text(text)
        code = assign_main(["grade", str(tmp_path / name)])
        err = capsys.readouterr().err
        assert code == 2 and "is not a readable notebook" in err, err


def test_undecodable_prompt_bytes_do_not_crash(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _nano_run(capsys, "run")
    code, out, err = run(capsys, "sample", "--ckpt", "run", "--prompt", "caf\udcff",
                         "--max_new_tokens", "2", "--json")
    assert code == 0, err
    assert json.loads(out)["prompt"] == "caf\ufffd"


def test_prepare_prints_corpus_statistics(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("MINISPDF_DATA_DIR", str(tmp_path / "data"))
    text_file = tmp_path / "t.txt"
    text_file.write_text("to be or not to be\n" * 50, encoding="utf-8")
    code, out, _ = run(capsys, "prepare", "--data", str(text_file), "--json")
    assert code == 0
    st = json.loads(out)
    assert st["characters"] == 950 and st["tokens"] == {"train": 855, "val": 95}
    assert st["vocab_used"] == len(set("to be or not to be\n"))
    assert os.path.isfile(os.path.join(st["folder"], "meta.json"))
    assert st["folder"].startswith(str(tmp_path / "data"))

    code, out, _ = run(capsys, "prepare", "--data", str(text_file))
    assert code == 0
    assert "855 train + 95 val = 950" in out and f"{st['unigram_entropy']:.4f} nats/token" in out


def test_prepare_task_counts_splits(capsys):
    code, out, _ = run(capsys, "prepare", "--task", "builtin:easy", "--json")
    assert code == 0
    st = json.loads(out)["splits"]
    assert (st["train"]["inputs"], st["val"]["inputs"], st["test"]["inputs"]) == (2000, 200, 200)
    assert st["train"]["references"] == 2000  # easy: one fixed-template reference per input
    code, out, _ = run(capsys, "prepare", "--task", "builtin:easy")
    assert code == 0 and "2,000 inputs" in out


# ----------------------------------------------- the parser generated from the settings dataclasses


def test_help_is_argparse_generated_from_the_dataclasses(capsys):
    from dataclasses import fields

    from minispdf.cli import COMMANDS
    from minispdf.schedules import SparsityConfig
    from minispdf.spdf import FinetuneConfig, PretrainConfig, RunConfig
    from minispdf.train import TrainConfig

    code, out, _ = run(capsys, "pretrain", "--help")
    assert code == 0 and out.startswith("usage: minispdf pretrain") and "\noptions:\n" in out
    for cls in (PretrainConfig, SparsityConfig, TrainConfig, RunConfig):
        for f in fields(cls):
            # a switch: --[no-]name
            assert f"--{f.name} " in out or f"--[no-]{f.name} " in out, f.name
            # its help text, however wrapped
            assert f.metadata["help"][:20] in " ".join(out.split()), f.name
    assert "--n_layer N" in out and "--vocab_size" not in out  # the vocabulary is the tokenizer's
    assert "(default: None)" not in out and "one of nano, tiny, mini" in " ".join(out.split())
    code, out, _ = run(capsys, "finetune", "--help")
    assert "  --[no-]keep_masks " in out and "(default: --no-keep_masks)" in " ".join(out.split())
    assert "[--[no-]keep_masks]" in out  # the usage line, too
    assert {f.name for f in fields(FinetuneConfig)} | {"preset", "tokenizer"} <= {
        w.strip("[]").removeprefix("--").removeprefix("[no-]") for w in out.split()
        if w.startswith(("--", "[--"))}
    for name in COMMANDS:
        code, out, _ = run(capsys, name, "--help")
        assert code == 0 and out.startswith(f"usage: minispdf {name}"), name
    code, out, _ = run(capsys)
    assert code == 0 and all(name in out for name in [*COMMANDS, "assign"])
    code, out, _ = run(capsys, "assign", "--help")
    assert code == 0 and "student" in out and "grade" in out


def test_switches_spellings_and_config_files(tmp_path):
    from minispdf.cli import build_parser
    from minispdf.config import given, parse

    _, parsers = build_parser()
    ft, pre = parsers["finetune"], parsers["pretrain"]
    assert parse(ft, ["--keep_masks"]).keep_masks is True
    # last wins; - and _ alike
    assert parse(ft, ["--keep-masks", "--no_keep_masks"]).keep_masks is False
    assert parse(pre, ["--max-steps=7"]).max_steps == 7 and parse(pre, []).block_size is None
    assert (parse(ft, ["--keep_masks=false"]).keep_masks is False
            and parse(ft, ["--no-keep-masks=no"]).keep_masks is True)
    (tmp_path / "c.toml").write_text('max_steps = 3\nsparsity = 0.5\nprogress = false\n')
    args = parse(pre, ["--config", str(tmp_path / "c.toml"), "--max_steps", "2"])
    # the flag wins over the file
    assert (args.max_steps, args.sparsity, args.progress) == (2, 0.5, False)
    assert given(args) == {"config", "max_steps"}
    for argv, needle in ((["--progress", "false"],
                          "--progress is a switch and takes no value: write --progress "
                                                   "or --no-progress"),
                         (["--max", "3"], "unknown setting --max"),  # no abbreviations
                         (["--max_step", "3"], "did you mean --max_steps?")):
        with pytest.raises(MiniSPDFError, match=re.escape(needle)):
            parse(pre, argv)


@pytest.mark.parametrize("argv, needle", [
    (["pretrain", "--progress", "false"], "--progress is a switch"),
    (["pretrain", "--tokenizer", "bpe"], "unknown tokenizer 'bpe'"),
    (["evaluate", "--split", "dev"], "unknown split 'dev': choose one of train, val, test"),
    (["reproduce", "--grid", "huge"], "unknown grid 'huge'"),
    (["bench", "--kernels", "--steps", "3"], "unknown setting --steps with --kernels"),
    (["bench", "--repeats", "3"], "unknown setting --repeats without --kernels"),
    (["bench", "--compile=maybe"], "--compile expects true or false, got 'maybe'"),
    (["score"], "score needs a predictions file"),
    (["finetune", "--task", "builtin", "--vocab_size", "300"], "unknown setting --vocab_size"),
])
def test_generated_parser_errors_are_one_line(capsys, tmp_path, monkeypatch, argv, needle):
    monkeypatch.chdir(tmp_path)
    code, _, err = run(capsys, *argv)
    assert code == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert needle in err, err


def test_settings_json_is_a_config_file_that_repeats_the_run(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    first = _nano_run(capsys, "a", "--sparsity", "0.5", "--lr", "2e-3", "--no-bias")
    saved = json.loads((tmp_path / "a" / "settings.json").read_text())
    assert saved["sparsity"] == 0.5 and saved["bias"] is False and saved["block_size"] == 32
    # the run folder is not a setting of the run
    assert "out" not in saved and "resume" not in saved
    code, out, err = run(capsys, "pretrain", "--config", "a/settings.json", "--out", "b", "--json")
    assert code == 0, err
    again = json.loads(out)
    assert (again["train_loss"], again["val_loss"], again["flops"]) == (first["train_loss"],
                                                                        first["val_loss"],
                                                                        first["flops"])


@pytest.mark.parametrize("error, caught", [
    (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), True),  # by its type
    # no type on CPU
    (RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 8 bytes"),
     True),
    (MemoryError(), True),
    (RuntimeError("mat1 and mat2 shapes cannot be multiplied"), False),  # a bug stays a traceback
])
def test_out_of_memory_is_one_line_and_other_runtime_errors_are_not_hidden(capsys, monkeypatch,
                                                                           error, caught):
    import minispdf.flops

    def fail(*args, **kwargs):
        raise error

    # the command's work runs out of memory
    monkeypatch.setattr(minispdf.flops, "flop_report", fail)
    if not caught:
        with pytest.raises(RuntimeError, match="shapes"):
            main(["flops"])
        return
    assert main(["flops"]) == 2
    assert capsys.readouterr().err.startswith("error: out of memory: use smaller settings")

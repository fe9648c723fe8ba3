"""Checkpoint files and output folders: what a user sees when one is missing, damaged, foreign or
unwritable."""

import datetime
import os
import re
import tempfile

import pytest
import torch

from minispdf import checkpoint
from minispdf.checkpoint import (FORMAT, check_compatible, check_out_folder, load_checkpoint,
                                 model_from_checkpoint,
                                 read_checkpoint, require_keys, save_checkpoint)
from minispdf.errors import MiniSPDFError
from minispdf.model import GPT, preset_config

RERUN = "re-run the training that wrote it"


def nano_payload(**extra):
    torch.manual_seed(0)
    model = GPT(preset_config("nano"))
    return {"model": model.state_dict(), "model_config": model.config.to_dict(), **extra}


def error_text(call, *args, **kwargs):
    with pytest.raises(MiniSPDFError) as info:
        call(*args, **kwargs)
    return str(info.value)


# ---------------------------------------------------------------- check_out_folder


def test_out_folder_that_is_a_file_names_the_flag(tmp_path):
    path = tmp_path / "f"
    path.write_text("x")
    assert error_text(check_out_folder,
                      str(path)) == f"--out {path} is a file, not a folder: choose another --out"
    assert error_text(check_out_folder, str(path / "sub"), "--predictions") == (
        f"--predictions {path / 'sub'}: {path} is a file, so the folder cannot be made there: "
        "choose another --predictions")


def test_out_folder_several_levels_deep_is_accepted_and_nothing_is_made(tmp_path):
    deep = tmp_path / "a" / "b" / "c"
    check_out_folder(str(deep))  # the missing parents are walked up to tmp_path, which is writable
    assert os.listdir(tmp_path) == []
    (tmp_path / "run").mkdir()
    check_out_folder(str(tmp_path / "run"))
    assert os.listdir(tmp_path / "run") == []


def test_existing_out_folder_is_probed_itself_not_its_parent(tmp_path, monkeypatch):
    # a writable folder inside a read-only parent (a mount point, a shared volume) is a fine --out
    run = tmp_path / "run"
    run.mkdir()
    real_mkdtemp = tempfile.mkdtemp

    def read_only_parent(*args, dir=None, **kwargs):
        if os.path.abspath(dir) == str(tmp_path):
            raise OSError(30, "Read-only file system")
        return real_mkdtemp(*args, dir=dir, **kwargs)

    monkeypatch.setattr(checkpoint.tempfile, "mkdtemp", read_only_parent)
    check_out_folder(str(run))
    assert error_text(check_out_folder, str(tmp_path / "new")) == (
        f"cannot make the folder {tmp_path / 'new'} (Read-only file system): choose a "
        f"writable --out")


def test_interrupted_probe_leaves_only_a_hidden_recognisable_folder(tmp_path, monkeypatch):
    def interrupted(path):
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint.os, "rmdir", interrupted)
    with pytest.raises(KeyboardInterrupt):
        check_out_folder(str(tmp_path))
    [left] = os.listdir(tmp_path)
    assert left.startswith(".probe-")


# ---------------------------------------------------------------- read_checkpoint


def test_read_checkpoint_honours_map_location(tmp_path):
    path = str(tmp_path / "ckpt.pt")
    save_checkpoint(path, nano_payload())
    seen = []

    def on_cpu(storage, location):
        seen.append(location)
        return storage

    assert read_checkpoint(path, map_location=on_cpu)["format"] == FORMAT
    assert seen and set(seen) == {"cpu"}
    seen.clear()
    model, info = load_checkpoint(path, map_location=on_cpu)
    assert seen and isinstance(model, GPT) and info["format"] == FORMAT


def test_unsafe_checkpoint_is_refused_even_when_the_environment_allows_unsafe_loads(tmp_path,
                                                                                    monkeypatch):
    # torch's own default can be loosened by this variable; an explicit safe load cannot
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    path = tmp_path / "ckpt.pt"
    torch.save({"format": FORMAT, **nano_payload(), "when": datetime.date(2023, 3, 17)}, path)
    assert error_text(read_checkpoint, str(path)) == (
        f"{path} holds Python objects that a safe load refuses (loading them could run "
        f"code): minispdf "
        "checkpoints hold only tensors and plain values; load this file only if you trust it, with "
        f"torch.load(weights_only=False), or {RERUN}")


def test_corrupt_checkpoints_name_the_error_type(tmp_path):
    path = tmp_path / "ckpt.pt"
    save_checkpoint(str(path), nano_payload())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    assert error_text(read_checkpoint, str(path)) == (
        f"{path} is not a readable checkpoint (RuntimeError): the file is corrupt or "
        f"truncated; {RERUN}")
    path.write_bytes(b"")
    assert error_text(read_checkpoint, str(path)) == (
        f"{path} is not a readable checkpoint (EOFError): the file is corrupt or "
        f"truncated; {RERUN}")
    path.write_bytes(b"not a checkpoint at all")
    assert error_text(read_checkpoint, str(path)) == (
        f"{path} is not a readable checkpoint (UnpicklingError): the file is corrupt or "
        f"truncated; {RERUN}")


def test_tagged_file_without_a_model_names_the_path_and_entry(tmp_path):
    path = tmp_path / "ckpt.pt"
    save_checkpoint(str(path), {"model_config": {}})
    assert error_text(read_checkpoint, str(tmp_path)) == (  # a run folder: its ckpt.pt
        f"{path} is damaged: its 'model' entry is missing or not a dictionary; {RERUN}, or use "
        f"another checkpoint")


# ---------------------------------------------------------------- require_keys


@pytest.mark.parametrize("value", [None, "5", True, 5.0])
def test_require_keys_refuses_missing_and_wrong_types(value):
    ckpt = {} if value is None else {"step": value}
    assert error_text(require_keys, ckpt, {"step": int}, "run/ckpt.pt") == (
        f"run/ckpt.pt is damaged: its 'step' entry is missing or not an integer; {RERUN}, or use "
        f"another checkpoint")


def test_require_keys_accepts_the_right_types():
    require_keys({"step": 3, "flops": 7, "flops_dense": 7.5, "rng": {}},
                 # an int is a float count
                 {"step": int, "flops": float, "flops_dense": float, "rng": dict}, "p")
    with pytest.raises(MiniSPDFError, match="'flops' entry is missing or not a number"):
        require_keys({"flops": False}, {"flops": float}, "p")


# ---------------------------------------------------------- model_from_checkpoint / load_checkpoint


def damaged_payload():
    payload = nano_payload()
    payload["model"]["transformer.wpe.weight"] = torch.zeros(3, 3)
    return payload


MISMATCH = re.compile(r"(.*) does not match its own model config \(Error\(s\) in loading "
                      r"state_dict for GPT: "
                      r"size mismatch for transformer\.wpe\.weight: .*\): the file is damaged")


def test_model_that_does_not_fit_its_config_is_one_line_naming_the_file(tmp_path):
    msg = error_text(model_from_checkpoint, damaged_payload())
    assert MISMATCH.fullmatch(msg).group(1) == "checkpoint" and "\n" not in msg
    path = tmp_path / "ckpt.pt"
    save_checkpoint(str(path), damaged_payload())
    assert MISMATCH.fullmatch(error_text(load_checkpoint, str(path))).group(1) == str(path)


# ---------------------------------------------------------------- check_compatible


def test_check_compatible_messages():
    info = {"model_config": preset_config("nano").to_dict(), "tokenizer": "char"}
    assert error_text(check_compatible, info, preset_config("nano", n_layer=3, n_embd=32)) == (
        "checkpoint is from another architecture (n_layer 2 vs 3; n_embd 64 vs 32): "
        "use the preset it was trained with or another checkpoint")
    assert error_text(check_compatible, info, None, "gpt2", "run/ckpt.pt") == (
        "run/ckpt.pt was trained with the 'char' tokenizer, not 'gpt2': use --tokenizer char")
    # no tokenizer saved: nothing to check
    check_compatible({"model_config": info["model_config"]}, None, "gpt2")

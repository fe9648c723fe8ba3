"""One way to write results: atomic files, folders published whole, one line per quoted error."""

import os
import shutil

import pytest

from minispdf import fileio
from minispdf.errors import MiniSPDFError, counted, one_line


def leftovers(folder):
    return [p for p in os.listdir(folder) if p.startswith(fileio.TMP_PREFIX)]


def test_interrupted_write_leaves_the_old_file_intact(tmp_path):
    path = tmp_path / "result.json"
    fileio.write_json(str(path), {"old": 1})
    before = path.read_bytes()

    def half_then_interrupt(f):
        f.write(b'{"new": ')
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fileio.atomic_write_bytes(str(path), half_then_interrupt)
    assert path.read_bytes() == before and leftovers(tmp_path) == []


def test_a_failed_write_is_a_one_line_error_and_keeps_the_old_file(tmp_path):
    path = tmp_path / "notes.txt"
    fileio.write_text(str(path), "old\n")

    def disk_full(f):
        f.write(b"new")
        raise OSError(28, "No space left on device")

    with pytest.raises(MiniSPDFError, match="No space left on device.*previous version.*intact"):
        fileio.atomic_write_bytes(str(path), disk_full)
    assert path.read_text() == "old\n" and leftovers(tmp_path) == []


def test_written_files_get_the_usual_permissions(tmp_path):
    path = tmp_path / "sub" / "a.txt"  # the folder is made too
    fileio.write_text(str(path), "é\n")
    mask = os.umask(0o022)
    os.umask(mask)
    assert path.read_text(encoding="utf-8") == "é\n"
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask  # not mkstemp's owner-only 0600


def test_published_folder_appears_whole_or_not_at_all(tmp_path):
    final = tmp_path / "run"
    final.mkdir()
    (final / "old.txt").write_text("old")
    with pytest.raises(KeyboardInterrupt):
        with fileio.publish_folder(str(final)) as tmp:
            (tmp_path / "run" / "old.txt").read_text()  # the old folder is untouched while building
            with open(os.path.join(tmp, "new.txt"), "w") as f:
                f.write("half")
            raise KeyboardInterrupt
    assert os.listdir(final) == ["old.txt"] and leftovers(tmp_path) == []

    with fileio.publish_folder(str(final)) as tmp:
        with open(os.path.join(tmp, "new.txt"), "w") as f:
            f.write("new")
        assert os.listdir(final) == ["old.txt"]  # nothing new shows before the block ends
    assert os.listdir(final) == ["new.txt"] and leftovers(tmp_path) == []


def test_a_failed_swap_puts_the_old_folder_back(tmp_path, monkeypatch):
    final = tmp_path / "data"
    final.mkdir()
    (final / "meta.json").write_text("{}")
    real_replace = os.replace

    def fail_on_the_new_folder(src, dst):
        if (os.path.basename(str(src)).startswith(fileio.TMP_PREFIX + "data-")
            and "-old-" not in str(src)):
            raise OSError(5, "Input/output error")
        real_replace(src, dst)

    monkeypatch.setattr(fileio.os, "replace", fail_on_the_new_folder)
    with pytest.raises(OSError):
        with fileio.publish_folder(str(final)) as tmp:
            with open(os.path.join(tmp, "meta.json"), "w") as f:
                f.write('{"new": true}')
    assert (final / "meta.json").read_text() == "{}" and leftovers(tmp_path) == []


def test_move_aside_and_put_back(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "ckpt.pt").write_bytes(b"old")
    holder = fileio.move_aside(str(run))
    assert not run.exists()
    run.mkdir()
    (run / "ckpt.pt").write_bytes(b"half-made")
    fileio.put_back(holder, str(run))
    assert (run / "ckpt.pt").read_bytes() == b"old" and leftovers(tmp_path) == []


def test_one_line():
    assert one_line(RuntimeError("Error(s) in loading:\n\tsize mismatch  for w")) == \
        "Error(s) in loading: size mismatch for w"
    assert one_line(KeyError()) == "KeyError"  # no message: the type says what happened
    assert one_line(ValueError("x" * 500)) == "x" * 200
    assert one_line("a\nb", limit=2) == "a "


def test_counted_puts_the_noun_in_the_right_number():
    assert [counted(n, "thread") for n in (0, 1, 2)] == ["0 threads", "1 thread", "2 threads"]
    assert counted(1, "parallel job") == "1 parallel job"
    assert counted(3, "GPU") == "3 GPUs" and counted(2, "child", "children") == "2 children"
    # the demo's caption as the README shows it: no "job(s)"
    from minispdf.demo import caption
    grid = {"name": "demo", "sizes": {"s": {"pretrain_steps": 10, "finetune_steps": 5}},
            "tasks": {"t": {"eval_inputs": 3}}, "pretrain": {"batch_size": 2}, "block_size": 8}
    text = caption({"grid": grid, "timing": {"wall_s": 1, "jobs": 1, "threads": 2},
                    "machine": {"cpu": "cpu", "cores": 2, "torch": "2"}, "commit": "abc"})
    assert "1 job of 2 threads" in text and "(s)" not in text


def test_the_temp_file_sits_beside_the_target_under_a_recognisable_name(tmp_path):
    path = tmp_path / "ckpt.pt"
    seen = []
    fileio.atomic_write_bytes(str(path), lambda f: seen.extend(os.listdir(tmp_path)))
    [tmp] = seen  # same folder, so the final rename is atomic
    assert (tmp.startswith(fileio.TMP_PREFIX) and tmp.endswith("ckpt.pt")
            and os.listdir(tmp_path) == ["ckpt.pt"])


def test_unwritable_folder_is_a_one_line_error(tmp_path):
    (tmp_path / "f").write_text("x")
    path = tmp_path / "f" / "sub" / "out.json"  # its folder would have to be made inside a file
    with pytest.raises(MiniSPDFError) as info:
        fileio.write_json(str(path), {})
    assert str(info.value) == f"cannot write {path} (Not a directory): choose a writable folder"


def test_folder_removed_during_the_write_keeps_the_one_line_error(tmp_path):
    folder = tmp_path / "run"
    path = folder / "log.json"
    with pytest.raises(MiniSPDFError) as info:
        fileio.atomic_write_bytes(str(path), lambda f: shutil.rmtree(folder))
    assert str(info.value) == (f"cannot write {path} (No such file or directory); the previous "
                               f"version, if any, "
                               "is intact: free some space or choose another folder")
    assert os.listdir(tmp_path) == []


def test_json_is_written_indented_for_people(tmp_path):
    path = tmp_path / "r.json"
    fileio.write_json(str(path), {"a": [1, 2]})
    assert path.read_text() == '{\n  "a": [\n    1,\n    2\n  ]\n}\n'


def test_published_folders_get_the_usual_permissions(tmp_path):
    mask = os.umask(0o022)
    os.umask(mask)
    with fileio.publish_folder(str(tmp_path / "run")):
        pass
    # not mkdtemp's owner-only 0700
    assert (tmp_path / "run").stat().st_mode & 0o7777 == 0o777 & ~mask


def test_an_old_folder_that_cannot_be_fully_deleted_does_not_undo_the_publish(tmp_path,
                                                                              monkeypatch):
    final = tmp_path / "run"
    final.mkdir()
    (final / "busy.bin").write_bytes(b"old")
    real_unlink = os.unlink

    def busy(name, *args, **kwargs):  # e.g. a file still open on a network file system
        if os.path.basename(str(name)) == "busy.bin":
            raise OSError(16, "Device or resource busy")
        real_unlink(name, *args, **kwargs)

    monkeypatch.setattr(os, "unlink", busy)
    with fileio.publish_folder(str(final)) as tmp:
        with open(os.path.join(tmp, "new.txt"), "w") as f:
            f.write("new")
    assert os.listdir(final) == ["new.txt"]


def test_move_aside_holds_the_folder_in_a_hidden_holder_beside_it(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    holder = fileio.move_aside(str(run))
    assert os.path.dirname(holder) == str(tmp_path)  # same file system: the move is a rename
    assert os.path.basename(holder).startswith(fileio.TMP_PREFIX + "run-old-")
    assert os.listdir(holder) == ["run"]

"""Checkpoints you can trust: the checksum of every payload, verified on load and before a write replaces the
previous file; damaged, foreign, incomplete, misshapen and newer checkpoints as one line, with the intact
checkpoints beside a damaged one and how to go on from them; damaged metadata repaired on resume."""
import json
import shutil
import struct
import zipfile
from pathlib import Path

import pytest
import torch

import eval as eval_script
import train
from helpers import cli_exit
from model_code import checkpoint
from model_code.errors import UserError
from systems import train_args

SYSTEM = "interpolant_grf"


@pytest.fixture
def run(tmp_path, trained):
    folder = tmp_path / "run"
    shutil.copytree(trained(SYSTEM), folder)
    torch.set_num_threads(1)
    return folder


def resume(capsys, folder, *extra):
    """train.py on `folder` with one more epoch, as the shell runs it: (status, stderr lines)."""
    return cli_exit(capsys, train.main, "train.py", *train_args(SYSTEM, folder, "train.threads=1", "epochs=4",
                                                                 *extra))


def damage_inside_a_tensor(path: Path, size: int = 4096, seed: int = 0) -> None:
    """Overwrite up to `size` bytes in the middle of the largest tensor record with random bytes: the file keeps
    its size and its zip structure (a bad disk sector, a torn copy)."""
    with zipfile.ZipFile(path) as archive:
        info = max((i for i in archive.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    with open(path, "r+b") as fh:
        fh.seek(info.header_offset)
        header = fh.read(30)
        name_len, extra_len = struct.unpack("<HH", header[26:30])
        start = info.header_offset + 30 + name_len + extra_len
        n = min(size, info.file_size)
        fh.seek(start + (info.file_size - n) // 2)
        fh.write(torch.randint(0, 256, (n,), generator=torch.Generator().manual_seed(seed),
                               dtype=torch.uint8).numpy().tobytes())


# ------------------------------------------------------------------ the checksum
def test_the_checksum_covers_every_part_of_the_payload_and_survives_a_save_and_load(tmp_path):
    payload = {"format_version": 2, "w": torch.randn(3, 4), "half": torch.randn(5).to(torch.bfloat16),
               "scalar": torch.tensor(2.5), "empty": torch.zeros(0, 3), "flags": torch.tensor([True, False]),
               "gen": torch.Generator().manual_seed(3).get_state(), "n": 7, "x": 0.1, "s": "text", "none": None,
               "nested": {"list": [1, 2.0, "a", (3, 4)], "betas": (0.9, 0.999)}}
    digest = checkpoint.checksum(payload)
    checkpoint.atomic_save(payload, tmp_path / "a.pt")
    loaded = checkpoint.load(tmp_path / "a.pt")
    assert loaded["checksum"] == digest and checkpoint.checksum(loaded) == digest
    changes = {
        "a tensor value": lambda p: p["w"].view(torch.int32).view(-1)[5].bitwise_xor_(1),      # its last bit
        "a dtype": lambda p: p.update(w=p["w"].double()),
        "a shape": lambda p: p.update(w=p["w"].reshape(4, 3)),
        "a nested number": lambda p: p["nested"]["list"].__setitem__(1, 2.0000001),
        "an int for a float": lambda p: p["nested"]["list"].__setitem__(1, 2),
        "a key": lambda p: p.update(extra=None),
        "a string": lambda p: p.update(s="texT"),
    }
    for what, change in changes.items():
        changed = {k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in payload.items()}
        changed["nested"] = {"list": list(payload["nested"]["list"]), "betas": payload["nested"]["betas"]}
        change(changed)
        assert checkpoint.checksum(changed) != digest, what


def test_random_bytes_inside_a_checkpoint_load_in_torch_but_not_here(run, capsys):
    """The issue's case: 4 KiB of random bytes inside model.pt, same size. torch.load takes it; the resume and
    eval.py refuse it in one line that names it, the intact checkpoints beside it and how to resume."""
    latest = run / "model.pt"
    size = latest.stat().st_size
    damage_inside_a_tensor(latest)
    assert latest.stat().st_size == size
    torch.load(latest, weights_only=True)                              # no complaint from torch
    status, lines = resume(capsys, run)
    assert status == 2 and len(lines) == 1, lines
    line = lines[0]
    assert f"{latest} is damaged" in line and "checksum" in line
    assert "model.w_total.pt (step" in line and "no optimiser state" in line
    assert f"mv {latest} {latest}.damaged && cp {run}/model." in line and "run the same command" in line
    # eval.py's default checkpoint is model.w_total.pt, which is intact: damage it too
    damage_inside_a_tensor(run / "model.w_total.pt", seed=1)
    status, lines = cli_exit(capsys, eval_script.main, "eval.py", "--exp_name", run, "--mode", "generate")
    assert status == 2 and len(lines) == 1 and "model.w_total.pt is damaged" in lines[0]
    assert "model.mean_l2.pt (step" in lines[0] and "model.pt (step" not in lines[0]
    assert "--checkpoint" in lines[0] and not (run / "eval").exists()


def test_the_suggested_copy_resumes_training(run, capsys):
    latest = run / "model.pt"
    damage_inside_a_tensor(latest)
    shutil.move(latest, str(latest) + ".damaged")
    shutil.copy(run / "model.w_total.pt", latest)          # what the message says to do
    status, lines = resume(capsys, run)
    assert status == 0, lines
    assert any("no optimiser state" in line for line in lines)
    assert checkpoint.load(latest)["unit"] == 4 and "optimizer" in checkpoint.load(latest)


def test_a_write_that_comes_back_from_the_disk_different_never_replaces_the_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "model.w_total.pt"
    checkpoint.atomic_save({"w": torch.ones(16), "step": 1}, path)
    before = path.read_bytes()
    real = checkpoint._read_back_from_disk

    def bad_disk(tmp):
        payload = real(tmp)
        payload["w"] = payload["w"].clone()
        payload["w"][3] = 7.0
        return payload

    monkeypatch.setattr(checkpoint, "_read_back_from_disk", bad_disk)
    with pytest.raises(UserError, match="came back from the disk different.*previous model.w_total.pt is kept"):
        checkpoint.atomic_save({"w": torch.zeros(16), "step": 2}, path)
    assert path.read_bytes() == before and not list(tmp_path.glob(".*.tmp"))


def test_a_damaged_best_checkpoint_is_set_aside_on_resume_and_written_again(run, capsys):
    best = run / "model.w_total.pt"
    damage_inside_a_tensor(best)
    status, lines = resume(capsys, run)
    assert status == 0, lines
    assert any("model.w_total.pt is damaged" in line and "renamed" in line for line in lines)
    assert (run / "model.w_total.pt.damaged").is_file()
    assert checkpoint.load(best)["step"] > 0                 # a good one, from the resumed run's evaluation


# ------------------------------------------------------------------ foreign, incomplete, misshapen, newer
def test_a_newer_format_and_a_dict_without_the_keys_are_one_line(run, capsys):
    state = checkpoint.load(run / "model.pt")
    newer = {**state, "format_version": checkpoint.FORMAT_VERSION + 1}
    torch.save(newer, run / "model.pt")
    status, lines = resume(capsys, run)
    assert status == 2 and len(lines) == 1 and "newer version of this project" in lines[0]
    incomplete = {k: v for k, v in state.items() if k not in ("generator", "checksum")}
    checkpoint.atomic_save(incomplete, run / "model.pt")
    status, lines = resume(capsys, run)
    assert status == 2 and len(lines) == 1 and "not a complete checkpoint" in lines[0] and "generator" in lines[0]
    for name in ("model.w_total.pt", "model.mean_l2.pt", "model.w_var.pt", "model.w_skew.pt"):
        best = checkpoint.load(run / name)
        checkpoint.atomic_save({k: v for k, v in best.items() if k != "net"}, run / name)
    status, lines = cli_exit(capsys, eval_script.main, "eval.py", "--exp_name", run, "--mode", "generate")
    assert status == 2 and len(lines) == 1 and "not a complete checkpoint" in lines[0] and "net" in lines[0]


def test_a_checkpoint_of_another_shape_is_one_line(run, capsys):
    state = checkpoint.load(run / "model.pt")
    name, weight = next((k, v) for k, v in state["model"].items() if v.dim() >= 2)
    state["model"] = {**state["model"], name: torch.zeros(*weight.shape[:-1], weight.shape[-1] + 1)}
    checkpoint.atomic_save(state, run / "model.pt")
    status, lines = resume(capsys, run)
    assert status == 2 and len(lines) == 1 and "does not fit" in lines[0] and name in lines[0]
    status, lines = cli_exit(capsys, eval_script.main, "eval.py", "--exp_name", run, "--mode", "generate",
                             "--checkpoint", "model.pt", "--no_ema")          # the EMA weights are intact
    assert status == 2 and len(lines) == 1 and "does not fit" in lines[0]


def test_a_format_1_checkpoint_without_checksum_still_loads(tmp_path):
    torch.save({"format_version": 1, "w": torch.ones(2)}, tmp_path / "old.pt")
    assert checkpoint.load(tmp_path / "old.pt")["w"].sum() == 2


# ------------------------------------------------------------------ damaged metadata
def test_torn_metadata_never_blocks_a_resume(run, capsys):
    """provenance.json torn mid-write, config.json cut short, random bytes in results.json: the resume goes on,
    one warning each, and the files are whole again afterwards."""
    (run / "provenance.json").write_text((run / "provenance.json").read_text()[:50])
    (run / "config.json").write_text((run / "config.json").read_text()[:100])
    lines = (run / "results.json").read_bytes().splitlines(keepends=True)
    (run / "results.json").write_bytes(b"".join(lines[:1] + [b"\x00\xff\x13 torn\n"] + lines[1:]))
    status, err = resume(capsys, run)
    assert status == 0, err
    warnings = [line for line in err if line.startswith("warning:")]
    assert any("provenance.json was damaged" in w for w in warnings)
    assert any("config.json is damaged" in w and "model.pt" in w for w in warnings)
    assert any("results.json: dropped 1 damaged line" in w for w in warnings)
    assert len(json.loads((run / "provenance.json").read_text())) == 1
    assert (run / "provenance.json.damaged").is_file()
    assert json.loads((run / "config.json").read_text())["train"]["epochs"] == 4
    assert [json.loads(line)["epoch"] for line in (run / "results.json").read_text().splitlines()][-1] == 4


def test_a_missing_config_json_is_taken_from_the_checkpoint_and_still_refuses_another_experiment(run, capsys):
    (run / "config.json").unlink()
    status, lines = resume(capsys, run, "net.width=12")
    assert status == 2 and len(lines) == 1 and "different config" in lines[0] and "net.width" in lines[0]

"""sample.py: every mode on every kind of run (levels, VE fields, interpolant images, toy, GANO), the files it
writes and the relations between the modes' samples."""
import shutil
from pathlib import Path

import numpy as np
import helpers
import pytest
import torch

from model_code import build
from model_code.errors import UserError


ROOT = Path(__file__).resolve().parents[1]
K = 4                                        # process.levels.K of the levels systems (systems.py)

sample_script = helpers.load_script(ROOT / "sample.py", "sample_script")


@pytest.fixture(autouse=True)
def data_dir(volcano_dir, monkeypatch):
    monkeypatch.setenv("DATA_DIR", str(volcano_dir))


@pytest.fixture(scope="module")
def runs(trained, tmp_path_factory):
    return {name: _copy(trained, tmp_path_factory, name) for name in ("heat_digits", "linear_digits", "ve_volcano",
                                                                       "starter_digits", "toy", "gano_grf")}


def _copy(trained, tmp_path_factory, name):
    """A private copy of the session's trained run of `name` (this module writes into it)."""
    dest = tmp_path_factory.mktemp(f"copy_{name}") / name
    shutil.copytree(trained(name), dest)
    return dest


def _sample(run, *flags):
    assert sample_script.main(["--exp_name", str(run), "--quiet", *flags]) == 0
    return max((run / "additional_samples").iterdir(), key=lambda p: p.stat().st_mtime_ns)


def _levels(out, frames=K + 1):
    from model_code.video import read_mp4

    for name in ("final.png", "init.png", "samples.npz", "process.mp4"):
        assert (out / name).is_file(), name
    assert not (out / "process.gif").exists()
    assert len(read_mp4(out / "process.mp4")) == frames      # default: every state u_K, ..., u_0
    data = np.load(out / "samples.npz")
    assert data["process"].shape[0] == frames and np.array_equal(data["process"][-1], data["samples"])
    return data


def _fields(out):
    for name in ("final.png", "init.png", "samples.npz"):
        assert (out / name).read_bytes()[:4] in (b"\x89PNG", b"PK\x03\x04"), name
    return np.load(out / "samples.npz")


def cli_exit(capsys, *argv):
    return helpers.cli_exit(capsys, sample_script.main, "sample.py", *argv)


def test_levels_random_same_init_share_noise(runs):
    run = runs["heat_digits"]
    out = _sample(run, "--batch_size", "4")
    assert out.name == "random-latest-delta0.0125-seed0"
    rnd = _levels(out)
    assert rnd["samples"].shape == (4, 1, 8, 8) and rnd["noise"].shape == (4, K, 1, 8, 8)
    assert len({rnd["init"][i].tobytes() for i in range(4)}) == 4 and str(rnd["forward"]) == "heat"

    same = _levels(_sample(run, "--batch_size", "4", "--same_init"))
    assert all(np.array_equal(same["init"][i], same["init"][0]) for i in range(4))      # one initial state
    assert np.array_equal(same["init"][0], rnd["init"][0])
    assert len({same["samples"][i].tobytes() for i in range(4)}) == 4                   # different outputs
    assert not np.array_equal(same["noise"][0], same["noise"][1])

    share = _levels(_sample(run, "--batch_size", "4", "--mode", "share_noise"))
    assert all(np.array_equal(share["noise"][i], share["noise"][0]) for i in range(4))  # one noise sequence
    assert len({share["init"][i].tobytes() for i in range(4)}) == 4
    assert np.allclose(share["samples"][0], rnd["samples"][0], atol=1e-5)              # sample 0 is seed 0's
    # the sampler of eval.py / the trainer draws the same sample from the same seed
    loaded = build.load_run(run, "model.pt", "cpu")
    direct = loaded.process.sample(loaded.model, [0, 1], loaded.shape, "cpu")
    assert np.allclose(direct.numpy(), rnd["samples"][:2], atol=1e-5)


def test_levels_interpolate_and_another_map(runs):
    run = runs["linear_digits"]
    rnd = _levels(_sample(run, "--batch_size", "2", "--seed", "5"))
    data = _levels(_sample(run, "--interpolate", "--num_points", "6", "--seed", "5"))
    assert data["samples"].shape[0] == 6 and str(data["mode"]) == "interpolate"
    assert str(data["forward"]) == "fixed_random" and np.isfinite(data["samples"]).all()
    assert np.allclose(data["init"][0], rnd["init"][0], atol=1e-5)
    assert np.allclose(data["init"][-1], rnd["init"][1], atol=1e-5)
    assert np.allclose(data["samples"][0], rnd["samples"][0], atol=1e-5)     # seed 5's start and noise


def test_ve_modes(runs):
    """annealed Langevin draws noise at every step: every mode means something."""
    run = runs["ve_volcano"]
    out = _sample(run, "--batch_size", "3")
    assert out.name == "random-latest-annealed_langevin-T1-seed0"
    rnd = _fields(out)
    assert rnd["samples"].shape == (3, 2, 16, 16) and str(rnd["sampler"]) == "annealed_langevin"
    loaded = build.load_run(run, "model.pt", "cpu")
    options = build.sampler_setup(loaded.cfg)
    direct = loaded.process.sample(loaded.model, [0, 1, 2], loaded.shape, "cpu", **options)
    assert np.allclose(direct.numpy(), rnd["samples"], atol=1e-5)         # random = the process's own sampler
    starts = loaded.process.noise.sample(3, (16, 16), [torch.Generator().manual_seed(s) for s in range(3)])
    assert np.array_equal(rnd["init"], starts.numpy())

    same = _fields(_sample(run, "--batch_size", "3", "--mode", "same_init"))
    assert all(np.array_equal(same["init"][i], rnd["init"][0]) for i in range(3))
    assert np.allclose(same["samples"][0], rnd["samples"][0], atol=1e-5)
    assert len({same["samples"][i].tobytes() for i in range(3)}) == 3              # the later noise differs

    share = _fields(_sample(run, "--batch_size", "3", "--share_noise"))
    assert np.array_equal(share["init"], rnd["init"])                                # own starts
    assert np.allclose(share["samples"][0], rnd["samples"][0], atol=1e-5)
    assert not np.allclose(share["samples"][1], rnd["samples"][1], atol=1e-3)       # seed 0's later noise

    inter = _fields(_sample(run, "--mode", "interpolate", "--num_points", "5"))
    z = inter["init"]
    assert z.shape == (5, 2, 16, 16) and np.array_equal(z[0], rnd["init"][0])
    assert np.allclose(z[-1], rnd["init"][1], atol=1e-6)
    lam = np.linspace(0, 1, 5) * np.pi / 2
    assert np.allclose(z[2], np.cos(lam[2]) * z[0] + np.sin(lam[2]) * z[-1], atol=1e-5)
    assert np.allclose(inter["samples"][0], rnd["samples"][0], atol=1e-5)     # seed 0's start and noise


def test_deterministic_sampler_modes(runs, capsys):
    """heun_ode draws nothing after its start: same_init / share_noise are refused, interpolate is exact."""
    run = runs["starter_digits"]
    rnd = _fields(_sample(run, "--batch_size", "2"))
    inter = _fields(_sample(run, "--interpolate", "--num_points", "4"))
    assert inter["samples"].shape == (4, 1, 8, 8)
    assert np.allclose(inter["samples"][0], rnd["samples"][0], atol=1e-5)
    assert np.allclose(inter["samples"][-1], rnd["samples"][1], atol=1e-4)      # cos(pi/2) is 6e-17, not 0
    for mode in ("same_init", "share_noise"):
        status, lines = cli_exit(capsys, "--exp_name", run, "--mode", mode, "--quiet")
        assert status == 2 and len(lines) == 1, lines
        assert f"--mode {mode} means nothing with the deterministic sampler heun_ode" in lines[0]
        assert "--sampler annealed_langevin" in lines[0]
    same = _fields(_sample(run, "--batch_size", "3", "--same_init", "--sampler", "euler_maruyama"))
    assert same["init"].shape == (3, 1, 8, 8) and all(np.array_equal(z, same["init"][0]) for z in same["init"])
    assert len({s.tobytes() for s in same["samples"]}) == 3
    assert {p.name for p in (run / "additional_samples").iterdir()} == {
        "random-latest-heun_ode-steps3-seed0", "interpolate-latest-heun_ode-steps3-seed0",
        "same_init-latest-euler_maruyama-steps3-seed0"}


def test_toy_samples_in_random_mode_only(runs, capsys):
    run = runs["toy"]
    out = _sample(run, "--batch_size", "5")
    data = np.load(out / "samples.npz")
    assert out.name == "random-latest-reverse_sde-steps10-seed0" and (out / "samples.png").is_file()
    assert data["samples"].shape == (5, 2) and ((data["samples"] >= 0) & (data["samples"] < 1)).all()
    for mode in ("same_init", "share_noise", "interpolate"):
        status, lines = cli_exit(capsys, "--exp_name", run, "--mode", mode)
        assert status == 2 and len(lines) == 1 and "use --mode random" in lines[0], lines


def test_gano_random_and_interpolate_are_the_generator_of_their_input_functions(runs, capsys):
    """random: G(z_k) for seed k's input function (eval.py's samples of the same seeds); interpolate: G of the
    great circle between two input functions, whose ends are the random samples of those seeds."""
    run = runs["gano_grf"]
    loaded = build.load_run(run, "model.pt", "cpu")
    data = _fields(_sample(run, "--batch_size", "3", "--seed", "5"))
    expected = loaded.process.sample(loaded.model, [5, 6, 7], loaded.shape, "cpu")
    np.testing.assert_allclose(data["samples"], expected.numpy(), rtol=1e-5, atol=1e-6)
    line = _fields(_sample(run, "--mode", "interpolate", "--num_points", "4", "--seed", "5"))
    assert line["samples"].shape == (4, *loaded.shape)
    np.testing.assert_allclose(line["samples"][0], expected[0].numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(line["samples"][-1], expected[1].numpy(), rtol=1e-5, atol=1e-6)
    for flags in (["--mode", "same_init"], ["--mode", "share_noise"], ["--sampler", "heun_ode"]):
        status, lines = cli_exit(capsys, "--exp_name", run, *flags)
        assert status == 2 and len(lines) == 1 and "GANO" in lines[0], lines


def test_overwrite_and_errors(runs, capsys):
    run = runs["heat_digits"]
    out = _sample(run, "--batch_size", "2", "--seed", "9")
    before = (out / "samples.npz").read_bytes()
    with pytest.raises(UserError, match="already holds samples.*--overwrite"):
        sample_script.main(["--exp_name", str(run), "--batch_size", "3", "--seed", "9", "--quiet"])
    assert (out / "samples.npz").read_bytes() == before
    assert _sample(run, "--batch_size", "3", "--seed", "9", "--overwrite") == out
    assert np.load(out / "samples.npz")["samples"].shape[0] == 3
    with pytest.raises(UserError, match="snapshots/model.7.pt"):
        sample_script.main(["--exp_name", str(run), "--checkpoint", "7"])
    with pytest.raises(UserError, match="contradict"):
        sample_script.main(["--exp_name", str(run), "--mode", "random", "--same_init"])
    with pytest.raises(UserError, match="--delta must be positive"):
        sample_script.main(["--exp_name", str(run), "--delta", "-1"])
    status, lines = cli_exit(capsys, "--exp_name", run / "nope")
    assert status == 2 and len(lines) == 1 and "not found" in lines[0]


def test_save_sample_freq_keeps_every_nth_level_in_the_video_and_the_npz(runs):
    run = runs["heat_digits"]
    full = _levels(_sample(run, "--batch_size", "3", "--seed", "11"))
    assert list(full["process_levels"]) == [4, 3, 2, 1, 0]
    assert np.array_equal(full["process"][0], full["init"])
    out = _sample(run, "--batch_size", "3", "--seed", "11", "--save_sample_freq", "3", "--overwrite")
    every3 = _levels(out, frames=3)                           # u_K always, then the multiples of 3: u_3, u_0
    assert list(every3["process_levels"]) == [4, 3, 0]
    assert np.array_equal(every3["process"], full["process"][[0, 1, 4]])
    assert np.array_equal(every3["samples"], full["samples"])   # only what is kept changes, not the samples
    with pytest.raises(UserError, match="--save_sample_freq must be >= 1"):
        sample_script.main(["--exp_name", str(run), "--save_sample_freq", "0"])


def test_final_noise_against_the_chain_computed_by_hand(runs):
    run = runs["heat_digits"]
    loaded = build.load_run(run, "model.pt", "cpu")
    delta = loaded.process.delta

    def mu(u, k):
        with torch.no_grad():
            return loaded.model(torch.from_numpy(u), torch.full((len(u),), k, dtype=torch.long)).numpy()

    plain = _levels(_sample(run, "--batch_size", "3", "--seed", "21"))
    # default: the std is delta at every step, and the last step adds none: u_0 = mu(u_1, 1) exactly
    assert np.allclose(plain["noise_std"][:-1], delta) and plain["noise_std"][-1] == 0
    assert np.isnan(plain["final_noise"])
    u1 = plain["process"][K - 1]
    assert np.allclose(plain["samples"], mu(u1, 1), atol=1e-6)
    for j, k in enumerate(range(K, 1, -1)):                # u_{k-1} = mu(u_k, k) + delta eps_k
        expect = mu(plain["process"][j], k) + delta * plain["noise"][:, j]
        assert np.allclose(plain["process"][j + 1], expect, atol=1e-5)

    out = _sample(run, "--batch_size", "3", "--seed", "21", "--final_noise", "0.2")
    assert out.name == "random-latest-delta0.0125-final0.2-seed21"
    fin = _levels(out)
    std = delta + (0.2 - delta) * np.arange(K) / (K - 1)      # linear from delta (k = K) to 0.2 (k = 1)
    assert np.allclose(fin["noise_std"], std) and float(fin["final_noise"]) == 0.2
    assert np.array_equal(fin["noise"], plain["noise"]) and np.array_equal(fin["init"], plain["init"])
    u = fin["init"]
    for j, k in enumerate(range(K, 0, -1)):                # every step adds noise now, the last with std 0.2
        u = (mu(u, k) + std[j] * fin["noise"][:, j]).astype(np.float32)
        assert np.allclose(fin["process"][j + 1], u, atol=1e-5)
    assert np.allclose(fin["samples"], u, atol=1e-5)
    assert np.abs(fin["samples"] - mu(fin["process"][K - 1], 1)).mean() > 0.05     # not the mean any more
    with pytest.raises(UserError, match="--final_noise must be >= 0"):
        sample_script.main(["--exp_name", str(run), "--final_noise", "-0.1"])


def test_levels_flags_on_other_runs_are_one_line(runs, capsys):
    status, lines = cli_exit(capsys, "--exp_name", runs["ve_volcano"], "--final_noise", "0.1")
    assert status == 2 and len(lines) == 1 and "levels runs" in lines[0]
    status, lines = cli_exit(capsys, "--exp_name", runs["toy"], "--save_sample_freq", "2")
    assert status == 2 and len(lines) == 1 and "levels runs" in lines[0]


def test_help_explains_the_heat_flags(capsys):
    with pytest.raises(SystemExit):
        sample_script.parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--save_sample_freq N" in text and "every N levels" in text
    assert "--final_noise F" in text and "mean of the last step" in text

"""Out-of-range settings end in one line `train.py: error: ...` naming the key, exit status 2, no run folder;
and a run that cannot fit in memory is refused from its config, before it allocates (model_code/memory.py)."""
import glob
import sys

import pytest
import torch

from model_code import build, config, memory
from model_code.distributed import Context
from model_code.errors import UserError

from helpers import cli_exit
from systems import ROOT, SYSTEMS

sys.path.insert(0, str(ROOT))
import eval as eval_script  # noqa: E402
import train  # noqa: E402

CI = str(ROOT / "exps/json/ci.json")
GIB = 2 ** 30


def _train_exit(capsys, tmp_path, *items):
    code, lines = cli_exit(capsys, train.main, "train.py", "--config", CI, "--savedir", tmp_path / "run", "--quiet",
                           *items)
    assert not (tmp_path / "run").exists(), "a refused start created its run folder"
    return code, lines


# The value as the message shows it, where it differs from the argument (floats).
SHOWN = {"train.max_minutes=0": "0.0", "sampler.S_churn=-1": "-1.0", "process.wrapped_ve.prior_tolerance=-1": "-1.0",
         "data.grf_alpha=1": "1.0", "data.grf_tau=0": "0.0"}


@pytest.mark.parametrize("item, key", [
    ("train.threads=-3", "train.threads"), ("train.threads=0", "train.threads"),
    ("threads=0", "train.threads"),                                 # the published JSON spelling
    ("data.resolution=0", "data.resolution"), ("resolution=4", "data.resolution"),
    ("data.max_examples=-2", "data.max_examples"), ("max_examples=0", "data.max_examples"),
    ("data.channels=2", "data.channels"), ("seed=-1", "seed"), ("data.split_seed=-1", "data.split_seed"),
    ("eval.seed=-5", "eval.seed"), ("train.max_minutes=0", "train.max_minutes"),
    ("optim.ema_update_after=-1", "optim.ema_update_after"), ("sampler.S_churn=-1", "sampler.S_churn"),
    ("process.levels.prior_fit_max=0", "process.levels.prior_fit_max"),
    ("process.levels.map_seed=-1", "process.levels.map_seed"),
    ("process.wrapped_ve.n_images=-1", "process.wrapped_ve.n_images"),
    ("process.wrapped_ve.prior_tolerance=-1", "process.wrapped_ve.prior_tolerance"),
    ("net.domain_padding=-0.5", "net.domain_padding"), ("net.unet.num_heads=0", "net.unet.num_heads"),
    ("net.unet.model_channels=0", "net.unet.model_channels"), ("net.unet.dropout=1.5", "net.unet.dropout"),
    ("net.unet.channel_mult=[]", "net.unet.channel_mult"),
    ("net.unet.attention_levels=[3]", "net.unet.attention_levels"), ("net.mlp.depth=0", "net.mlp.depth"),
    ("data.grf_alpha=1", "data.grf_alpha"), ("data.grf_tau=0", "data.grf_tau"),
])
def test_an_out_of_range_setting_is_one_line_naming_the_key(capsys, tmp_path, item, key):
    code, lines = _train_exit(capsys, tmp_path, item)
    assert code == 2 and len(lines) == 1, lines
    assert lines[0].startswith(f"train.py: error: config: {key} must "), lines[0]
    assert lines[0].endswith(f"got {SHOWN.get(item, item.split('=', 1)[1])}"), lines[0]


def test_threads_zero_is_refused_and_the_message_says_null_means_automatic(capsys, tmp_path):
    code, lines = _train_exit(capsys, tmp_path, "train.threads=0")
    assert code == 2 and "null = automatic" in lines[0] and lines[0].endswith("got 0")


def test_the_toy_yaml_num_threads_zero_still_reads_as_automatic():
    """The toy's old key num_threads used 0 for "automatic"; its alias maps it onto null, which stays valid."""
    cfg = config.load([str(ROOT / "configs/toy/base_config.yaml")], ["train.num_threads=0"])
    assert cfg.train.threads is None


def test_the_smallest_resolution_is_accepted():
    cfg = config.load([CI], [f"resolution={config.MIN_RESOLUTION}"])
    assert cfg.data.resolution == config.MIN_RESOLUTION == 8


# ------------------------------------------------------------------------------------------------ memory
def _fixed(n_bytes):
    return lambda device: n_bytes


def test_a_run_that_cannot_fit_is_refused_before_it_allocates(capsys, tmp_path, monkeypatch):
    """ci.json at 100000 px: 96 fields of 1 x 10^10 float32 values = 3.84 TB, a batch of 8 and its noise
    2 x 8 x 4e10 B = 640 GB, the FNO's 8-channel first activation 8 x 8 x 4e10 B = 2.56 TB; 7.04 TB in all."""
    monkeypatch.setattr(memory, "available_bytes", _fixed(2 ** 36))
    code, lines = _train_exit(capsys, tmp_path, "resolution=100000")
    assert code == 2 and len(lines) == 1, lines
    assert lines[0] == (
        "train.py: error: data.resolution=100000 (1 x 100000 x 100000 float32 per example), train.batch_size=8: "
        "training needs at least 7.0 TB (the data set 3.8 TB for 96 examples, one batch and its noise 640.0 GB, "
        "the first layer's 8-channel activations 2.6 TB) but this machine has 68.7 GB available; lower "
        "data.resolution, train.batch_size or data.max_examples")


def test_the_check_runs_on_this_machine_too(capsys, tmp_path):
    """No monkeypatch: no machine has the 7 TB, and the refusal still comes before any allocation."""
    code, lines = _train_exit(capsys, tmp_path, "resolution=100000")
    assert code == 2 and len(lines) == 1 and "training needs at least 7.0 TB" in lines[0], lines


def test_the_estimate_is_the_hand_computation():
    cfg = config.load([CI], ["grf_n_train=40", "grf_n_valid=24", "resolution=32", "npad=0", "batch_size=8",
                             "d_co_domain=8"])
    field = 1 * 32 * 32 * 4
    assert memory.training_estimate(cfg) == memory.Estimate(data=64 * field, inputs=2 * 8 * field,
                                                            activations=8 * 8 * 32 * 32 * 4)
    # npad crops the grid; bf16 halves the activations; a process of three runs its share of the batch.
    cropped = config.load([CI], ["grf_n_train=40", "grf_n_valid=24", "resolution=32", "npad=4"])
    assert memory.training_estimate(cropped).data == 64 * 28 * 28 * 4
    assert memory.training_estimate(config.load([CI], ["train.precision=bf16", "d_co_domain=8", "batch_size=8",
                                                       "resolution=32"])).activations == 8 * 8 * 32 * 32 * 2
    for rank, share in ((0, 3), (2, 2)):
        estimate = memory.training_estimate(cfg, dist=Context(rank=rank, world_size=3))
        assert (estimate.inputs, estimate.activations) == (2 * 8 * field, share * 8 * 32 * 32 * 4)


def test_the_estimate_counts_files_images_and_their_limits(volcano_dir):
    volcano = config.load([str(ROOT / "exps/json/quickstart.json")], ["resolution=16"])
    assert memory.training_estimate(volcano, str(volcano_dir)).data == 48 * 2 * 16 * 16 * 4
    capped = config.load([str(ROOT / "exps/json/quickstart.json")], ["resolution=16", "max_examples=40"])
    assert memory.training_estimate(capped, str(volcano_dir)).data == 40 * 2 * 16 * 16 * 4
    assert memory.training_estimate(capped, str(volcano_dir / "missing")).data == 0    # the loader says why
    digits = config.load([str(ROOT / "configs/digits/default_digits_configs.yaml")], ["data.max_examples=64"])
    valid = round(digits.data.val_size * 1797)
    assert memory.training_estimate(digits).data == (64 + valid) * 8 * 8 * 4
    assert memory.training_estimate(config.load([str(ROOT / "configs/toy/base_config.yaml")], [])) is None


@pytest.mark.parametrize("system", sorted(s for s in SYSTEMS if s != "toy"))
def test_the_estimate_is_a_lower_bound_of_a_real_training_step(tmp_path, system, volcano_dir):
    """The data term is exactly the data set's tensors; the batch term is below the peak of the tensors one
    training step (its batch, noise, forward and backward) holds at once, counted by storage."""
    from model_code.batching import _PeakTensorBytes

    torch.set_num_threads(1)
    files, overrides = SYSTEMS[system]
    cfg = config.load([str(ROOT / f) for f in files], [*overrides, "train.tensorboard=false"])
    estimate = memory.training_estimate(cfg, str(volcano_dir))
    data = build.build_dataset(cfg, str(volcano_dir))
    assert estimate.data == 4 * (data.train.numel() + data.valid.numel())
    trainer = build.build_trainer(cfg, tmp_path, str(volcano_dir))
    counter = _PeakTensorBytes()
    with counter:
        trainer.train_step(next(iter(trainer.source.batches(cfg.train.batch_size, trainer.generator))))
    assert 0 < estimate.batch <= counter.peak, (estimate, counter.peak)


def _shipped():
    files = sorted(glob.glob(str(ROOT / "exps/json/*.json"))) + sorted(glob.glob(str(ROOT / "configs/**/*.yaml"),
                                                                                 recursive=True))
    base = str(ROOT / "configs/toy/base_config.yaml")
    return [[base, f] if "/toy/" in f and f != base else [f] for f in files]


@pytest.mark.parametrize("files", _shipped(), ids=lambda f: "+".join(p.split("/")[-1] for p in f))
def test_shipped_configs_fit_in_2_gib(files, volcano_dir):
    cfg = config.load(files, [])
    assert memory.training_problem(cfg, "cpu", data_dir=str(volcano_dir), available=_fixed(2 * GIB)) is None
    memory.check_training(cfg, torch.device("cpu"), Context(), str(volcano_dir), available=_fixed(2 * GIB))


def test_on_a_gpu_the_batch_is_compared_with_the_gpu_and_the_data_set_with_the_host():
    cfg = config.load([CI], ["resolution=1024", "grf_n_train=64", "grf_n_valid=32"])     # data 403 MB, batch 336 MB
    def have(host, gpu):
        return lambda device: host if device.type == "cpu" else gpu

    cuda = torch.device("cuda", 0)
    assert memory.training_problem(cfg, cuda, available=have(450 * 10 ** 6, 350 * 10 ** 6)) is None
    gpu = memory.training_problem(cfg, cuda, available=have(450 * 10 ** 6, 250 * 10 ** 6))
    assert "needs at least 335.5 MB (one batch and its noise 67.1 MB, the first layer's 8-channel activations " \
           "268.4 MB) but cuda:0 has 250.0 MB available" in gpu
    host = memory.training_problem(cfg, cuda, available=have(350 * 10 ** 6, 10 ** 12))
    assert "needs at least 402.7 MB (the data set 402.7 MB for 96 examples) but this machine has 350.0 MB" in host
    # on a CPU the two share one memory
    assert "needs at least 738.2 MB" in memory.training_problem(cfg, "cpu", available=_fixed(700 * 10 ** 6))


def test_unknown_memory_refuses_nothing():
    cfg = config.load([CI], ["resolution=100000"])
    assert memory.training_problem(cfg, "cpu", available=_fixed(None)) is None


def test_superres_with_a_huge_factor_is_refused_before_the_finer_data_set(capsys, tmp_path, trained, monkeypatch):
    run = trained("interpolant_grf")          # 8 px grf fields, 32 + 16 of them, eval.n_samples 16
    monkeypatch.setattr(memory, "available_bytes", _fixed(2 ** 36))
    code, lines = cli_exit(capsys, eval_script.main, "eval.py", "--exp_name", run, "--mode", "superres",
                           "--factor", "100000", "--savedir", tmp_path / "never")
    assert code == 2 and len(lines) == 1, lines
    # 48 x 800000^2 x 4 B = 122.9 TB; 16 samples 41.0 TB; one sample's 8-channel activation 20.5 TB
    assert lines[0] == (
        "eval.py: error: --factor 100000 (1 x 800000 x 800000 float32 per field): superres needs at least 184.3 TB "
        "(the data set 122.9 TB for 48 examples, the samples 41.0 TB for 16 fields, one sample's 8-channel first "
        "activation 20.5 TB) but this machine has 68.7 GB available; lower --factor or --Ntest")
    assert not (tmp_path / "never").exists() and not (run / "eval").exists()
    memory.check_superres(run, 2, None, "cpu")                          # the usual factor passes


# ------------------------------------------------------------------------------------------------ available_bytes
def _files(root, tree: dict):
    for name, text in tree.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


MEMINFO = "MemTotal:       65536000 kB\nMemFree:         1000000 kB\nMemAvailable:   20000000 kB\n"


def test_available_bytes_reads_meminfo_without_cgroup_limits(tmp_path):
    _files(tmp_path, {"meminfo": MEMINFO, "self": "0::/\n", "cg/cgroup.controllers": "cpu memory\n",
                      "cg/memory.max": "max\n", "cg/memory.current": "123\n"})
    assert memory.available_bytes("cpu", tmp_path / "meminfo", tmp_path / "cg", tmp_path / "self") == 20000000 * 1024
    assert memory.available_bytes("cpu", tmp_path / "meminfo", tmp_path / "none", tmp_path / "none") == \
        20000000 * 1024


def test_available_bytes_takes_the_tightest_cgroup_v2_limit_up_the_tree(tmp_path):
    """A Slurm job's limit sits on job_1 above the step's own cgroup (no limit there); its inactive page cache
    is reclaimable, so it counts as available."""
    _files(tmp_path, {"meminfo": MEMINFO, "self": "0::/job_1/step_0\n", "cg/cgroup.controllers": "memory\n",
                      "cg/job_1/memory.max": f"{8 * GIB}\n", "cg/job_1/memory.current": f"{6 * GIB}\n",
                      "cg/job_1/memory.stat": f"anon {5 * GIB}\ninactive_file {GIB}\n",
                      "cg/job_1/step_0/memory.max": "max\n", "cg/job_1/step_0/memory.current": f"{5 * GIB}\n"})
    assert memory.available_bytes("cpu", tmp_path / "meminfo", tmp_path / "cg", tmp_path / "self") == 3 * GIB
    # a cgroup that leaves more than MemAvailable: MemAvailable counts
    (tmp_path / "cg/job_1/memory.max").write_text(f"{100 * GIB}\n")
    assert memory.available_bytes("cpu", tmp_path / "meminfo", tmp_path / "cg", tmp_path / "self") == 20000000 * 1024


def test_available_bytes_reads_cgroup_v1(tmp_path):
    _files(tmp_path, {"meminfo": MEMINFO, "self": "5:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n",
                      "cg/memory/docker/abc/memory.limit_in_bytes": f"{4 * GIB}\n",
                      "cg/memory/docker/abc/memory.usage_in_bytes": f"{GIB}\n",
                      "cg/memory/memory.limit_in_bytes": "9223372036854771712\n",      # v1's "no limit"
                      "cg/memory/memory.usage_in_bytes": f"{30 * GIB}\n"})
    assert memory.available_bytes("cpu", tmp_path / "meminfo", tmp_path / "cg", tmp_path / "self") == 3 * GIB


def test_available_bytes_is_none_when_nothing_can_be_read(tmp_path):
    assert memory.available_bytes("cpu", tmp_path / "no", tmp_path / "no", tmp_path / "no") is None


def test_available_bytes_on_cuda_is_the_free_device_memory(monkeypatch):
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (123456, 999999))
    assert memory.available_bytes("cuda:0") == 123456


class _OtherRank(Context):
    """Rank 1 of two, told rank 0's verdict: refused (a broadcast without a process group)."""

    def broadcast_flag(self, flag: bool) -> bool:
        return True


def test_the_refusal_is_a_user_error_on_rank_0_and_a_silent_exit_elsewhere():
    cfg = config.load([CI], ["resolution=100000"])
    with pytest.raises(UserError, match="training needs at least"):
        memory.check_training(cfg, "cpu", Context(), available=_fixed(GIB))
    with pytest.raises(SystemExit) as stop:
        memory.check_training(cfg, "cpu", _OtherRank(rank=1, world_size=2), available=_fixed(100 * GIB))
    assert stop.value.code == 2


def test_a_run_saved_with_the_old_zero_meanings_still_loads():
    """Before the range checks train.threads=0 meant automatic and data.resolution=0 the data's own size: a saved
    run (its config.json, the config inside its checkpoints) keeps loading with those meanings."""
    saved = config.to_dict(config.load([ROOT / "exps/json/ci.json"]))
    saved["train"]["threads"], saved["data"]["resolution"] = 0, 0
    cfg = config.from_dict(saved)
    assert cfg.train.threads is None and cfg.data.resolution is None

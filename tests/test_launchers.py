"""Tests of the shell launchers in exps/ (env.sh, main.sh, launch_exp.sh,
launch_eval.sh) and of the Makefile's demo recipe.

No training happens: the launchers are copied into a small throw-away
repository under tmp_path, and `python` on PATH is a stub that records its
argv, working directory and a few environment variables, then exits with
$STUB_RC (default 0).  The environment is built from scratch, with
NO_VENV_ACTIVATE=1 so env.sh never puts a real .venv in front of the stub.
"""

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EXPS = REPO / "exps"
SCRIPTS = ["env.sh", "main.sh", "launch_exp.sh", "launch_eval.sh"]
BASH = shutil.which("bash") or "/bin/bash"
GIT = shutil.which("git")

STUB = """#!{python}
import json, os, sys
rec = {{"argv": sys.argv[1:], "cwd": os.getcwd(),
        "env": {{k: os.environ.get(k) for k in ("DATA_DIR", "SAVEDIR", "SLURM_JOB_ID")}}}}
with open(os.environ["STUB_LOG"], "a") as f:
    f.write(json.dumps(rec) + "\\n")
sys.exit(int(os.environ.get("STUB_RC", "0")))
"""


class Sandbox:
    """A fake repository with the real launchers and a stub `python`."""

    def __init__(self, tmp_path: Path):
        self.root = tmp_path / "repo"
        self.exps = self.root / "exps"
        (self.exps / "json").mkdir(parents=True)
        for name in SCRIPTS:
            shutil.copy2(EXPS / name, self.exps / name)
        (self.exps / "json" / "quick.json").write_text('{"epochs": 1}\n')
        # A system whose experiment is two YAML files merged in order (the toy's layout).
        (self.root / "configs" / "toy" / "fp").mkdir(parents=True)
        (self.root / "configs" / "toy" / "base.yaml").write_text("system: toy\n")
        (self.root / "configs" / "toy" / "fp" / "specific.yaml").write_text("regularizer:\n  kind: fokker_planck\n")
        (self.root / "train.py").write_text("print('train')\n")
        (self.root / "eval.py").write_text("print('eval')\n")
        (self.root / ".gitignore").write_text("/results/\n/data/*\n.venv/\n")
        self.bin = tmp_path / "bin"
        self.bin.mkdir()
        stub = self.bin / "python"    # records sys.argv[1:] = the script and its arguments
        stub.write_text(STUB.format(python=sys.executable))
        stub.chmod(stub.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        self.log = tmp_path / "calls.jsonl"
        self.savedir = tmp_path / "save"
        self.datadir = tmp_path / "datadir"
        self.home = tmp_path / "home"
        self.home.mkdir()

    def env(self, **extra):
        env = {
            "PATH": f"{self.bin}:/usr/local/bin:/usr/bin:/bin",
            "HOME": str(self.home),
            "LANG": "C",
            "NO_VENV_ACTIVATE": "1",
            "SAVEDIR": str(self.savedir),
            "DATA_DIR": str(self.datadir),
            "STUB_LOG": str(self.log),
            "GIT_CONFIG_NOSYSTEM": "1",
        }
        for k, v in extra.items():
            if v is None:
                env.pop(k, None)
            else:
                env[k] = str(v)
        return env

    def run(self, script, *args, cwd=None, **extra):
        cwd = self.exps if cwd is None else cwd
        return subprocess.run(
            [BASH, str(self.exps / script), *map(str, args)],
            cwd=cwd, env=self.env(**extra), capture_output=True, text=True, timeout=60,
        )

    def calls(self):
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def git(self, *args):
        subprocess.run(
            [GIT, "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false",
             *args],
            cwd=self.root, env=self.env(), check=True, capture_output=True, text=True,
        )


@pytest.fixture
def sb(tmp_path):
    return Sandbox(tmp_path)


def run_dirs(sb, name):
    d = sb.savedir / name
    return sorted(p for p in d.iterdir() if p.is_dir()) if d.exists() else []


# ---------------------------------------------------------------- main.sh ----

def test_scripts_parse_and_are_executable():
    for name in SCRIPTS:
        r = subprocess.run([BASH, "-n", str(EXPS / name)], capture_output=True, text=True)
        assert r.returncode == 0, (name, r.stderr)
    for path in [EXPS / "main.sh", EXPS / "launch_exp.sh", EXPS / "launch_eval.sh",
                 REPO / ".ci" / "run", REPO / "scripts" / "setup_venv.sh"]:
        assert os.access(path, os.X_OK), f"{path.name} is not executable"


def test_run_local_three_arg_form(sb):
    r = sb.run("main.sh", "sbgm", "exp1", "json/quick.json", "lr=0.1", "--quiet",
               RUN_LOCAL=1)
    assert r.returncode == 0, r.stderr
    (call,) = sb.calls()
    run = Path(call["argv"][4])            # RUN_LOCAL: train.py creates (and holds) the folder itself
    assert run.parent == sb.savedir / "exp1"
    assert call["argv"] == ["train.py", "--config", str(sb.exps / "json" / "quick.json"),
                            "--savedir", str(run), "lr=0.1", "--quiet"]
    assert Path(call["cwd"]) == sb.root            # runs from the repo root
    assert call["env"]["DATA_DIR"] == str(sb.datadir)
    assert call["env"]["SAVEDIR"] == str(sb.savedir)
    assert f"run folder: {run}" in r.stdout
    assert not (run / "code").exists()             # RUN_LOCAL: no copy


def test_two_arg_form_from_repo_root(sb):
    r = sb.run("main.sh", "exp2", "exps/json/quick.json", cwd=sb.root, RUN_LOCAL=1)
    assert r.returncode == 0, r.stderr
    (call,) = sb.calls()
    run = Path(call["argv"][4])
    assert call["argv"][:5] == ["train.py", "--config", str(sb.exps / "json" / "quick.json"),
                                "--savedir", str(run)]
    assert run.parent == sb.savedir / "exp2"


def test_several_config_files_and_overrides_in_place(sb):
    """Every file up to the first key=value is a config (merged in order by train.py), each looked
    up from the cwd first, then from exps/; the rest goes to train.py unchanged."""
    base, specific = sb.root / "configs/toy/base.yaml", sb.root / "configs/toy/fp/specific.yaml"
    r = sb.run("main.sh", "sbgm", "multi", "configs/toy/base.yaml", "configs/toy/fp/specific.yaml",
               "json/quick.json", "train.steps=5", "net.unet.channel_mult=[1,2]", "--quiet",
               cwd=sb.root, RUN_LOCAL=1)
    assert r.returncode == 0, r.stderr
    (call,) = sb.calls()
    run = Path(call["argv"][6])
    assert run.parent == sb.savedir / "multi"
    assert call["argv"] == ["train.py", "--config", str(base), str(specific), str(sb.exps / "json" / "quick.json"),
                            "--savedir", str(run), "train.steps=5", "net.unet.channel_mult=[1,2]", "--quiet"]
    assert Path(call["cwd"]) == sb.root
    # From exps/: the same YAML files by a path relative to the cwd.
    r = sb.run("main.sh", "multi", "../configs/toy/base.yaml", "../configs/toy/fp/specific.yaml", "a=1",
               RUN_LOCAL=1)
    assert r.returncode == 0, r.stderr
    assert sb.calls()[1]["argv"][:4] == ["train.py", "--config", str(base), str(specific)]
    assert sb.calls()[1]["argv"][-1] == "a=1"


def test_a_missing_second_config_file_exits_2_before_anything_runs(sb):
    r = sb.run("main.sh", "sbgm", "m", "json/quick.json", "json/nope.yaml", "a=1", RUN_LOCAL=1)
    assert r.returncode == 2 and "config file 'json/nope.yaml' not found" in r.stderr, r.stderr
    assert sb.calls() == [] and not sb.savedir.exists()


def test_json_outside_repo_absolute_path(sb, tmp_path):
    cfg = tmp_path / "elsewhere.json"
    cfg.write_text("{}")
    r = sb.run("main.sh", "sbgm", "e", cfg, RUN_LOCAL=1)
    assert r.returncode == 0, r.stderr
    assert sb.calls()[0]["argv"][2] == str(cfg)


def test_run_id_is_unique_without_slurm(sb):
    for _ in range(2):
        r = sb.run("main.sh", "sbgm", "u", "json/quick.json", RUN_LOCAL=1)
        assert r.returncode == 0, r.stderr
    saved = [c["argv"][4] for c in sb.calls()]
    assert saved[0] != saved[1] and all(Path(s).parent == sb.savedir / "u" for s in saved)


def test_slurm_job_id_names_the_folder(sb):
    r = sb.run("main.sh", "sbgm", "s", "json/quick.json", RUN_LOCAL=1, SLURM_JOB_ID=123)
    assert r.returncode == 0, r.stderr
    savedir = sb.calls()[0]["argv"][4]
    assert savedir == str(sb.savedir / "s" / "123")
    assert savedir.endswith("/123")


def test_exit_code_of_python_is_propagated(sb):
    r = sb.run("main.sh", "sbgm", "rc", "json/quick.json", RUN_LOCAL=1, STUB_RC=3)
    assert r.returncode == 3


def test_gano_method_trains_the_adversarial_process_of_the_same_config(sb):
    """`main.sh gano NAME FILE` is `process.type=adversarial` after the files; the user's key=value still wins."""
    r = sb.run("main.sh", "gano", "g", "json/quick.json", "net.width=8", "--quiet", RUN_LOCAL=1)
    assert r.returncode == 0, r.stderr
    (call,) = sb.calls()
    run = Path(call["argv"][4])
    assert run.parent == sb.savedir / "g"
    assert call["argv"] == ["train.py", "--config", str(sb.exps / "json" / "quick.json"), "--savedir", str(run),
                            "process.type=adversarial", "net.width=8", "--quiet"]
    r = sb.run("main.sh", "sbgm", "s", "json/quick.json", RUN_LOCAL=1)
    assert "process.type=adversarial" not in sb.calls()[1]["argv"]


@pytest.mark.parametrize("args", [(), ("onlyname",), ("sbgm",), ("sbgm", "name"),
                                  ("--help",)])
def test_bad_usage_exits_2(sb, args):
    r = sb.run("main.sh", *args, RUN_LOCAL=1)
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1
    assert "usage" in r.stderr
    assert sb.calls() == []


def test_missing_json_and_bad_name_exit_2(sb):
    r = sb.run("main.sh", "sbgm", "x", "json/nope.json", RUN_LOCAL=1)
    assert r.returncode == 2 and "not found" in r.stderr
    r = sb.run("main.sh", "sbgm", "a/b", "json/quick.json", RUN_LOCAL=1)
    assert r.returncode == 2 and "bad experiment name" in r.stderr
    assert sb.calls() == []


@pytest.mark.skipif(GIT is None, reason="git not installed")
def test_copy_mode_in_git_checkout(sb):
    sb.git("init", "-q")
    sb.git("add", "-A")
    sb.git("commit", "-q", "-m", "init")
    head = subprocess.run([GIT, "rev-parse", "HEAD"], cwd=sb.root, capture_output=True,
                          text=True, check=True).stdout.strip()
    (sb.root / "train.py").write_text("print('edited')\n")     # uncommitted change
    (sb.root / "newmod.py").write_text("X = 1\n")              # untracked, not ignored
    (sb.root / "results").mkdir()
    (sb.root / "results" / "junk.txt").write_text("ignored")   # git-ignored

    r = sb.run("main.sh", "sbgm", "c", "json/quick.json", SLURM_JOB_ID=77)
    assert r.returncode == 0, r.stderr
    run = sb.savedir / "c" / "77"
    code = run / "code"
    (call,) = sb.calls()
    assert Path(call["cwd"]) == code
    assert call["argv"] == ["train.py", "--config", str(code / "exps" / "json" / "quick.json"),
                            "--savedir", str(run)]
    assert (code / "train.py").read_text() == "print('edited')\n"
    assert (code / "newmod.py").exists()
    assert (code / "exps" / "main.sh").exists()
    assert not (code / ".git").exists()
    assert not (code / "results").exists()
    assert (run / "git_commit.txt").read_text().strip() == head
    patch = (run / "git_diff.patch").read_text()
    assert "+print('edited')" in patch
    assert "newmod.py" in (run / "git_status.txt").read_text()

    # A requeued job (same SLURM_JOB_ID) reuses the copy it started with.
    (sb.root / "train.py").write_text("print('edited again')\n")
    r = sb.run("main.sh", "sbgm", "c", "json/quick.json", SLURM_JOB_ID=77)
    assert r.returncode == 0, r.stderr
    assert "reusing" in r.stdout
    assert (code / "train.py").read_text() == "print('edited')\n"


def test_copy_mode_runs_every_config_file_from_the_copy(sb, tmp_path):
    """Files inside the checkout are read from the code copy (a requeued job reads what it was
    submitted with); a file outside it keeps its absolute path."""
    outside = tmp_path / "mine.yaml"
    outside.write_text("train:\n  steps: 3\n")
    r = sb.run("main.sh", "sbgm", "cm", "configs/toy/base.yaml", "configs/toy/fp/specific.yaml", str(outside),
               "train.steps=4", "--quiet", cwd=sb.root, SLURM_JOB_ID=88)
    assert r.returncode == 0, r.stderr
    run = sb.savedir / "cm" / "88"
    code = run / "code"
    (call,) = sb.calls()
    assert Path(call["cwd"]) == code
    assert call["argv"] == ["train.py", "--config", str(code / "configs/toy/base.yaml"),
                            str(code / "configs/toy/fp/specific.yaml"), str(outside), "--savedir", str(run),
                            "train.steps=4", "--quiet"]
    assert (code / "configs/toy/fp/specific.yaml").read_text() == "regularizer:\n  kind: fokker_planck\n"


def test_copy_mode_without_git(sb):
    (sb.root / ".venv" / "bin").mkdir(parents=True)
    (sb.root / ".venv" / "bin" / "big").write_text("x")
    r = sb.run("main.sh", "sbgm", "ng", "json/quick.json", SLURM_JOB_ID=5,
               GIT_CEILING_DIRECTORIES=str(sb.root.parent))
    assert r.returncode == 0, r.stderr
    run = sb.savedir / "ng" / "5"
    assert (run / "git_commit.txt").read_text().strip() == "not a git checkout"
    assert (run / "git_diff.patch").exists()
    assert (run / "code" / "train.py").exists()
    assert not (run / "code" / ".venv").exists()
    assert Path(sb.calls()[0]["cwd"]) == run / "code"


# ----------------------------------------------------------------- env.sh ----

def _source_env(sb, **extra):
    cmd = f'source "{sb.exps / "env.sh"}"; echo "$SAVEDIR"; echo "$DATA_DIR"; ' \
          'echo "${VIRTUAL_ENV:-none}"'
    r = subprocess.run([BASH, "-c", cmd], cwd=sb.home, env=sb.env(**extra),
                       capture_output=True, text=True, check=True)
    return r.stdout.splitlines()


def test_env_defaults_and_overrides(sb):
    save, data, _ = _source_env(sb, SAVEDIR=None, DATA_DIR=None)
    assert save == str(sb.root / "results") and data == str(sb.root / "data")
    save, data, _ = _source_env(sb, SAVEDIR="/x/s", DATA_DIR="/x/d")
    assert (save, data) == ("/x/s", "/x/d")
    save, data, _ = _source_env(sb, SAVEDIR="rel/s", DATA_DIR="rel/d")
    assert save == str(sb.home / "rel" / "s") and data == str(sb.home / "rel" / "d")


def test_env_activates_repo_venv_only_when_appropriate(sb):
    act = sb.root / ".venv" / "bin" / "activate"
    act.parent.mkdir(parents=True)
    act.write_text(f'export VIRTUAL_ENV="{sb.root / ".venv"}"\n')
    assert _source_env(sb, NO_VENV_ACTIVATE=None)[2] == str(sb.root / ".venv")
    assert _source_env(sb, NO_VENV_ACTIVATE=1)[2] == "none"
    assert _source_env(sb, NO_VENV_ACTIVATE=None, VIRTUAL_ENV="/other")[2] == "/other"
    assert _source_env(sb, NO_VENV_ACTIVATE=None, CONDA_PREFIX="/c",
                       CONDA_DEFAULT_ENV="mine")[2] == "none"


# ----------------------------------------------------------- launch_exp.sh ----

def _sbatch_headers(path):
    heads = {}
    for line in path.read_text().splitlines():
        if line.startswith("#SBATCH"):
            opt = line.split()[1]
            key, _, val = opt.partition("=")
            heads[key] = val
    return heads


def test_launch_exp_has_sbatch_headers():
    heads = _sbatch_headers(EXPS / "launch_exp.sh")
    for key in ["--job-name", "--output", "--time", "--gres", "--mem", "--cpus-per-task"]:
        assert heads.get(key), f"missing #SBATCH {key}"
    assert heads["--gres"].startswith("gpu:")
    assert heads["--signal"].startswith("B:USR1@") and "--requeue" in heads and heads["--open-mode"] == "append"
    # every header is commented: the line above each #SBATCH is a comment
    lines = (EXPS / "launch_exp.sh").read_text().splitlines()
    for i, line in enumerate(lines):
        if line.startswith("#SBATCH"):
            assert lines[i - 1].startswith("# "), f"no comment above: {line}"
    assert _sbatch_headers(EXPS / "launch_eval.sh").keys() >= {"--time", "--gres", "--mem"}


def test_launch_exp_with_bash_runs_main(sb):
    r = sb.run("launch_exp.sh", "sbgm", "le", "json/quick.json", "a=1", RUN_LOCAL=1)
    assert r.returncode == 0, r.stderr
    (call,) = sb.calls()
    assert call["argv"][0] == "train.py" and call["argv"][-1] == "a=1"
    assert Path(call["argv"][4]).parent == sb.savedir / "le"


def test_launch_exp_requeues_the_job_when_train_py_exits_3(sb):
    """Exit 3 is train.py's "stopped by a signal, model.pt written": the job asks Slurm to requeue
    itself (a stub scontrol records the call) and ends 0; without Slurm the 3 is passed on."""
    scontrol = sb.bin / "scontrol"
    scontrol.write_text(f'#!{BASH}\necho "$@" >> "{sb.bin}/scontrol.log"\n')
    scontrol.chmod(0o755)
    r = sb.run("launch_exp.sh", "sbgm", "rq", "json/quick.json", RUN_LOCAL=1, STUB_RC=3, SLURM_JOB_ID=321)
    assert r.returncode == 0, r.stderr
    assert "job 321 requeued" in r.stdout
    assert (sb.bin / "scontrol.log").read_text().split() == ["requeue", "321"]
    r = sb.run("launch_exp.sh", "sbgm", "rq", "json/quick.json", RUN_LOCAL=1, STUB_RC=3)
    assert r.returncode == 3
    assert (sb.bin / "scontrol.log").read_text().split() == ["requeue", "321"]


@pytest.mark.parametrize("submit_from_root", [False, True])
def test_launch_exp_as_slurm_copy(sb, tmp_path, submit_from_root):
    # Slurm runs a copy of the script from its spool directory; the launcher
    # must find main.sh through SLURM_SUBMIT_DIR (exps/ or the repo root).
    spool = tmp_path / "spool"
    spool.mkdir()
    shutil.copy2(sb.exps / "launch_exp.sh", spool / "slurm_script")
    submit = sb.root if submit_from_root else sb.exps
    cfg = "exps/json/quick.json" if submit_from_root else "json/quick.json"
    r = subprocess.run(
        [BASH, str(spool / "slurm_script"), "sbgm", "sl", cfg],
        cwd=spool, env=sb.env(RUN_LOCAL=1, SLURM_JOB_ID=999, SLURM_SUBMIT_DIR=submit),
        capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    (call,) = sb.calls()
    assert call["argv"][2] == str(sb.exps / "json" / "quick.json")
    assert call["argv"][4] == str(sb.savedir / "sl" / "999")


def test_launch_exp_as_slurm_copy_with_several_config_files(sb, tmp_path):
    spool = tmp_path / "spool"
    spool.mkdir()
    shutil.copy2(sb.exps / "launch_exp.sh", spool / "slurm_script")
    r = subprocess.run(
        [BASH, str(spool / "slurm_script"), "sbgm", "ty", "configs/toy/base.yaml", "configs/toy/fp/specific.yaml",
         "train.steps=2"],
        cwd=spool, env=sb.env(RUN_LOCAL=1, SLURM_JOB_ID=998, SLURM_SUBMIT_DIR=sb.root),
        capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    (call,) = sb.calls()
    assert call["argv"] == ["train.py", "--config", str(sb.root / "configs/toy/base.yaml"),
                            str(sb.root / "configs/toy/fp/specific.yaml"), "--savedir",
                            str(sb.savedir / "ty" / "998"), "train.steps=2"]


# ---------------------------------------------------------- launch_eval.sh ----

def test_launch_eval_builds_eval_command(sb):
    run = sb.savedir / "e" / "42"
    run.mkdir(parents=True)
    r = sb.run("launch_eval.sh", "sbgm", "e/42", "--mode=generate",
               "--checkpoint=model.w_total.pt")
    assert r.returncode == 0, r.stderr
    (call,) = sb.calls()
    assert call["argv"] == ["eval.py", f"--exp_name={run}", f"--savedir={run}/eval",
                            "--mode=generate", "--checkpoint=model.w_total.pt"]
    assert call["argv"][1].endswith("e/42")
    assert Path(call["cwd"]) == sb.root
    assert call["env"]["DATA_DIR"] == str(sb.datadir)


def test_launch_eval_method_less_and_latest_run(sb):
    old = sb.savedir / "e" / "1"
    new = sb.savedir / "e" / "2"
    for d in (old, new):
        d.mkdir(parents=True)
        (d / "config.json").write_text("{}")
    os.utime(old / "config.json", (1, 1))
    r = sb.run("launch_eval.sh", "e", "--mode=plot")
    assert r.returncode == 0, r.stderr
    assert sb.calls()[0]["argv"][1] == f"--exp_name={new}"


def test_launch_eval_errors(sb):
    r = sb.run("launch_eval.sh", "gano", "e/1", "--mode=plot")
    assert r.returncode == 2 and "no run folder" in r.stderr
    r = sb.run("launch_eval.sh", "sbgm", "missing/1", "--mode=plot")
    assert r.returncode == 2 and "no run folder" in r.stderr
    r = sb.run("launch_eval.sh")
    assert r.returncode == 2 and "usage" in r.stderr
    assert sb.calls() == []


# --------------------------------------------------------------- Makefile ----

@pytest.mark.skipif(shutil.which("make") is None, reason="make not installed")
def test_make_demo_recipe():
    r = subprocess.run(["make", "-n", "demo", "SAVEDIR=/tmp/x", "DATA_DIR=/tmp/d"],
                       cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "scripts/make_volcano.py" in out and "--n 256 --seed 0" in out
    # make_volcano.py writes subset_128/synthetic/*.int: the "data present?"
    # check must look below subset_128, or a second `make demo` would call it
    # again and fail (it refuses to overwrite).
    assert "find \"$DATA_DIR/subset_128\" -name '*.int'" in out
    assert "RUN_LOCAL=1" in out and "SLURM_JOB_ID=" in out
    assert "exps/main.sh sbgm demo exps/json/quickstart.json" in out
    for mode in ("--mode=generate", "--mode=superres --factor=2", "--mode=plot"):
        assert mode in out
    assert "date +%Y%m%d-%H%M%S" in out                 # never a constant run id
    r = subprocess.run(["make", "help"], cwd=REPO, capture_output=True, text=True)
    for target in ("venv", "test", "demo", "bench", "clean"):
        assert target in r.stdout

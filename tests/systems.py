"""Tiny configurations of every system, shared by the tests of behaviour all systems have in common.

Each entry (seven systems: VE, interpolant, heat, a linear map, the toy, the starter, GANO): the config files and key=value overrides of a run that trains in seconds on one
core. `train_args(name, savedir, *extra)` is the train.py argument list. VE volcano needs the
synthetic volcano data (the `volcano_dir` fixture in conftest.py, passed as DATA_DIR).
"""
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_FIELD_NET = ["net.type=fno", "net.width=8", "net.n_layers=2", "net.n_modes=4", "net.embedding_dim=16"]
_UNET = ["net.unet.model_channels=8", "net.unet.channel_mult=[1,2]", "net.unet.num_res_blocks=1",
         "net.unet.num_heads=1", "net.unet.dropout=0.0"]
_STEPS = ["train.epochs=null", "train.steps=12", "train.log_interval=3", "train.record_interval=6",
          "train.checkpoint_interval=3", "eval.n_samples=16", "eval.batch_size=16", "eval.n_plot=4",
          "train.tensorboard=false", "train.device=cpu"]

SYSTEMS = {
    "ve_volcano": (["exps/json/quickstart.json"],
                   ["resolution=16", "max_examples=40", "batch_size=8", "epochs=3", "record_interval=3",
                    "Ntest=16", "val_batch_size=16", "L=6", "T=1", "n_plot=4", "tensorboard=false", "device=cpu",
                    *_FIELD_NET]),
    "interpolant_grf": (["exps/json/ffm-grf.json"],
                        ["resolution=8", "grf_n_train=32", "grf_n_valid=16", "batch_size=8", "epochs=3",
                         "record_interval=3", "Ntest=16", "val_batch_size=16", "ode_steps=4", "n_plot=4",
                         "max_minutes=null", "tensorboard=false", "device=cpu", "d_co_domain=8", "n_modes=3",
                         "n_layers=2", "embedding_dim=16"]),
    "heat_digits": (["configs/digits/default_digits_configs.yaml"],
                    ["process.levels.K=4", "data.max_examples=64", "train.batch_size=16", "eval.n_valid=16",
                     "eval.evaluators=[elbo]", *_UNET, *_STEPS]),
    "linear_digits": (["configs/digits/digits_fixed_random.yaml"],
                      ["process.levels.K=4", "data.max_examples=64", "train.batch_size=16", "eval.n_valid=16",
                       "eval.evaluators=[elbo]", *_UNET, *_STEPS]),
    "toy": (["configs/toy/base_config.yaml", "configs/toy/fokker_planck/specific_config.yaml"],
            ["net.mlp.hidden=16", "net.mlp.depth=2", "objective.regularizer.burn_in=3", "sampler.steps=10",
             "train.batch_size=16", *_STEPS]),
    "starter_digits": (["configs/starter/rectified_flow_digits.yaml"],
                       ["data.max_examples=64", "train.batch_size=16", "sampler.steps=3", "eval.evaluators=[]",
                        *_UNET, *_STEPS]),
    "gano_grf": (["configs/gano/grf_32px.yaml"],
                 ["data.resolution=8", "data.grf_n_train=32", "data.grf_n_valid=16", "train.batch_size=8",
                  "train.epochs=3", "train.record_interval=3", "train.max_minutes=null", "eval.n_samples=16",
                  "eval.batch_size=16", "eval.n_plot=4", "process.adversarial.n_critic=2", "net.width=4",
                  "net.channel_multipliers=[1,2]", "net.n_modes=3", "net.embedding_dim=8",
                  "process.adversarial.kernel_width=4", "train.tensorboard=false", "train.device=cpu"]),
}


def method(name):
    """The launcher's method word of a system (main.sh / launch_exp.sh): gano for the adversarial baseline."""
    return "gano" if name.startswith("gano") else "sbgm"


def train_args(name, savedir, *extra):
    files, overrides = SYSTEMS[name]
    return ["--config", *[str(ROOT / f) for f in files], "--savedir", str(savedir), "--quiet", *overrides, *extra]

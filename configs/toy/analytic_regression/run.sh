#!/usr/bin/env bash
# Train the toy experiment 'analytic_regression' locally (base_config.yaml + specific_config.yaml -> runs/toy/analytic_regression).
# Extra arguments are key=value overrides, e.g. train.steps=500; WORKDIR=... changes the folder.
# TensorBoard (the seed's `tensorboard --logdir output`): the events are in <run folder>/tb, and train.py
# prints the command when it starts: tensorboard --logdir runs/toy/analytic_regression/tb --samples_per_plugin images=99999
exec bash "$(dirname "${BASH_SOURCE[0]}")/../run_experiment.sh" "$(dirname "${BASH_SOURCE[0]}")" "$@"

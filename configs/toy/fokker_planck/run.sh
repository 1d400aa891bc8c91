#!/usr/bin/env bash
# Train the toy experiment 'fokker_planck' locally (base_config.yaml + specific_config.yaml -> runs/toy/fokker_planck).
# Extra arguments are key=value overrides, e.g. train.steps=500; WORKDIR=... changes the folder.
exec bash "$(dirname "${BASH_SOURCE[0]}")/../run_experiment.sh" "$(dirname "${BASH_SOURCE[0]}")" "$@"

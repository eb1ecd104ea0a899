#!/usr/bin/env bash
# The README's figures: every plot of an evaluated MNIST run (default: the shipped fast model).
# Usage: bash docs/make_figures.sh [RUN] [MNIST_DIR]
set -euo pipefail
run=${1:-models/mnist-fast}
data_dir=${2:-../shared/data/mnist}
for what in curves identity kl samples recon interp traverse latent; do
    vaekit plot "$run" --what "$what" --data-dir "$data_dir" -o "docs/figures/$what.png"
done

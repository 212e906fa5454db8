#!/usr/bin/env bash
# Regenerates results/examples/ (the example plan and report of the Quickstart's `comet-dse tune`) from fresh studies.
# Usage, from anywhere in the repository with comet-dse installed: benchmarks/make_examples.sh
set -euo pipefail
cd "$(dirname "$0")/.."

name=mixtral-8x7b-h800-ep8-tp1
db=results/studies/examples-$name.db
mkdir -p results/studies
rm -f "$db"  # from scratch: a study left by an earlier run with more trials would change the answer
# the Quickstart's defaults (Mixtral-8x7B, H800, EP=8, 50 trials per bucket); only the outputs move
comet-dse tune --storage "sqlite:///$db" --plan-dir results/examples --report "results/examples/$name.html"
echo "regenerated results/examples/$name.json and results/examples/$name.html (by benchmarks/make_examples.sh)"

#!/bin/bash
# A whole `smec compare` experiment on SLURM: prepare (embed + baselines) → one array task per (method, seed)
# fit → the report, chained with dependencies. Every step is resumable, so resubmitting after a failure
# continues from what finished.
#
#   experiments/slurm/compare.sh configs/experiment/full.yaml [extra sbatch options, e.g. --partition=gpu]
set -euo pipefail
EXP=${1:?usage: experiments/slurm/compare.sh <experiment.yaml> [sbatch options]}
shift
NAME=$(python -c "import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))['name'])" "$EXP")
TASKS=$(smec compare --config "$EXP" --list | wc -l)
mkdir -p runs/slurm
COMMON=(--parsable --output="runs/slurm/%x-%A_%a.out" --open-mode=append "$@")
PREP=$(sbatch "${COMMON[@]}" --job-name="$NAME-prepare" --cpus-per-task=8 --mem=64G --time=04:00:00 \
  --wrap "smec compare --config $EXP --prepare --no-progress")
FITS=$(sbatch "${COMMON[@]}" --job-name="$NAME-fit" --dependency="afterok:$PREP" --array="0-$((TASKS - 1))" \
  --gpus-per-node=1 --cpus-per-task=8 --mem=64G --time=04:00:00 --requeue --signal=SIGUSR1@90 \
  --wrap "smec compare --config $EXP --task \$SLURM_ARRAY_TASK_ID --jobs 1 --no-progress")
REPORT=$(sbatch "${COMMON[@]}" --job-name="$NAME-report" --dependency="afterok:$FITS" --cpus-per-task=8 \
  --mem=64G --time=01:00:00 --wrap "smec compare --config $EXP --no-progress")
echo "prepare $PREP -> fits $FITS (array of $TASKS) -> report $REPORT; logs in runs/slurm/"

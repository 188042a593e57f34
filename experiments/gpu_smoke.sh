#!/usr/bin/env bash
# The 2-GPU smoke, to run first on a rented machine (docs/paper_scale.md, "The 2-GPU smoke"):
# `accelerate launch` of 2 processes, FSDP2 with 2 micro-steps a step, the JEPA arm at smoke size
# (16 steps, a resume point every 2):
#   1. `train`, uninterrupted: the reference;
#   2. `train` into another folder, every process killed (SIGKILL) once a resume point at update 4
#      or later is complete;
#   3. `sample-efficiency` on that folder: resumes the run from its last complete resume point,
#      finishes it, evaluates both milestones;
#   4. checks: the resumed run equals the reference (compare-runs: log, states, weights), one resume
#      point left and no half-written folder, run.log written by rank 0 alone, the layout recorded
#      as FSDP2 over 2 processes, the lock released, both milestones evaluated. PASS (exit 0) or FAIL.
# The device kind is the one parameter: `gpu` on 2 GPUs (NCCL); `cpu` the same launches on 2 CPU
# processes (gloo), as tests/test_gpu_smoke.py runs it.
#
# usage: experiments/gpu_smoke.sh gpu|cpu [OUT] [key=value ...]
#   OUT: runs/gpu_smoke (replaced); key=value: config overrides for every command;
#   PYTHON: the interpreter (python); SMOKE_ATOL: compare-runs' tolerance (cpu 0, gpu 1e-4)
set -euo pipefail
cd "$(dirname "$0")/.."

kind=${1:-}
py=${PYTHON:-python}
case $kind in
  gpu) atol=${SMOKE_ATOL:-1e-4}  # CUDA kernels (attention backward, TF32) are not bitwise repeatable
       gpus=$("$py" -c 'import torch; print(torch.cuda.device_count())')
       if (( gpus < 2 )); then echo "experiments/gpu_smoke.sh gpu: needs 2 CUDA devices, sees $gpus" >&2; exit 2; fi ;;
  cpu) atol=${SMOKE_ATOL:-0}
       export CUDA_VISIBLE_DEVICES="" ;;  # on a GPU machine too: the gloo run
  *) echo "usage: experiments/gpu_smoke.sh gpu|cpu [OUT] [key=value ...]" >&2; exit 2 ;;
esac
out=${2:-runs/gpu_smoke}
shift $(( $# < 2 ? $# : 2 ))
# one launch config for both kinds: without CUDA, accelerate's multi-GPU launcher (torchrun) starts
# the same 2 processes and the suite joins them with gloo
launch_config=experiments/accelerate/gpu_1x2.yaml
arm=jepa  # GradCache's coupled step: gathers across processes and replays the RNG in its second pass
# 16 steps of 32 samples, 2 micro-batches of 8 per process and step
config=(-c experiments/configs/smoke.yaml "arms=[$arm]" train.parallel=fsdp2 train.micro_batch=8
        "train.milestones=[128,512]" train.resume_every=2 train.log_every=2 "$@")
straight=$out/straight
killed=$out/killed/runs/$arm/seed0  # where stage 3's sample-efficiency keeps the arm's run

free_port() { "$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
launch() {  # a free port each time: a killed launch may leave its port in TIME_WAIT
  "$py" -m accelerate.commands.launch --config_file "$launch_config" --main_process_port "$(free_port)" \
    -m experiments "$@"
}
saved_4() {  # a complete resume point at update 4 or later (update_<N>: neither .tmp nor .old)
  local p
  for p in "$killed"/resume/update_*[0-9]; do
    [[ -f $p/train_state.json && $((10#${p##*update_})) -ge 4 ]] && return 0
  done
  return 1
}
tree() { local c; for c in $(ps -o pid= --ppid "$1"); do echo "$c"; tree "$c"; done; }

rm -rf "$out"
echo "== 1/4 uninterrupted training (the reference): $straight"
launch train --arm $arm "${config[@]}" -o "$straight"

echo "== 2/4 the same training, killed after its resume point at update 4: $killed ($SECONDS s)"
launch train --arm $arm "${config[@]}" -o "$killed" &
pid=$!
until saved_4 || ! kill -0 $pid 2> /dev/null; do sleep 0.05; done
# the launcher and both workers at once, by id (torchrun starts each worker in a session of its own,
# a process group would miss them): no clean exit, no lock released, maybe a save cut short
victims=$(echo $pid; tree $pid)
kill -KILL $victims 2> /dev/null || true
wait $pid 2> /dev/null || true
while ps -o pid= -p "$(echo $victims | tr ' ' ,)" > /dev/null; do sleep 0.1; done
if ! saved_4 || [[ -f $killed/done.json ]]; then
  echo "FAIL: the run was not killed between its resume point at update 4 and its end (see above)"; exit 1
fi
echo "killed; left in $killed/resume: $(ls "$killed/resume" | tr '\n' ' ')"

echo "== 3/4 sample-efficiency on it: resumes, finishes, evaluates ($SECONDS s)"
launch sample-efficiency "${config[@]}" -o "$out/killed"

echo "== 4/4 checks ($SECONDS s)"
"$py" - "$out/killed" "$killed" <<'PY'
import json, sys
from pathlib import Path
out, run = Path(sys.argv[1]), Path(sys.argv[2])
failed = []
def check(ok, what):
    print(("ok   " if ok else "FAIL ") + what)
    failed.extend([] if ok else [what])
points = sorted(p.name for p in (run / "resume").iterdir())
check(len(points) == 1 and points[0].startswith("update_"), f"one resume point left: {points}")
check(not list(run.rglob("*.tmp")), "no half-written folder")
log = (out / "run.log").read_text()
check(log.count("resuming from step") == 1 and "[rank" not in log, "run.log written by rank 0 alone: one resume line")
layouts = json.loads((run / "precision.json").read_text())["layouts"]
check([(r["layout"], r["processes"]) for r in layouts] == [("fsdp2", 2)], f"trained as fsdp2 x 2 processes: {layouts}")
check(not (run / ".lock").exists(), "lock released")
rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
check([r["milestone"] for r in rows] == [128, 512], f"evaluated milestones {[r['milestone'] for r in rows]}: "
      + " ".join(f"{k}={rows[-1].get(k, float('nan')):.4g}" for k in ("train_loss", "cider", "top1", "recall1")))
sys.exit(1 if failed else 0)
PY
echo "the resumed run against the reference (compare-runs, atol $atol):"
"$py" -m experiments compare-runs "$straight" "$killed" --atol "$atol"
echo "PASS ($SECONDS s)"

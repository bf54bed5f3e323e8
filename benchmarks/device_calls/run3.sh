#!/bin/bash
# issue 13, device call 3: the replays that call 2's time limits cut short, again, with the
# time they need (no profile for the eager engines: call 2 profiled them; a 15 s profile before
# the CUDA-graph engine's replays so that its graphs are captured as they were in call 2).
set -u
export PYTHONUNBUFFERED=1
R=/tmp/r13c; rm -rf $R; mkdir -p $R
HERE="$(cd "$(dirname "$0")" && pwd)"
cd "$HERE/harness"
pack() { tar czf "$OUT/replays.tgz" -C $R . 2>/dev/null; }
T0=$(date +%s)
nvidia-smi --query-gpu=timestamp,clocks.sm,clocks.mem,power.draw,utilization.gpu,temperature.gpu --format=csv -lms 500 > $R/clocks.csv 2>/dev/null &
SMI=$!
ph() { echo "[$(( $(date +%s) - T0 ))s] $*"; }
S=../segments
ph 7b-eager
timeout 110 python3 -m engine_profile all --out $R/llama-2-7b-eager --model llama-2-7b --num-blocks 256 \
  --max-batch-tokens 8192 --max-context 4096 --profile-budget-s 0 --total-budget-s 106 \
  --replay llama-2-7b-eager-code-mod:1.5:24:$S/code-a.csv --replay llama-2-7b-eager-conv-mod:1.0:16:$S/conv-a.csv \
  --replay llama-2-7b-eager-conv-over:4.0:32:$S/conv-b.csv > $R/llama-2-7b-eager.log 2>&1
ph "rc=$?"; pack
ph 8b-graphs
timeout 100 python3 -m engine_profile all --out $R/llama-3-8b-graphs --model llama-3-8b --num-blocks 256 \
  --max-batch-tokens 8192 --max-context 8192 --profile-budget-s 15 --total-budget-s 96 --cuda-graphs --q-padding 256 \
  --replay llama-3-8b-graphs-code-mod:1.5:24:$S/code-a8k.csv --replay llama-3-8b-graphs-conv-mod:1.2:16:$S/conv-a8k.csv \
  --replay llama-3-8b-graphs-code-over:8:32:$S/code-b8k.csv > $R/llama-3-8b-graphs.log 2>&1
ph "rc=$?"; pack
ph 8b-eager
timeout 150 python3 -m engine_profile all --out $R/llama-3-8b-eager --model llama-3-8b --num-blocks 256 \
  --max-batch-tokens 8192 --max-context 8192 --profile-budget-s 0 --total-budget-s 145 \
  --replay llama-3-8b-eager-code-mod:1.2:24:$S/code-a8k.csv --replay llama-3-8b-eager-code-over:6:32:$S/code-b8k.csv \
  --replay llama-3-8b-eager-conv-mod:0.8:10:$S/conv-a8k.csv --replay llama-3-8b-eager-conv-over:4.0:24:$S/conv-b8k.csv > $R/llama-3-8b-eager.log 2>&1
ph "rc=$?"
kill $SMI 2>/dev/null
pack
grep -h "engine up\|profile:\|replay \|finished\|iterations,\|Error\|error\|deadline" $R/*.log | tail -40
ph done

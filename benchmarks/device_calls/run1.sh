#!/bin/bash
# issue 13, device call 1: kernel tables (launch, GEMM v3, elementwise v3), the held-out
# operator run, whole-model eager forwards, a CUDA-graph engine probe.
set -u
export PYTHONUNBUFFERED=1
R=/tmp/r13; rm -rf $R; mkdir -p $R
HERE="$(cd "$(dirname "$0")" && pwd)"
cd "$HERE/harness"
pack() { tar czf "$OUT/results.tgz" -C $R . 2>/dev/null; cp $R/*.log "$OUT/" 2>/dev/null; }
T0=$(date +%s)
{ date -u; nvidia-smi; nvidia-smi -q -d CLOCK,POWER,PERFORMANCE; python3 -c "import torch,transformers;print('torch', torch.__version__, 'cuda', torch.version.cuda, 'transformers', transformers.__version__)"; lscpu; } > $R/env.txt 2>&1
nvidia-smi --query-gpu=timestamp,clocks.sm,clocks.mem,power.draw,utilization.gpu,temperature.gpu --format=csv -lms 500 > $R/clocks.csv 2>/dev/null &
SMI=$!
ph() { echo "[$(( $(date +%s) - T0 ))s] $*"; }
ph kernels; timeout 300 python3 -m kernels --out $R/k --only launch,gemm,elementwise > $R/k.log 2>&1; ph "kernels rc=$?"; pack
ph validation; timeout 110 python3 -m kernels --out $R/v --only validation_ops > $R/v.log 2>&1; ph "validation rc=$?"; pack
ph fwd7; timeout 80 python3 -m engine_profile forward --out $R/f --model llama-2-7b > $R/f7.log 2>&1; ph "fwd7 rc=$?"; pack
ph fwd8; timeout 80 python3 -m engine_profile forward --out $R/f --model llama-3-8b > $R/f8.log 2>&1; ph "fwd8 rc=$?"; pack
ph graphs; timeout 80 python3 -m engine_profile probe --out $R/g --model llama-2-7b --cuda-graphs --q-padding 256 --num-blocks 256 --max-batch-tokens 2048 --profile-budget-s 20 --trace ../segments/conv-a.csv --rate 2 --max-requests 10 --name probe-graphs > $R/g.log 2>&1; ph "graphs rc=$?"
kill $SMI 2>/dev/null
pack
grep -h "summary\|  gemm\|  elementwise\|  memcpy\|rows in\|FAILED\|skipped" $R/k.log $R/v.log | tail -25
grep -h "forward\|Error\|error" $R/f7.log $R/f8.log | tail -34
tail -25 $R/g.log
ph done

#!/bin/bash
# issue 13, device call 2: transformers continuous batching, eager and CUDA graphs, Llama-2-7B
# and Llama-3-8B shapes: a serving-shaped profile (budget 8192, contexts to the model's), then
# four trace replays (code moderate/overload, conversation moderate/overload), never fitted.
set -u
export PYTHONUNBUFFERED=1
R=/tmp/r13b; rm -rf $R; mkdir -p $R
HERE="$(cd "$(dirname "$0")" && pwd)"
cd "$HERE/harness"
pack() { tar czf "$OUT/engines.tgz" -C $R . 2>/dev/null; }
T0=$(date +%s)
{ date -u; nvidia-smi; python3 -c "import torch,transformers;print('torch', torch.__version__, 'cuda', torch.version.cuda, 'transformers', transformers.__version__)"; } > $R/env.txt 2>&1
nvidia-smi --query-gpu=timestamp,clocks.sm,clocks.mem,power.draw,utilization.gpu,temperature.gpu --format=csv -lms 500 > $R/clocks.csv 2>/dev/null &
SMI=$!
ph() { echo "[$(( $(date +%s) - T0 ))s] $*"; }
S=../segments
run() {  # model regime ctx suffix rates(conv-mod conv-over code-mod code-over) extra-flags
  local m=$1 reg=$2 ctx=$3 sfx=$4 cm=$5 co=$6 dm=$7 do=$8; shift 8
  local tag=$m-$reg
  ph "$tag"
  timeout 146 python3 -m engine_profile all --out $R/$tag --model $m --num-blocks 256 \
    --max-batch-tokens 8192 --max-context $ctx --profile-budget-s 40 --total-budget-s 136 \
    --replay $tag-code-over:$do:32:$S/code-b$sfx.csv --replay $tag-code-mod:$dm:24:$S/code-a$sfx.csv \
    --replay $tag-conv-over:$co:32:$S/conv-b$sfx.csv --replay $tag-conv-mod:$cm:16:$S/conv-a$sfx.csv \
    "$@" > $R/$tag.log 2>&1
  ph "$tag rc=$?"; pack
}
run llama-2-7b eager 4096 "" 1.0 4.0 1.5 8 
run llama-2-7b graphs 4096 "" 1.2 5.0 2.0 10 --cuda-graphs --q-padding 256
run llama-3-8b eager 8192 8k 1.0 4.0 1.2 6
run llama-3-8b graphs 8192 8k 1.2 5.0 1.5 8 --cuda-graphs --q-padding 256
kill $SMI 2>/dev/null
pack
grep -h "engine up\|serve-\|profile:\|replay \|finished\|iterations,\|Error\|error\|deadline" $R/*.log | tail -60
ph done

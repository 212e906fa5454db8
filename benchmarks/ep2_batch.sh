#!/usr/bin/env bash
# One batch of GPU work on a 2-GPU machine (the device tool's nvidia-h100-x2), run from the
# repository root there: install, the fused layer's GPU suite, then `comet-dse bench` runs.
#   bash benchmarks/ep2_batch.sh STAGE...   (STAGE: smoke, suite, sanitize, sweep-qwen, sweep-mixtral, wide1,
#                                            flatten, small-tokens, profile, tile-orders,
#                                            calibrate-quick, calibrate, held-out,
#                                            deepseek-expert, layouts, group-m, plan-check, pack, layer-copies, copy-ladder, copy-elems,
#                                            gemm-variants, gate-up, layer1-stages, deepseek-stages, suite-tp2, tp2, tp2-fine, mix4, mix4-validate, dedup, prereduce, sweeps-both-orders, small-repeats, large-repeats, tp2-target-repeats, poisoned, per-layer, contention-update, fixed-update, copy-engine-few, gemm-gap, same-machine, host-warmth, align-compare, align-noise, grouped-mm-uneven, calibrate-both, sustained-compare, phi, b0-repeats, layer1-width, tp2-baselines, copy-engine-trace, tp2-queued, pull-rows, layer-waits, layer-waits-small, comm-spans, comm-deal;
#                                            OUT: what comes back; DEADLINE_S: no step runs past that many
#                                            seconds from the start, so a long batch still packs its files)
# Every step has its own time limit, so a hang costs that step only; logs go to $OUT.
# The device tool copies at most 64 MiB of the tree, which results/ has pushed past (2026-11-28, run 137): for a call
# whose stages read nothing under results/ (all but plan-check, contention-update and fixed-update), move results/
# out of the checkout locally for the call (mv results /tmp/results_aside; mkdir results), then back.
set -u
repo=$(pwd)
out=${OUT:-/tmp/out}
mkdir -p "$out"
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 PYTHONUNBUFFERED=1
python3 -m pip install -q --no-deps --no-build-isolation . >"$out/install.log" 2>&1 || { tail "$out/install.log"; exit 1; }
cd /tmp  # outside the checkout: the installed package is what runs
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv >"$out/gpus.log"
run() {  # run LIMIT_S NAME CMD...: one step, its log in $out/NAME.log
    local limit=$1 name=$2; shift 2
    # DEADLINE_S (seconds since the batch began): no step runs past it, so the archives below are still written
    # inside the device call's own limit (a call killed there brings back loose files, at most 8 of them)
    if [ -n "${DEADLINE_S:-}" ]; then
        local left=$((DEADLINE_S - SECONDS))
        if [ "$left" -le 10 ]; then echo "== $name: skipped, past DEADLINE_S=$DEADLINE_S" | tee -a "$out/steps.log"; return; fi
        [ "$left" -lt "$limit" ] && limit=$left
    fi
    echo "== $name: $*" | tee -a "$out/steps.log"
    local t0=$SECONDS
    # torchrun reads PET_MASTER_PORT: a fresh rendezvous port per step, as a step killed at its
    # limit can leave its port taken
    export PET_MASTER_PORT=$((29500 + t0 % 1000 + RANDOM % 1000))
    timeout "$limit" "$@" >"$out/$name.log" 2>&1
    echo "   exit $? after $((SECONDS - t0)) s" | tee -a "$out/steps.log"
    tail -n 4 "$out/$name.log"
}
bench=(torchrun --nproc-per-node 2 -m comet_dse.cli bench --out "$out")
stages=("${@:-smoke}")
# same-machine: one call on one machine (~400 s on 2x H200, run 69): the profile, then the sweeps it is validated
# against, Phi-3.5-MoE held out; on an H100 pair also the fused-layer issue's targets (B0, B1 and fused side by side)
expanded=()
for stage in "${stages[@]}"; do
    if [ "$stage" = same-machine ]; then expanded+=(calibrate sweep-qwen sweep-mixtral phi small-tokens)
    elif [ "$stage" = sustained-compare ]; then expanded+=(calibrate-both sweep-qwen sweep-mixtral phi)  # ~520 s on 2x H200
    else expanded+=("$stage"); fi
done
stages=("${expanded[@]}")
for stage in "${stages[@]}"; do
case "$stage" in
smoke)
    run 200 suite torchrun --nproc-per-node 2 "$repo/benchmarks/gpu_fused_ep.py" --replays 100 --out "$out/suite.json"
    run 150 qwen8k "${bench[@]}" --model qwen2-moe-2.7b --tokens 1024,8192 --comm-blocks 0,16,32 --chunks 2,4 --runs 10
    run 150 mixtral8k "${bench[@]}" --model mixtral-8x7b --tokens 8192 --comm-blocks 16 --chunks 4 --runs 10
    ;;
suite)  # the GPU test suite
    run 150 suite torchrun --nproc-per-node 2 "$repo/benchmarks/gpu_fused_ep.py" --replays 1000 --out "$out/suite.json"
    ;;
sanitize)  # the suite on a small shape under compute-sanitizer (racecheck is slow: it may hit its limit)
    small=(--replays 2 --skip stuck,delayed,plan_on_gpu --capacity 128 --graph-tokens 64 --shape 8,2,512,256)
    for tool in racecheck synccheck; do
        limit=90; [ "$tool" = racecheck ] && limit=${RACECHECK_LIMIT:-90}
        run "$limit" "sanitizer_$tool" compute-sanitizer --tool "$tool" --target-processes all \
            torchrun --nproc-per-node 2 "$repo/benchmarks/gpu_fused_ep.py" "${small[@]}" --out "/tmp/$tool.json"
        grep -E "ERROR SUMMARY|RACECHECK SUMMARY|error" "$out/sanitizer_$tool.log" | tail -n 5 >"$out/sanitizer_$tool.txt"
    done
    ;;
sweep-qwen)
    run 200 qwen "${bench[@]}" --model qwen2-moe-2.7b --tokens 1024,4096,8192,16384 --comm-blocks 8,16,32,0,4,24,48 --chunks 2,4,8
    ;;
small-repeats)  # the latency-bound sweeps three times over, both tile orders: run-to-run noise beside the spread
    for i in 1 2 3; do
        run 150 "small_qwen_$i" "${bench[@]}" --model qwen2-moe-2.7b --tokens 256,1024 --comm-blocks 4,8,16,24,32,48 \
            --tile-order layout,expert --kind fused
        run 150 "small_mixtral_$i" "${bench[@]}" --model mixtral-8x7b --tokens 256,1024 --comm-blocks 4,8,16,24,32,48 \
            --tile-order layout,expert --kind fused
    done
    ;;
large-repeats)  # the compute-bound sweeps three times over (layout order): Spearman and regret on medians
    for i in 1 2 3; do
        run 150 "large_qwen_$i" "${bench[@]}" --model qwen2-moe-2.7b --tokens 4096,8192,16384 --comm-blocks 4,8,16,24,32,48 --kind fused
        run 180 "large_mixtral_$i" "${bench[@]}" --model mixtral-8x7b --tokens 4096,8192,16384 --comm-blocks 4,8,16,24,32,48 --kind fused
    done
    ;;
sweeps-both-orders)  # sweep-qwen and sweep-mixtral in both tile orders (expert order streams each expert's weights once)
    run 200 qwen "${bench[@]}" --model qwen2-moe-2.7b --tokens 1024,4096,8192,16384 --comm-blocks 8,16,32,0,4,24,48 --chunks 2,4,8 \
        --tile-order layout,expert
    run 240 mixtral "${bench[@]}" --model mixtral-8x7b --tokens 1024,4096,8192,16384 --comm-blocks 8,16,32,0,4,24,48 --chunks 2,4,8 \
        --tile-order layout,expert
    ;;
wide1)  # layer1 with 128x256 tiles beside the default, on the shapes of the targets
    run 120 qwen_n256 "${bench[@]}" --model qwen2-moe-2.7b --tokens 8192,16384 --comm-blocks 8,16 --block-n1 256 --kind fused
    run 150 mixtral_n256 "${bench[@]}" --model mixtral-8x7b --tokens 8192 --comm-blocks 8 --block-n1 256 --kind fused
    ;;
b0-repeats)  # B0 and B1 at the host-bound end three times over: bench's own draws of the host beside calibrate's rounds
    for i in 1 2 3; do
        run 90 "b0_qwen_$i" "${bench[@]}" --model qwen2-moe-2.7b --tokens 256,1024 --chunks 2 --kind baselines
    done
    ;;
small-tokens)  # the latency-bound end: 256 and 512 tokens per GPU
    run 120 mixtral_small "${bench[@]}" --model mixtral-8x7b --tokens 256,512 --comm-blocks 8,16 --chunks 2,4
    run 90 qwen_small "${bench[@]}" --model qwen2-moe-2.7b --tokens 256,512 --comm-blocks 8,16 --chunks 2,4
    ;;
calibrate-quick)  # the hardware profile, reduced grid
    run 300 calibrate_quick torchrun --nproc-per-node 2 -m comet_dse.cli calibrate --out "$out" --quick
    ;;
calibrate)  # the hardware profile, full grid
    run 560 calibrate torchrun --nproc-per-node 2 -m comet_dse.cli calibrate --out "$out"
    ;;
calibrate-both)  # the profile with every GEMM table timed alone (profile.json: calibrate before 2026-11-27), then its GEMM
    # tables again in the GPU's sustained state (--sustained all: back to back, as a bench sweep runs them) into a copy
    # (profile-sustained.json); run 88
    run 300 calibrate torchrun --nproc-per-node 2 -m comet_dse.cli calibrate --out "$out" --name profile --sustained none
    run 300 calibrate_sustained torchrun --nproc-per-node 2 -m comet_dse.cli calibrate --out "$out" --name profile-sustained \
        --only gemm --sustained all --update "$out/profile.json"
    ;;
host-warmth)  # B0's host-bound time after idle / busy host / busy GPU / B0 itself, then bench's B0 at a few tokens
    run 120 host_warmth torchrun --nproc-per-node 2 "$repo/benchmarks/host_warmth.py" --out "$out/host_warmth.json"
    for model in qwen2-moe-2.7b phi-3.5-moe; do
        run 120 "b0_$model" "${bench[@]}" --model "$model" --tokens 8,64,256,1024 --chunks 2 --kind baselines
    done
    ;;
align-compare)  # each timed call from a host barrier (as every run before) and from the GPUs too (--align devices), in turn
    for align in host devices; do
        run 120 "align_${align}_mixtral" "${bench[@]}" --model mixtral-8x7b --tokens 1024,8192 --comm-blocks 4 --chunks 2 --align "$align"
        run 120 "align_${align}_qwen" "${bench[@]}" --model qwen2-moe-2.7b --tokens 1024,8192 --comm-blocks 16 --chunks 2 --align "$align"
    done
    ;;
align-noise)  # Qwen2-MoE 1024 (the sweep the simulator mispicks on single runs): each timed call from a host barrier
    # and from queued, aligned GPUs (--align queued), three times in turn; then the graph replays traced at 16 and 24
    sweep=(--model qwen2-moe-2.7b --tokens 1024,4096 --comm-blocks 8,16,24,32 --kind fused)
    for rep in 1 2 3; do
        for align in host queued; do
            run 120 "noise_${align}_${rep}" "${bench[@]}" "${sweep[@]}" --align "$align"
        done
    done
    for blocks in 16 24; do
        run 150 "trace_${blocks}" torchrun --nproc-per-node 2 "$repo/benchmarks/gpu_profile.py" --model qwen2-moe-2.7b \
            --tokens 1024 --configs 128x128/256/s3/w8 --comm-blocks "$blocks" --graph-trace --out "$out/trace_${blocks}.json"
    done
    ;;
grouped-mm-uneven)  # torch._grouped_mm with equal and with multinomial rows, alone and in a graph (one GPU)
    run 300 grouped_mm_uneven python3 "$repo/benchmarks/grouped_mm_uneven.py" --out "$out/grouped_mm_uneven.json"
    ;;
phi)  # held-out's first half, where a call has no time for DeepSeek-V3's
    run 200 phi "${bench[@]}" --model phi-3.5-moe --tokens 256,1024,4096,8192,16384 --comm-blocks 8,16,32,0,4,24,48 --chunks 2,4,8
    ;;
held-out)  # shapes calibration never measured: validation's held-out set
    run 200 phi "${bench[@]}" --model phi-3.5-moe --tokens 256,1024,4096,8192,16384 --comm-blocks 8,16,32,0,4,24,48 --chunks 2,4,8
    run 200 deepseek "${bench[@]}" --model deepseek-v3 --tokens 1024,4096 --comm-blocks 8,16,32 --chunks 2,4
    ;;
deepseek-expert)  # DeepSeek-V3 shapes (128 experts per GPU, few rows each) in expert tile order
    run 200 deepseek_expert "${bench[@]}" --model deepseek-v3 --tokens 1024,4096 --comm-blocks 8,16 --chunks 2 --tile-order expert
    ;;
tile-orders)  # both tile orders where the layers are weight-bound (few rows per expert)
    orders=(--tokens 256,512,1024,4096 --comm-blocks 4,8,16 --chunks 2 --tile-order layout,expert)
    run 200 mixtral_orders "${bench[@]}" --model mixtral-8x7b "${orders[@]}"
    run 150 qwen_orders "${bench[@]}" --model qwen2-moe-2.7b "${orders[@]}"
    ;;
layouts)  # merged vs by-source row tiles, both tile orders, where partial tiles cost most (few rows per expert)
    layouts=(--tokens 256,1024,4096,8192 --comm-blocks 4,8,16 --chunks 2 --tile-order layout,expert
             --tile-layout merged,by-source)
    run 240 qwen_layouts "${bench[@]}" --model qwen2-moe-2.7b "${layouts[@]}"
    run 300 mixtral_layouts "${bench[@]}" --model mixtral-8x7b "${layouts[@]}"
    ;;
group-m)  # row tiles sharing a weight tile through L2, beside the default 8 (in the layouts stage)
    for gm in 16 32; do
        run 90 "qwen_gm$gm" "${bench[@]}" --model qwen2-moe-2.7b --tokens 8192 --comm-blocks 8,16 --group-m "$gm" --kind fused
        run 90 "mixtral_gm$gm" "${bench[@]}" --model mixtral-8x7b --tokens 8192 --comm-blocks 4 --group-m "$gm" --kind fused
    done
    ;;
plan-check)  # a tuned plan's picks (PLAN_DIR, default results/validation/plan_check/) beside a sweep of communication blocks
    for m in mixtral-8x7b phi-3.5-moe; do
        plan="$repo/${PLAN_DIR:-results/validation/plan_check}/$m-h200-x2-ep2-tp1.json"
        run 120 "${m}_plan" "${bench[@]}" --model "$m" --plan "$plan" --tokens 1024,4096,8192 --kind fused
        run 150 "${m}_sweep" "${bench[@]}" --model "$m" --tokens 1024,4096,8192 --comm-blocks "${PLAN_SWEEP:-2,4,8,16}" --kind fused
    done
    ;;
flatten)  # the fused GEMMs software-pipelined across tiles, beside the default, on the target shapes
    run 100 qwen_flat "${bench[@]}" --model qwen2-moe-2.7b --tokens 8192 --comm-blocks 8,16 --flatten --kind fused
    run 100 mixtral_flat "${bench[@]}" --model mixtral-8x7b --tokens 8192 --comm-blocks 8 --flatten --kind fused
    ;;
profile)  # per-kernel time of the fused forward for tile / stage / warp variants
    configs=${PROFILE_CONFIGS:-128x128/128/s3/w8,128x128/128/s4/w8,64x128/128/s4/w4,128x128/256/s3/w8}
    extra=(--tokens "${PROFILE_TOKENS:-1024,8192}" --configs "$configs" --tile-orders "${PROFILE_ORDERS:-layout}"
           --comm-blocks "${PROFILE_BLOCKS:-8}")
    run 200 profile_qwen torchrun --nproc-per-node 2 "$repo/benchmarks/gpu_profile.py" --model qwen2-moe-2.7b \
        "${extra[@]}" --out "$out/profile-qwen2-moe-2.7b.json"
    run 240 profile_mixtral torchrun --nproc-per-node 2 "$repo/benchmarks/gpu_profile.py" --model mixtral-8x7b \
        "${extra[@]}" --out "$out/profile-mixtral-8x7b.json"
    ;;
pack)  # step 1 of the forward (pairs ordered by expert, rows gathered), previous torch ops vs kernels, one GPU
    run 120 pack python3 "$repo/benchmarks/bench_pack.py" --out "$out/pack"
    ;;
layer-copies)  # the layer's copies (COMM_ONLY) with and without ~120 polling compute blocks, two copy steps
    run 150 layer_copies torchrun --nproc-per-node 2 "$repo/benchmarks/gpu_layer_copies.py" --out "$out/layer_copies.json"
    ;;
copy-ladder)  # from the bare copy kernel to layer0's COMM_ONLY pull, one added piece per rung, 4 and 8 warps
    run 200 copy_ladder torchrun --nproc-per-node 2 "$repo/benchmarks/gpu_copy_ladder.py" --out "$out/copy_ladder.json"
    # the same behind calibrate's old ~50 µs spin, shorter than a layer launch's host time
    run 200 copy_ladder_spin50 torchrun --nproc-per-node 2 "$repo/benchmarks/gpu_copy_ladder.py" --warps 8 \
        --spin-cycles 100000 --out "$out/copy_ladder_spin50.json"
    ;;
copy-elems)  # the fused layer with 16384 and 32768 elements per copy step, one run
    for ce in 16384 32768; do
        grid=(--tokens 1024,4096,8192,16384 --comm-blocks 4,8,16,32 --kind fused --copy-elems "$ce")
        run 150 "qwen_ce$ce" "${bench[@]}" --model qwen2-moe-2.7b "${grid[@]}"
        run 200 "mixtral_ce$ce" "${bench[@]}" --model mixtral-8x7b "${grid[@]}"
    done
    ;;
gemm-variants)  # the fused GEMM launches under kernel variants beside torch._grouped_mm, one rank per GPU
    run 330 gemm_variants torchrun --nproc-per-node 2 "$repo/benchmarks/gpu_gemm_variants.py" --out "$out/gemm_variants.json"
    ;;
gate-up)  # the layer with GEMM0's gate/up weight in column pairs and layer0's TMA store, beside halves and plain stores
    for v in pairs halves; do
        flags=(); [ "$v" = halves ] && flags=(--gate-up halves --no-tma-store)
        run 120 "qwen_$v" "${bench[@]}" --model qwen2-moe-2.7b --tokens 8192 --comm-blocks 8,16 --kind fused "${flags[@]}"
    done
    ;;
layer1-stages)  # the layer with layer1 at 3 and at 4 pipeline stages, one after the other, twice
    for v in 3 4 4 3; do
        run 120 "qwen_stages1_$v" "${bench[@]}" --model qwen2-moe-2.7b --tokens 8192 --comm-blocks 8,16 --kind fused --stages1 "$v"
    done
    ;;
deepseek-stages)  # DeepSeek-V3 (F = 2048: layer1 at 4 stages by the default's rule) at 3 and at 4 stages
    for v in 3 4 4 3; do
        run 300 "deepseek_stages1_$v" "${bench[@]}" --model deepseek-v3 --tokens 4096 --comm-blocks 8 --kind fused --stages1 "$v"
    done
    ;;
suite-tp2)  # the GPU test suite at EP=1 x TP=2
    run 200 suite_tp2 torchrun --nproc-per-node 2 "$repo/benchmarks/gpu_fused_ep.py" --tp 2 --replays 600 --out "$out/suite_tp2.json"
    ;;
dedup)  # layer0 bringing a token to a rank once (--dedup) against a row per expert slot: the GPU suites with it at
        # TP=2 and EP=2, then Mixtral at EP=2 both ways (TP=2 and Qwen2-MoE at EP=2: run 46, results/measurements/tp2_h200/dedup/)
    run 150 suite_tp2_dedup torchrun --nproc-per-node 2 "$repo/benchmarks/gpu_fused_ep.py" --tp 2 --dedup --replays 600 --out "$out/suite_tp2_dedup.json"
    run 150 suite_ep2_dedup torchrun --nproc-per-node 2 "$repo/benchmarks/gpu_fused_ep.py" --dedup --replays 600 --out "$out/suite_ep2_dedup.json"
    grid=(--tokens 1024,8192 --comm-blocks 4,8,16,32 --chunks 2)
    run 150 mixtral_ep2_dedup "${bench[@]}" --model mixtral-8x7b "${grid[@]}" --dedup --kind fused
    run 150 mixtral_ep2_rows "${bench[@]}" --model mixtral-8x7b "${grid[@]}" --kind fused
    ;;
prereduce)  # layer1 sending a token's rows at a rank home as one weighted sum (--prereduce) against a row per slot,
           # on and off in one call: the GPU suites with it at TP=2 and EP=2, then both models at TP=2 and EP=2
    run 150 suite_tp2_prereduce torchrun --nproc-per-node 2 "$repo/benchmarks/gpu_fused_ep.py" --tp 2 --prereduce --replays 600 --out "$out/suite_tp2_prereduce.json"
    run 150 suite_ep2_prereduce torchrun --nproc-per-node 2 "$repo/benchmarks/gpu_fused_ep.py" --prereduce --replays 600 --out "$out/suite_ep2_prereduce.json"
    grid=(--tokens 1024,8192 --comm-blocks 4,8,16,32 --chunks 2 --kind fused)
    for m in ${PREREDUCE_MODELS:-qwen2-moe-2.7b mixtral-8x7b}; do
        for tp in 2 1; do
            run 150 "${m%%-*}_tp${tp}_prereduce" "${bench[@]}" --model "$m" --tp "$tp" "${grid[@]}" --prereduce
            run 150 "${m%%-*}_tp${tp}_rows" "${bench[@]}" --model "$m" --tp "$tp" "${grid[@]}"
        done
    done
    ;;
mix4)  # four GPUs (nvidia-h100-x4): the layer at TP=4, EP=2 x TP=2 and EP=4 at 8192 tokens (Comet's EP/TP-mix trend),
      # then the GPU suite at EP=2 x TP=2
    bench4=(torchrun --nproc-per-node 4 -m comet_dse.cli bench --out "$out" --tokens 8192 --comm-blocks 4,8,16,32 --chunks 2)
    for m in qwen2-moe-2.7b mixtral-8x7b; do
        for mix in "--ep 1 --tp 4" "--ep 2 --tp 2" "--ep 4 --tp 1"; do
            name="${m%%-*}_$(echo "$mix" | tr -d ' -')"
            run 90 "$name" "${bench4[@]}" --model "$m" $mix
        done
    done
    run 90 suite_ep2tp2 torchrun --nproc-per-node 4 "$repo/benchmarks/gpu_fused_ep.py" --tp 2 --replays 500 --out "$out/suite_ep2tp2.json"
    ;;
mix4-validate)  # four GPUs: the profile on 4 GPUs (calibrate's all-to-all and copy curves are per GPU count), then the
               # layer at TP=4, EP=2 x TP=2 and EP=4 at MIX4_TOKENS (1024,8192) per GPU, for comet-dse validate; ~430 s on
               # 4x H200
    run 330 calibrate torchrun --nproc-per-node 4 -m comet_dse.cli calibrate --out "$out"
    for m in qwen2-moe-2.7b mixtral-8x7b; do
        for mix in "--ep 1 --tp 4" "--ep 2 --tp 2" "--ep 4 --tp 1"; do
            run 90 "${m%%-*}_$(echo "$mix" | tr -d ' -')" torchrun --nproc-per-node 4 -m comet_dse.cli bench --out "$out" \
                --tokens "${MIX4_TOKENS:-1024,8192}" --comm-blocks 4,8,16,32 --chunks 2 --model "$m" $mix
        done
    done
    ;;
tp2-fine)  # the best n_comm at TP=2 vs EP=2 on a finer grid round the tp2 stage's picks (Mixtral 4, Qwen2-MoE 16 at 8192)
    for parallel in "--tp 2" "--tp 1"; do
        run 120 "mixtral_fine_${parallel// /}" "${bench[@]}" --model mixtral-8x7b --tokens 8192 --comm-blocks 1,2,3,4,6 --kind fused $parallel
        run 120 "qwen2_fine_${parallel// /}" "${bench[@]}" --model qwen2-moe-2.7b --tokens 8192 --comm-blocks 12,16,20,24 --kind fused $parallel
    done
    ;;
tp2)  # the TP-kernels issue: the layer at EP=1 x TP=2 (fused through virtual experts, B0/B1 under TP) beside EP=2
    for m in ${TP2_MODELS:-mixtral-8x7b qwen2-moe-2.7b}; do
        run 240 "${m%%-*}_tp2" "${bench[@]}" --model "$m" --tokens 1024,8192 --comm-blocks 4,8,16,32 --chunks 2 --tp 2
        run 240 "${m%%-*}_ep2" "${bench[@]}" --model "$m" --tokens 1024,8192 --comm-blocks 4,8,16,32 --chunks 2
    done
    ;;
tp2-target-repeats)  # the TP-kernels issue's target (Mixtral, TP=2, 8192 tokens: fused / B0) three times over, B0 and B1 alike
    for i in 1 2 3; do
        run 150 "mixtral_tp2_target_$i" "${bench[@]}" --model mixtral-8x7b --tokens 8192 --comm-blocks 2,3,4,8 --chunks 2,4 --tp 2
    done
    ;;
poisoned)  # the GPU suites on layers whose uninitialized buffers hold NaN (FusedMoE.poison_unwritten, every suite
          # since run 61): EP=2 and TP=2, each with and without layer1's pre-reduction
    for parallel in "--tp 1" "--tp 2"; do
        for extra in "" "--prereduce"; do
            name="suite_${parallel// /}${extra:+_prereduce}"
            run 150 "${name//-/}" torchrun --nproc-per-node 2 "$repo/benchmarks/gpu_fused_ep.py" $parallel $extra --replays 500 \
                --out "$out/${name//-/}.json"
        done
    done
    ;;
per-layer)  # each variant's layer0 and layer1 timed alone beside the whole layer (bench's layer<i>:<variant>): where the
           # fused layer loses to its pipeline at the block counts the simulator misranks (Qwen2-MoE at 8 blocks)
    run 150 qwen_per_layer "${bench[@]}" --model qwen2-moe-2.7b --tokens 4096,16384 --comm-blocks 4,8,16,24,32 --kind fused
    run 150 mixtral_per_layer "${bench[@]}" --model mixtral-8x7b --tokens 4096,16384 --comm-blocks 4,8,16,32 --kind fused
    ;;
contention-update)  # the copies' slowdown beside the GEMM through the layer's own pulls, into run 39's profile
    run 300 contention torchrun --nproc-per-node 2 -m comet_dse.cli calibrate --out "$out" --only contention \
        --update "$repo/results/hardware/h200-x2-run39.json" --name "${CONTENTION_NAME:-h200-x2-run39-contention}"
    ;;
fixed-update)  # the graph figures (a node's launch, the forward without its layers at 8 tokens) into run 71's profile
    run 200 fixed torchrun --nproc-per-node 2 -m comet_dse.cli calibrate --out "$out" --only launch,forward_fixed \
        --update "$repo/results/hardware/${FIXED_BASE:-h200-x2-run71}.json" --name "${FIXED_NAME:-${FIXED_BASE:-h200-x2-run71}-fixed}"
    ;;
copy-engine-few)  # the copy engine moving layer0's rows with layer1 on as few blocks as the best SM-copy configuration
                  # (every sweep so far ran it with 16), beside that configuration and B0, Mixtral 8192 at TP=2 and EP=2
    for i in 1 2; do
        run 150 "ce_tp2_$i" "${bench[@]}" --model mixtral-8x7b --tokens 8192 --comm-blocks 0,3 --comm-blocks1 3 --chunks 2 --tp 2
        run 150 "ce_ep2_$i" "${bench[@]}" --model mixtral-8x7b --tokens 8192 --comm-blocks 0,4 --comm-blocks1 4 --chunks 2
    done
    ;;
gemm-gap)  # the in-layer GEMMs against calibrate's calls where the gap is widest (run 67: 0.77-0.85 at 256-512 rows
           # per expert): both tile orders (an expert's tiles together or in phases), each kernel timed alone
    run 120 gap_qwen "${bench[@]}" --model qwen2-moe-2.7b --tokens 4096 --comm-blocks 8,16 --tile-order layout,expert --kind fused
    run 150 gap_mixtral "${bench[@]}" --model mixtral-8x7b --tokens 1024 --comm-blocks 8,16 --tile-order layout,expert --kind fused
    run 120 gap_phi "${bench[@]}" --model phi-3.5-moe --tokens 1024 --comm-blocks 8,16 --tile-order layout,expert --kind fused
    ;;
layer1-width)  # layer1 (GEMM1) with 128- and 256-wide tiles in turn, twice, where its tiles fill ~2-3 waves
               # of the compute blocks (few rows per expert): is wave quantization what the wider tile loses there?
    i=0
    for v in 256 128 128 256; do
        i=$((i + 1))
        run 120 "mixtral_n1_${v}_$i" "${bench[@]}" --model mixtral-8x7b --tokens 1024,4096 --comm-blocks 4,8 --block-n1 "$v" --kind fused
        run 120 "phi_n1_${v}_$i" "${bench[@]}" --model phi-3.5-moe --tokens 1024,4096 --comm-blocks 4,8 --block-n1 "$v" --kind fused
    done
    ;;
tp2-baselines)  # B0 and B1 under TP (EP=1 x TP=2) from the host-bound end to the compute-bound one: with one EP rank
                # B0 neither regroups nor syncs with the host (kernels/baselines.py), what the simulator now models
    run 150 qwen_tp2_b "${bench[@]}" --model qwen2-moe-2.7b --tokens 64,256,1024,4096,8192 --chunks 2,4 --tp 2 --kind baselines
    run 150 mixtral_tp2_b "${bench[@]}" --model mixtral-8x7b --tokens 256,1024,4096,8192 --chunks 2,4 --tp 2 --kind baselines
    run 150 phi_tp2_b "${bench[@]}" --model phi-3.5-moe --tokens 256,1024,8192 --chunks 2,4 --tp 2 --kind baselines
    ;;
pull-rows)  # layer0's row tiles pulled in pieces by several blocks (FusedConfig.pull_rows) beside whole tiles (128): the
           # GPU suite with 32-row pieces, then both in one bench where the layer waits on its first tiles (few tokens)
    run 150 suite_pull32 torchrun --nproc-per-node 2 "$repo/benchmarks/gpu_fused_ep.py" --pull-rows 32 --replays 300 --out "$out/suite_pull32.json"
    run 150 qwen_pull "${bench[@]}" --model qwen2-moe-2.7b --tokens 1024,4096 --comm-blocks 4,8,16,24 --pull-rows 128,32,16 --kind fused
    run 120 mixtral_pull "${bench[@]}" --model mixtral-8x7b --tokens 1024 --comm-blocks 4,8,16 --pull-rows 128,32 --kind fused
    ;;
copy-engine-trace)  # the copy-engine forward traced on host and GPU (which host work comes before layer0, which beside it)
    run 120 copy_engine_trace_qwen torchrun --nproc-per-node 2 "$repo/benchmarks/copy_engine_trace.py" --model qwen2-moe-2.7b --tokens 1024,4096,8192 --out "$out/copy_engine_trace_qwen.json"
    run 120 copy_engine_trace_mixtral torchrun --nproc-per-node 2 "$repo/benchmarks/copy_engine_trace.py" --model mixtral-8x7b --tokens 1024,8192 --out "$out/copy_engine_trace_mixtral.json"
    ;;
tp2-queued)  # the TP-kernels issue at EP=1 x TP=2 as bench times by default since run 102 (queued), copy engine included:
           # the same machine's sweep-qwen / sweep-mixtral are the EP=2 side of the best-n_comm comparison
    for m in mixtral-8x7b qwen2-moe-2.7b; do
        run 150 "${m%%-*}_tp2" "${bench[@]}" --model "$m" --tokens 1024,4096,8192 --comm-blocks 0,4,8,16,32 --chunks 2,4 --tp 2
    done
    ;;
sweep-mixtral)
    run 300 mixtral "${bench[@]}" --model mixtral-8x7b --tokens 1024,4096,8192,16384 --comm-blocks 8,16,32,0,4,24,48 --chunks 2,4,8
    ;;
layer-waits)  # each layer kernel full, with its waits given up (nowait), compute-only and comm-only: what the waits cost and
    # how much the GEMM beside the copies in one kernel slows them; bench's workload, then calibrate's (round-robin, 1024 rows)
    waits=(torchrun --nproc-per-node 2 "$repo/benchmarks/gpu_layer_waits.py")
    run 150 layer_waits_qwen "${waits[@]}" --model qwen2-moe-2.7b --tokens 4096,8192,16384 --blocks 4,8,16,32 --out "$out/layer_waits_qwen.json"
    run 120 layer_waits_mixtral "${waits[@]}" --model mixtral-8x7b --tokens 8192 --blocks 4,8,16 --out "$out/layer_waits_mixtral.json"
    run 90 layer_waits_rr "${waits[@]}" --model qwen2-moe-2.7b --rows 1024 --blocks 4,8,16,32 --out "$out/layer_waits_rr.json"
    ;;
layer-waits-small)  # layer-waits at the latency-bound end (1024 and 2048 tokens, where the fused layer0 ran 25-60 us over
    # its compute-only kernel on runs 122-126 and the simulator mispicks): the waits' share against the copies' beside the GEMM
    waits=(torchrun --nproc-per-node 2 "$repo/benchmarks/gpu_layer_waits.py")
    run 150 layer_waits_qwen_small "${waits[@]}" --model qwen2-moe-2.7b --tokens 1024,2048 --blocks 4,8,16,24,32,48 \
        --out "$out/layer_waits_qwen_small.json"
    run 120 layer_waits_mixtral_small "${waits[@]}" --model mixtral-8x7b --tokens 1024 --blocks 4,8,16,32 \
        --out "$out/layer_waits_mixtral_small.json"
    ;;
comm-spans)  # each communication block's end against the rows the plan dealt it, both layers in COMM_ONLY mode: bench's
    # routing, calibrate's (round-robin, 1024 rows per expert: full tiles) and round-robin with a partial tile per piece
    spans=(torchrun --nproc-per-node 2 "$repo/benchmarks/gpu_comm_spans.py")
    run 150 comm_spans_qwen "${spans[@]}" --model qwen2-moe-2.7b --tokens 4096,8192 --rows 1024,1000 --blocks 4,8,16,32 \
        --out "$out/comm_spans_qwen.json"
    run 120 comm_spans_mixtral "${spans[@]}" --model mixtral-8x7b --tokens 8192 --blocks 4,8,16,32 --out "$out/comm_spans_mixtral.json"
    ;;
comm-deal)  # the communication blocks' two deals of the remote tiles (round robin, or drawn as each block finishes one):
    # every block's end in COMM_ONLY mode, then the sweeps of both shapes with both deals in one process each
    run 150 suite_dynamic torchrun --nproc-per-node 2 "$repo/benchmarks/gpu_fused_ep.py" --replays 500 --comm-deal dynamic \
        --out "$out/suite_dynamic.json"
    spans=(torchrun --nproc-per-node 2 "$repo/benchmarks/gpu_comm_spans.py" --comm-deal static,dynamic)
    run 150 comm_spans_qwen "${spans[@]}" --model qwen2-moe-2.7b --tokens 4096,8192 --rows 1024 --blocks 4,8,16,32 \
        --out "$out/comm_spans_qwen.json"
    run 120 comm_spans_mixtral "${spans[@]}" --model mixtral-8x7b --tokens 8192 --blocks 4,8,16,32 --out "$out/comm_spans_mixtral.json"
    run 200 qwen "${bench[@]}" --model qwen2-moe-2.7b --tokens 1024,4096,8192,16384 --comm-blocks 8,16,32,0,4,24,48 --chunks 2,4,8 \
        --comm-deal static,dynamic
    run 240 mixtral "${bench[@]}" --model mixtral-8x7b --tokens 1024,4096,8192,16384 --comm-blocks 8,16,32,0,4,24,48 --chunks 2,4,8 \
        --comm-deal static,dynamic
    ;;
*) echo "unknown stage $stage"; exit 2 ;;
esac
done
# the device tool brings back at most 8 files: the logs in one archive, the JSON in another
cd "$out" && tar czf logs.tgz ./*.log && rm -f ./*.log
find . -name '*.json' | sort | tar czf json.tgz -T - && find . -name '*.json' -delete
ls -la "$out"

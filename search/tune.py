"""A tuning run: every token bucket's study brought to its trial count (by one or many
local workers), the best chunk count of the coarse pipeline, the sequential baseline,
and the plan that comes out of it."""

from __future__ import annotations

import multiprocessing
import platform
import signal
import sys
import time
from dataclasses import dataclass, replace

import numpy as np
import optuna
import simpy
from comet_dse.search.interrupt import INTERRUPTED, interrupt, raise_if_interrupted
from comet_dse.search.space import CHUNK_COUNTS, comet_from_params
from comet_dse.search.study import (
    TuneSpec,
    best_value,
    completed,
    in_flight,
    load_or_create,
    open_storage,
    optimize_bucket,
    prime_bucket,
)
from comet_dse.sim import default_schedule, simulate

import comet_dse
from comet_dse.plan import Plan, PlanEntry
from comet_dse.progress import Progress
from comet_dse.routing import make_routing


@dataclass
class BucketResult:
    tokens: int
    study: optuna.Study
    best_params: dict
    comet: dict  # user attrs of the best trial (latency_us, layer0_us, ...)
    chunked: dict  # {"chunks": C, "latency_us": ...}
    sequential_us: float
    pareto: list[dict]  # (latency_us, comm_sms, params) of the Pareto front; one entry when single-objective

    @property
    def speedup_vs_sequential(self) -> float:
        return self.sequential_us / self.comet["latency_us"]

    @property
    def speedup_vs_chunked(self) -> float:
        return self.chunked["latency_us"] / self.comet["latency_us"]


def _stop_on_sigterm(signum, frame) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # once: the trial's cleanup must not be cut short
    interrupt(signum, frame)


def _worker(spec: TuneSpec, buckets: list[int], worker: int) -> None:
    """A local worker process. It starts with SIGINT ignored (a terminal's Ctrl-C reaches the
    whole process group): the parent relays it as SIGTERM, which ends the running trial as
    failed, and the worker exits quietly instead of printing its own traceback."""
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(spec.storage_url, spec.heartbeat_s)
    try:
        for index, tokens in enumerate(buckets):
            optimize_bucket(spec, storage, tokens, index, worker=worker)
    except KeyboardInterrupt:
        sys.exit(130)


class TuneProgress:
    """The tune status line: bucket (token count), completed trials / target, best latency so
    far, elapsed time; and how many trials are running (in other workers too)."""

    def __init__(self, spec: TuneSpec, buckets: list[int], display: Progress) -> None:
        self.spec, self.buckets, self.display = spec, buckets, display

    def show(self, tokens: int, done: int, best: float | None, running: int = 0) -> None:
        index = self.buckets.index(tokens) + 1
        text = f"tokens {tokens} (bucket {index}/{len(self.buckets)}): {done}/{self.spec.trials} trials"
        text += f", best {best:.1f} µs" if best is not None else ""
        if running and done < self.spec.trials:  # others' (or, while this worker waits, maybe a dead worker's)
            text += f", {running} running"
        self.display.status(text)

    def hook(self, tokens: int):
        """For optimize_bucket: after each trial, and while it waits for trials in flight."""
        if not self.display.enabled:
            return None
        return lambda study, done, flight: self.show(tokens, done, best_value(study), flight)


def run_workers(spec: TuneSpec, buckets: list[int], workers: int, display: Progress | None = None) -> None:
    progress = TuneProgress(spec, buckets, display or Progress(False))
    storage = open_storage(spec.storage_url, spec.heartbeat_s)
    INTERRUPTED.clear()  # a Ctrl-C of an earlier run in this process (the tests call the CLI in one) is not this one's
    if workers <= 1:
        previous = signal.signal(signal.SIGINT, interrupt)
        try:
            for index, tokens in enumerate(buckets):
                optimize_bucket(spec, storage, tokens, index, progress=progress.hook(tokens))
            raise_if_interrupted()  # noted after the last bucket's last check: not lost with the handler
        finally:
            signal.signal(signal.SIGINT, previous)
            progress.display.end()
        return
    for index, tokens in enumerate(buckets):
        prime_bucket(spec, storage, tokens, index)
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_worker, args=(spec, buckets, w), name=f"comet-dse-worker-{w}") for w in range(workers)]
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # inherited across exec: children start ignoring it
    try:
        for p in procs:
            p.start()
    finally:
        signal.signal(signal.SIGINT, previous)
    try:
        _watch(spec, storage, buckets, procs, progress)
    except KeyboardInterrupt:
        for p in procs:  # each fails its running trial and exits
            if p.is_alive():
                p.terminate()
        for p in procs:
            p.join(timeout=30)
        raise
    finally:
        progress.display.end()
    failed = [p.name for p in procs if p.exitcode != 0]
    if failed:
        raise RuntimeError(f"workers failed: {', '.join(failed)} (rerun the command to resume)")


def _watch(spec: TuneSpec, storage, buckets: list[int], procs, progress: TuneProgress) -> None:
    """Wait for the workers, showing the first bucket not yet at its target (they go in order)."""
    studies = {}
    while any(p.is_alive() for p in procs):
        time.sleep(0.5)
        if not progress.display.enabled:
            continue
        for tokens in buckets:
            if tokens not in studies:
                studies[tokens] = optuna.load_study(study_name=spec.study_name(tokens), storage=storage)
            done = completed(studies[tokens])
            if done < spec.trials or tokens == buckets[-1]:
                progress.show(tokens, done, best_value(studies[tokens]), in_flight(studies[tokens]))
                break


def _best(study: optuna.Study) -> tuple[optuna.trial.FrozenTrial, list[dict]]:
    if len(study.directions) == 1:
        best = study.best_trial
        return best, [{"latency_us": best.values[0], "params": best.params}]
    front = sorted(study.best_trials, key=lambda t: (t.values[0], t.values[1]))
    return front[0], [{"latency_us": t.values[0], "comm_sms": t.values[1], "params": t.params} for t in front]


def collect(spec: TuneSpec, buckets: list[int]) -> list[BucketResult]:
    storage = open_storage(spec.storage_url, spec.heartbeat_s)
    results = []
    for tokens in buckets:
        study = load_or_create(spec, storage, tokens)
        best, pareto = _best(study)
        workload = spec.bucket(tokens)
        routing = make_routing(workload)
        chunked_default = default_schedule("chunked", workload.model.hidden)  # the tile simulate would use
        chunked = {c: simulate(workload, spec.hardware, replace(chunked_default, chunks=c), routing=routing, record=False).latency_us
                   for c in CHUNK_COUNTS}
        best_chunks = min(chunked, key=lambda c: (chunked[c], c))
        sequential = simulate(workload, spec.hardware, "sequential", routing=routing, record=False).latency_us
        results.append(BucketResult(
            tokens=tokens, study=study, best_params=dict(best.params),
            comet={k: v for k, v in best.user_attrs.items() if k != "cached"},
            chunked={"chunks": best_chunks, "latency_us": chunked[best_chunks]},
            sequential_us=sequential, pareto=pareto,
        ))
    return results


def versions() -> dict:
    return {"comet_dse": comet_dse.__version__, "optuna": optuna.__version__, "simpy": simpy.__version__,
            "numpy": np.__version__, "python": platform.python_version()}


def shared_inputs(spec: TuneSpec, buckets: list[int]) -> dict:
    """The study inputs all buckets share (all but the token count); each bucket's digest covers the rest."""
    per_bucket = [{k: v for k, v in spec.identity(t).inputs.items() if k != "tokens"} for t in buckets]
    if any(inputs != per_bucket[0] for inputs in per_bucket):  # the space, say, came to depend on tokens
        raise RuntimeError("study inputs differ between token buckets beyond the token count")
    return per_bucket[0]


def make_plan(spec: TuneSpec, results: list[BucketResult], storage_label: str) -> Plan:
    entries = []
    for r in results:
        config = comet_from_params(r.best_params, spec.tp_dispatch).params()
        entries.append(PlanEntry(
            tokens=r.tokens, config=config, chunked={"chunks": r.chunked["chunks"]},
            predicted_us={"comet": r.comet["latency_us"], "chunked": r.chunked["latency_us"], "sequential": r.sequential_us},
            speedup={"vs_sequential": round(r.speedup_vs_sequential, 4), "vs_chunked": round(r.speedup_vs_chunked, 4)},
            trials=completed(r.study), digest=spec.identity(r.tokens).digest,
        ))
    wl = spec.workload
    meta = {
        "routing": wl.routing, "seed": spec.seed, "objectives": list(spec.objectives), "storage": storage_label,
        "studies": [r.study.study_name for r in results], "inputs": shared_inputs(spec, [r.tokens for r in results]),
        "model_shape": wl.model.to_dict(), "hardware_profile": spec.hardware.to_dict(), "versions": versions(),
    }
    return Plan(spec.model_name, spec.hardware.name, wl.ep, wl.tp, entries, meta)


HEATMAP_BLOCKS = (1, 2, 4, 8, 12, 16, 20, 24, 32, 40, 48, 64)


def allocation_heatmap(spec: TuneSpec, results: list[BucketResult], layer: int) -> dict:
    """Predicted latency over (token bucket x n_comm of one layer), the other knobs at the best."""
    blocks = [b for b in HEATMAP_BLOCKS if b < spec.hardware.sms]
    z = []
    for r in results:
        workload = spec.bucket(r.tokens)
        routing = make_routing(workload)
        row = []
        for b in blocks:
            params = {**r.best_params, f"comm_blocks{layer}": b}
            row.append(simulate(workload, spec.hardware, comet_from_params(params, spec.tp_dispatch), routing=routing,
                                record=False).latency_us)
        z.append(row)
    return {"tokens": [r.tokens for r in results], "blocks": blocks, "latency_us": z}

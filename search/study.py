"""Studies: one Optuna study per workload (model, hardware, EP, TP, token bucket).

A study's identity is everything that changes its answer: the model's shape, the hardware
profile's figures, EP, TP, the token bucket, the routing and its seed, the search space,
the objectives and the simulator's cost-model version. Its name is a readable prefix plus
a digest of those inputs, so changed inputs start a new study instead of reading old trials.

Storage is Optuna's RDB storage: an SQLite file by default (embedded, resumable), or a
PostgreSQL URL shared by workers on many machines (Optuna's documented distributed
mode). Heartbeats mark a crashed worker's trial as failed once it goes stale, and
RetryHeartbeatStaleTrialCallback puts its configuration back in the queue, so no completed
trial is lost and the requested count is still reached.

`trials` is a target: each study is brought up to that many completed trials, so the
same command rerun resumes (and adds nothing once there), and a larger count adds more.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import re
import time
import warnings
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path

import optuna
import sqlalchemy
from comet_dse.search.interrupt import INTERRUPTED, raise_if_interrupted
from comet_dse.search.objective import OBJECTIVES, Objective
from comet_dse.search.space import CometSpace
from comet_dse.sim import COST_MODEL_VERSION
from optuna.exceptions import ExperimentalWarning
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from comet_dse.errors import UserError
from comet_dse.hardware import HardwareProfile
from comet_dse.routing import make_routing, split_counts_spec
from comet_dse.workload import Workload

# heartbeats and stale-trial retry are Optuna's documented way to survive dead workers,
# still marked experimental; the warning would be printed once per worker and bucket
warnings.filterwarnings("ignore", category=ExperimentalWarning, module="optuna")
warnings.filterwarnings("ignore", category=ExperimentalWarning, module=__name__)


def _not_interrupt(record: logging.LogRecord) -> bool:
    """Ctrl-C fails the running trial; Optuna logs that (with a 40-line traceback, or as
    "failed with value None" when it lands in its bookkeeping), though the command ends
    with one line (`comet-dse: interrupted`). Other failures still log."""
    return not (INTERRUPTED.is_set() or (record.exc_info and isinstance(record.exc_info[1], KeyboardInterrupt)))


logging.getLogger("optuna.study._optimize").addFilter(_not_interrupt)

DEFAULT_STUDY_DIR = Path("results/studies")
STALL_LIMIT_S = 600.0  # give up waiting for stale trials of dead workers after this long
# the last trials of a study's budget: one-knob changes of the best point so far (CometSpace.neighbours),
# a coordinate polish after TPE; a quarter of the budget, at most 10
POLISH_SHARE, POLISH_MAX = 4, 10
POLISH_BATCH = 3  # neighbours queued at a time: a better point found starts the next batch
DIGEST_CHARS = 10  # 40 bits: a collision among one storage's studies is out of reach
SCHEMA_TRIES = 10  # concurrent first runs: each retry finds more of the schema the others made


@dataclass(frozen=True)
class StudyIdentity:
    """What one study answers for: `prefix` is for people, `digest` covers `inputs`."""

    prefix: str
    inputs: dict
    digest: str

    @property
    def name(self) -> str:
        return f"{self.prefix}-{self.digest}"

    def is_sibling(self, study_name: str) -> bool:
        """Another study of the same readable prefix (other inputs, or one named before digests)."""
        if study_name == self.name:
            return False
        digested = re.fullmatch(re.escape(self.prefix) + f"-[0-9a-f]{{{DIGEST_CHARS}}}", study_name)
        return study_name == self.prefix or digested is not None


def inputs_digest(inputs: dict) -> str:
    canonical = json.dumps(inputs, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:DIGEST_CHARS]


def routing_inputs(workload: Workload) -> dict:
    """The routing spec and seed; a trace or counts file by its content, which can change under one path."""
    out: dict = {"spec": workload.routing, "seed": workload.seed}
    kind, _, path = workload.routing.partition(":")
    if kind in ("trace", "counts"):
        path = split_counts_spec(path)[0] if kind == "counts" else path
        try:
            out[f"{kind}_sha256"] = hashlib.sha256(Path(path).read_bytes()).hexdigest()
        except OSError as exc:
            raise UserError("--routing", f"cannot read {kind} file {path}: {exc.strerror}") from None
    return out


@dataclass(frozen=True)
class TuneSpec:
    """Everything that defines a tuning run except the token buckets."""

    model_name: str
    hardware: HardwareProfile
    workload: Workload  # tokens is replaced per bucket
    trials: int
    seed: int
    objectives: tuple[str, ...]
    storage_url: str
    heartbeat_s: int = 10
    tp_dispatch: str = "tokens"  # comet under TP: Comet's design, or "rows" as comet-dse's fused kernels run it

    def bucket(self, tokens: int) -> Workload:
        return replace(self.workload, tokens=tokens)

    def study_prefix(self, tokens: int) -> str:
        wl = self.workload
        name = f"{self.model_name}-{self.hardware.name}-ep{wl.ep}-tp{wl.tp}-tokens{tokens}"
        if wl.routing != "uniform":
            name += f"-{wl.routing}-seed{wl.seed}"
        if self.objectives != ("latency",):
            name += "-" + "+".join(self.objectives)
        if self.tp_dispatch != "tokens":
            name += f"-{self.tp_dispatch}"
        return name

    def identity(self, tokens: int) -> StudyIdentity:
        workload = self.bucket(tokens)
        inputs = {  # plain JSON (lists, not tuples): what the study's user attribute reads back as
            "cost_model_version": COST_MODEL_VERSION,
            "model": workload.model.shape(),
            "hardware": self.hardware.figures(),
            "ep": workload.ep, "tp": workload.tp, "tokens": tokens, "dtype_bytes": workload.dtype_bytes,
            "routing": routing_inputs(workload),
            "space": asdict(CometSpace.for_workload(workload, self.hardware)),
            "objectives": list(self.objectives),
        }
        if self.tp_dispatch != "tokens":  # the default stays out: studies made before the knob keep their names
            inputs["tp_dispatch"] = self.tp_dispatch
        inputs = json.loads(json.dumps(inputs))
        return StudyIdentity(self.study_prefix(tokens), inputs, inputs_digest(inputs))

    def study_name(self, tokens: int) -> str:
        return self.identity(tokens).name

    def labels(self) -> dict:
        """The names behind the readable prefix (they are not inputs: a renamed profile answers alike)."""
        return {"model": self.model_name, "hardware": self.hardware.name}


def parse_objectives(text: str) -> tuple[str, ...]:
    names = tuple(part.strip() for part in text.split(","))
    if not names or any(n not in OBJECTIVES for n in names) or names[0] != "latency" or len(set(names)) != len(names):
        raise UserError("--objectives", f"must be 'latency' or 'latency,comm_sms', got {text!r}")
    return names


def default_storage_path(model_name: str, hardware_name: str, ep: int, tp: int, folder: Path = DEFAULT_STUDY_DIR) -> Path:
    return folder / f"{model_name}-{hardware_name}-ep{ep}-tp{tp}.db"


def default_storage_url(model_name: str, hardware_name: str, ep: int, tp: int, folder: Path = DEFAULT_STUDY_DIR) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{default_storage_path(model_name, hardware_name, ep, tp, folder)}"


def _schema_race(exc: BaseException) -> bool:
    """Another worker creating the same fresh storage at the same moment: a table or type that
    already exists, or a duplicate alembic_version row. A bad URL, a refused connection or a
    wrong password are none of these, so they still fail at once."""
    for err in (exc, exc.__cause__):
        if isinstance(err, sqlalchemy.exc.IntegrityError):
            return True
        if isinstance(err, sqlalchemy.exc.DBAPIError) and "already exists" in str(err.orig):
            return True
    return False


def _immediate_transactions(engine: sqlalchemy.engine.Engine) -> None:
    """SQLite ignores SELECT ... FOR UPDATE, so two processes can both take the same queued
    (WAITING) trial and one dies with "Cannot tell a COMPLETE trial". Starting every
    transaction with BEGIN IMMEDIATE takes the write lock before the read, as PostgreSQL's
    row lock does (SQLAlchemy's documented pysqlite recipe)."""

    @sqlalchemy.event.listens_for(engine, "connect")
    def _no_implicit_begin(dbapi_connection, _record) -> None:
        dbapi_connection.isolation_level = None  # pysqlite's own BEGIN would come too late

    @sqlalchemy.event.listens_for(engine, "begin")
    def _begin_immediate(connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    engine.dispose()  # pooled connections were opened before the listeners


def fail_silent_trials(study: optuna.Study, storage: RDBStorage) -> None:
    """Fail (and retry, as stale ones are) the RUNNING trials that never sent a heartbeat and
    started longer ago than the grace period.

    Optuna fails only trials whose last heartbeat is old; a worker killed between creating
    its trial and the first heartbeat (the sampler runs in between) leaves one that stays
    RUNNING forever, and a study waiting for its trials in flight would wait forever."""
    grace = timedelta(seconds=storage.grace_period or 2 * (storage.heartbeat_interval or 0))
    models = optuna.storages._rdb.models
    with optuna.storages._rdb.storage._create_scoped_session(storage.scoped_session) as session:
        silent = [(t.trial_id, t.datetime_start) for t in
                  session.query(models.TrialModel)
                  .filter(models.TrialModel.study_id == study._study_id, models.TrialModel.state == TrialState.RUNNING)
                  .filter(~models.TrialModel.heartbeats.any())]
    now = datetime.now()  # datetime_start reads back as local naive time, as this
    retry = storage.get_heartbeat_stale_trial_callback()
    for trial_id, start in silent:
        if start is None or now - start <= grace:
            continue
        try:
            if study._storage.set_trial_state_values(trial_id, state=TrialState.FAIL) and retry is not None:
                retry(study, study._storage.get_trial(trial_id))
        except optuna.exceptions.UpdateFinishedTrialError:  # another worker failed it first
            pass


def open_storage(url: str, heartbeat_s: int = 10) -> RDBStorage:
    """RDB storage with heartbeats and retry of stale trials; an unreachable URL is a UserError."""
    if not url.startswith(("sqlite:///", "postgresql://", "postgresql+psycopg://", "postgresql+psycopg2://", "mysql://", "mysql+pymysql://")):
        raise UserError("--storage", f"must be an sqlite:///FILE or postgresql://USER:PASS@HOST/DB URL, got {url!r}")
    engine_kwargs: dict = {"pool_pre_ping": True}
    if url.startswith("sqlite"):
        engine_kwargs["connect_args"] = {"timeout": 60}  # several local workers wait for the file lock
    else:
        engine_kwargs["connect_args"] = {"connect_timeout": 10}
    # RDBStorage creates its tables and stamps their version on first use, not atomically:
    # workers started together on a fresh storage collide ("table studies already exists",
    # UniqueViolation on pg_type). Each step skips what already exists, so a short randomized
    # retry converges; a lock would need one mechanism per database.
    for attempt in range(1, SCHEMA_TRIES + 1):
        try:
            storage = RDBStorage(
                url, engine_kwargs=engine_kwargs, heartbeat_interval=heartbeat_s, grace_period=3 * heartbeat_s,
                heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=3),
            )
            break
        except Exception as exc:  # SQLAlchemy raises many kinds; the user needs one line
            if _schema_race(exc) and attempt < SCHEMA_TRIES:
                time.sleep(random.uniform(0.05, 0.1 * attempt))
                continue
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UserError("--storage", f"cannot open {url.split('@')[-1]}: {reason[:200]}") from None
    if url.startswith("sqlite"):
        _immediate_transactions(storage.engine)
    return storage


def make_sampler(spec: TuneSpec, bucket_index: int, worker: int) -> optuna.samplers.BaseSampler:
    seed = spec.seed * 1_000_003 + bucket_index * 101 + worker * 7919  # workers must not propose alike
    return optuna.samplers.TPESampler(seed=seed, multivariate=True, n_startup_trials=10, n_ei_candidates=64)


def load_or_create(spec: TuneSpec, storage: RDBStorage, tokens: int, sampler=None) -> optuna.Study:
    identity = spec.identity(tokens)
    directions = ["minimize"] * len(spec.objectives)
    study = optuna.create_study(storage=storage, study_name=identity.name, directions=directions,
                                sampler=sampler, load_if_exists=True)
    if study.directions != [optuna.study.StudyDirection.MINIMIZE] * len(directions):
        raise UserError("--objectives", f"study {study.study_name} exists with other objectives")
    if "digest" not in study.user_attrs:  # written once: what this study answers for, for people and --list
        study.set_user_attr("inputs", identity.inputs)
        study.set_user_attr("labels", spec.labels())
        study.set_user_attr("digest", identity.digest)
    return study


def superseded(spec: TuneSpec, storage: RDBStorage, buckets: list[int]) -> dict[int, str]:
    """Per bucket whose study is new, the latest study of the same readable prefix with other
    inputs: the one an earlier run of this command (before the inputs changed) used."""
    names = {s.study_name for s in storage.get_all_studies()}
    out = {}
    for tokens in buckets:
        identity = spec.identity(tokens)
        older = [n for n in names if identity.is_sibling(n)]
        if older and identity.name not in names:
            out[tokens] = max(older, key=storage.get_study_id_from_name)  # ids rise with creation
    return out


@dataclass(frozen=True)
class StoredStudy:
    name: str
    completed: int
    digest: str | None  # None: a study named before digests, its inputs unknown
    inputs: dict
    labels: dict


def stored_studies(storage: RDBStorage) -> list[StoredStudy]:
    out = []
    for study in storage.get_all_studies():
        attrs = study.user_attrs
        done = storage.get_n_trials(storage.get_study_id_from_name(study.study_name), state=TrialState.COMPLETE)
        out.append(StoredStudy(study.study_name, done, attrs.get("digest"), attrs.get("inputs", {}), attrs.get("labels", {})))
    return out


def completed(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))


def _prepare(spec: TuneSpec, storage: RDBStorage, tokens: int, bucket_index: int,
             worker: int) -> tuple[optuna.Study, Objective, CometSpace]:
    workload = spec.bucket(tokens)
    study = load_or_create(spec, storage, tokens, make_sampler(spec, bucket_index, worker))
    space = CometSpace.for_workload(workload, spec.hardware)
    if not study.trials:
        for point in space.warm_start():  # workers starting together would each queue the same points
            study.enqueue_trial(point, skip_if_exists=True)
    objective = Objective(workload, spec.hardware, make_routing(workload), space, spec.objectives, spec.trials,
                          tp_dispatch=spec.tp_dispatch)
    return study, objective, space


def polish_trials(trials: int) -> int:
    return min(POLISH_MAX, trials // POLISH_SHARE)


def enqueue_polish(study: optuna.Study, space: CometSpace, trials: int) -> None:
    """Once the budget's last polish_trials(trials) are all that is left: queue the best point's
    neighbours not tried yet, POLISH_BATCH at a time (skip_if_exists: workers doing it at once queue
    each once); when TPE's trial would come instead (no neighbour left), it does."""
    every = study.get_trials(deepcopy=False)  # one read of the storage, after every trial
    done = [t for t in every if t.state == TrialState.COMPLETE]
    if not done or len(done) < trials - polish_trials(trials):
        return
    if any(t.state == TrialState.WAITING for t in every):
        return  # the last batch first: the next one starts from whatever is best then
    room = trials - len(done) - sum(t.state == TrialState.RUNNING for t in every)
    if room <= 0:
        return
    best = min(done, key=lambda t: t.values[0])
    tried = [t.params for t in every]
    fresh = [p for p in space.neighbours(best.params) if p not in tried]
    for params in fresh[:min(room, POLISH_BATCH)]:
        study.enqueue_trial(params, skip_if_exists=True)


def prime_bucket(spec: TuneSpec, storage: RDBStorage, tokens: int, bucket_index: int) -> None:
    """Create the study and run its warm-start trials in this process, before local workers
    start: SQLite cannot lock a queued trial for one worker (PostgreSQL can), so two
    workers could otherwise both take the same one."""
    study, objective, _ = _prepare(spec, storage, tokens, bucket_index, worker=0)
    waiting = len(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))
    if waiting:
        study.optimize(objective, n_trials=min(waiting, max(0, spec.trials - completed(study))), gc_after_trial=False)


def in_flight(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))


def best_value(study: optuna.Study) -> float | None:
    """The lowest first objective among completed trials (latency, µs); None before any."""
    values = [t.values[0] for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    return min(values) if values else None


# called after every trial and while waiting: (study, completed, trials others have in flight)
ProgressHook = Callable[[optuna.Study, int, int], None]


def optimize_bucket(spec: TuneSpec, storage: RDBStorage, tokens: int, bucket_index: int, worker: int = 0,
                    progress: ProgressHook | None = None) -> optuna.Study:
    """Bring one bucket's study up to `spec.trials` completed trials.

    Trials are started only for the room left: target - completed - in flight. While the
    rest are in flight (other workers' trials, or a dead worker's that are not stale yet)
    this worker waits without starting any: a started trial would be pruned by the
    objective's exact-target check, and a rerun after a crash would pile up pruned filler
    for the whole grace period."""
    study, objective, space = _prepare(spec, storage, tokens, bucket_index, worker)
    polish = lambda s, _t: enqueue_polish(s, space, spec.trials)  # noqa: E731  after every trial
    callbacks = [polish] + ([lambda s, _t: progress(s, completed(s), in_flight(s))] if progress else [])
    waited = 0.0
    while (done := completed(study)) < spec.trials:
        raise_if_interrupted()
        optuna.storages.fail_stale_trials(study)  # a dead worker's trial: failed, then retried
        fail_silent_trials(study, storage)
        room = spec.trials - done - in_flight(study)
        enqueue_polish(study, space, spec.trials)  # a rerun that stopped just before the polish
        if room > 0:
            started: list[int] = []
            try:
                with _started_here(storage, started):
                    study.optimize(objective, n_trials=room, callbacks=callbacks, gc_after_trial=False)
                raise_if_interrupted()  # noted after the last trial's start
            except KeyboardInterrupt:
                fail_interrupted(study, started)
                raise
            if completed(study) > done:
                waited = 0.0
                continue
        if progress:
            progress(study, completed(study), in_flight(study))
        time.sleep(0.5)  # only trials in flight (maybe stale): wait for them to end or go stale
        waited += 0.5
        if waited > STALL_LIMIT_S:
            raise RuntimeError(f"study {study.study_name}: no progress for {STALL_LIMIT_S:.0f} s")
    return study


@contextmanager
def _started_here(storage: RDBStorage, started: list[int]):
    """Appends to `started` the ids of the trials this process starts while inside: created,
    or taken from the queue (WAITING -> RUNNING). Recorded at the storage, so a Ctrl-C that
    lands anywhere in Optuna's bookkeeping (while the sampler proposes, before the first
    heartbeat) still leaves the trial known."""
    create, set_state = storage.create_new_trial, storage.set_trial_state_values

    def create_new_trial(*args, **kwargs):
        trial_id = create(*args, **kwargs)
        started.append(trial_id)
        return trial_id

    def set_trial_state_values(trial_id, state, values=None):
        if state == TrialState.RUNNING:
            started.append(trial_id)
        return set_state(trial_id, state, values)

    storage.create_new_trial, storage.set_trial_state_values = create_new_trial, set_trial_state_values
    try:
        yield
    finally:
        del storage.create_new_trial, storage.set_trial_state_values  # the class's methods again


def fail_interrupted(study: optuna.Study, started: list[int]) -> None:
    """Ctrl-C: Optuna fails the trial whose objective it interrupts, but not one interrupted
    in its own bookkeeping (while the sampler proposes it, or after the objective); every
    trial this process started and left RUNNING is failed here."""
    for trial_id in started:
        try:
            if study._storage.get_trial(trial_id).state == TrialState.RUNNING:
                study._storage.set_trial_state_values(trial_id, state=TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:
            pass

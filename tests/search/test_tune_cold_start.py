"""Many workers from a cold start: `comet-dse tune` processes started at once on a fresh
storage all succeed (the schema is created once, a queued trial is taken by one worker),
and the study ends at exactly N completed trials."""

from __future__ import annotations

import os
import subprocess
import sys
import types
import uuid
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
import sqlalchemy
from optuna.trial import TrialState

import comet_dse.search.study as study_module
from comet_dse.errors import UserError

WORKERS = 4
TRIALS = 8
ROUNDS = 3  # one round hits the old races about 3 times in 4; three nearly always


def _tune_cmd(url: str) -> list[str]:
    return [sys.executable, "-m", "comet_dse.cli", "tune", "--model", "mixtral-8x7b", "--hardware", "h800", "--ep", "8",
            "--tokens", "256", "--trials", str(TRIALS), "--storage", url, "--heartbeat", "1", "--no-report"]


def _start_together(url: str, cwd: Path) -> None:
    procs = [subprocess.Popen(_tune_cmd(url), cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for _ in range(WORKERS)]
    errors = [(p.returncode, err) for p in procs for _, err in [p.communicate(timeout=120)]]
    assert all(code == 0 for code, _ in errors), [err.strip().splitlines()[-1:] for code, err in errors if code]
    names = optuna.get_all_study_names(url)
    assert len(names) == 1, names
    study = optuna.load_study(study_name=names[0], storage=url)
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) == TRIALS
    assert not study.get_trials(states=(TrialState.RUNNING, TrialState.FAIL))


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_concurrent_first_runs_on_a_fresh_sqlite_file(tmp_path, round_):
    _start_together(f"sqlite:///{tmp_path / 'fresh.db'}", tmp_path)


POSTGRES = os.environ.get("COMET_DSE_TEST_POSTGRES")


@pytest.fixture
def fresh_postgres() -> Iterator[str]:
    """A URL whose tables live in a new, empty schema, dropped afterwards: a fresh storage on a
    server that outlives test runs, leaving the public schema to the other tests."""
    assert POSTGRES
    schema = f"comet_cold_{uuid.uuid4().hex[:12]}"
    engine = sqlalchemy.create_engine(POSTGRES)
    with engine.begin() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
    url = sqlalchemy.make_url(POSTGRES).update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        engine.dispose()


@pytest.mark.skipif(not POSTGRES, reason="set COMET_DSE_TEST_POSTGRES to a PostgreSQL URL (.ci/run starts one)")
@pytest.mark.parametrize("round_", range(ROUNDS))
def test_concurrent_first_runs_on_a_fresh_postgres_schema(fresh_postgres, tmp_path, round_):
    _start_together(fresh_postgres, tmp_path)


class _Refused(Exception):
    pass


RACE = sqlalchemy.exc.IntegrityError("INSERT INTO alembic_version", {}, _Refused("UNIQUE constraint failed"))
REFUSED = sqlalchemy.exc.OperationalError("connect", {}, _Refused("connection refused"))


@pytest.mark.parametrize("error, calls", [(RACE, 2), (REFUSED, 1)], ids=["schema race: retried", "refused: at once"])
def test_only_schema_races_are_retried(monkeypatch, error, calls):
    """A race with another worker is retried; a user's mistake (here a refused connection)
    fails on the first try, as one --storage line."""
    tries = []

    def storage(url, **_):
        tries.append(url)
        if len(tries) == 1:
            raise error
        return types.SimpleNamespace(engine=None)

    monkeypatch.setattr(study_module, "RDBStorage", storage)
    if calls == 1:
        with pytest.raises(UserError, match="connection refused"):
            study_module.open_storage("postgresql://u:p@127.0.0.1:1/db")
    else:
        study_module.open_storage("postgresql://u:p@127.0.0.1:1/db")
    assert len(tries) == calls

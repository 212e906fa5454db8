"""Ctrl-C during a study: raised only inside a trial's simulation, noted everywhere else.

A KeyboardInterrupt that lands in Optuna's bookkeeping or in the storage (SQLAlchemy, the
SQLite file lock) can leave a trial RUNNING that this process created but never learned the
id of, be swallowed so the run goes on, or leave a connection mid-transaction so that the
heartbeat thread Optuna joins waits out the 60 s lock timeout. The objective calls the
storage too (`suggest_*`, `set_user_attr`, reading the study's trials), so only the
simulation itself is interruptible; elsewhere the signal is noted and raised at the next
safe point (`raise_if_interrupted`: a trial's start, optimize_bucket's loop)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

INTERRUPTED = threading.Event()  # Ctrl-C came: the running trial's failure is expected, not news
_IN_SIMULATION = [False]  # a trial's simulation is running (main thread): Ctrl-C may raise there


def interrupt(_signum: int | None = None, _frame=None) -> None:
    """Signal handler for Ctrl-C (SIGINT; SIGTERM in a local worker)."""
    INTERRUPTED.set()
    if _IN_SIMULATION[0]:
        raise KeyboardInterrupt


def raise_if_interrupted() -> None:
    if INTERRUPTED.is_set():
        raise KeyboardInterrupt


@contextmanager
def interruptible() -> Iterator[None]:
    """Ctrl-C raises at once inside (a pure computation: no storage, no locks held)."""
    raise_if_interrupted()  # noted just before: stop here rather than run the simulation
    _IN_SIMULATION[0] = True
    try:
        yield
    finally:
        _IN_SIMULATION[0] = False

"""The search space of the comet schedule, built from legal values only (Calculon's habit)."""

from __future__ import annotations

from dataclasses import dataclass
from itertools import product

import optuna
from comet_dse.sim import Comet
from comet_dse.sim.layout import ROW_ORDERS
from comet_dse.sim.schedules.base import TILES, model_tiles, parse_tile
from comet_dse.sim.schedules.comet import legal_splits

from comet_dse.hardware import HardwareProfile
from comet_dse.workload import Workload

MAX_COMM_BLOCKS = 64  # past 64 blocks the measured NVLink curve is flat (GPU_NOTES.md)
MAX_SPLITS = 16
CHUNK_COUNTS = (1, 2, 3, 4, 6, 8, 12, 16)


@dataclass(frozen=True)
class CometSpace:
    max_comm_blocks: int
    tiles: tuple[str, ...] = TILES
    row_orders: tuple[str, ...] = ROW_ORDERS
    n_splits: tuple[int, ...] = (1, 2, 4)

    @classmethod
    def for_workload(cls, workload: Workload, hardware: HardwareProfile, max_comm_blocks: int = MAX_COMM_BLOCKS) -> CometSpace:
        hidden = workload.model.hidden
        tiles = model_tiles(hidden)
        if hardware.measured is not None:
            # a measured profile prices the fused kernels as built: offer only the tiles calibrate ran them
            # at, so a plan's pick runs on the GPU it was tuned for (comet-dse bench --plan)
            ran = tuple(f"{m}x{n}" for m, n in hardware.measured.fused_layer0_tiles())
            tiles = tuple(t for t in tiles if t in ran) or tiles
        return cls(max_comm_blocks=min(max_comm_blocks, hardware.sms - 1), tiles=tiles, n_splits=common_splits(hidden, tiles))

    def suggest(self, trial: optuna.Trial) -> Comet:
        block_m, block_n = parse_tile(trial.suggest_categorical("tile", self.tiles))
        return Comet(
            block_m=block_m, block_n=block_n,
            comm_blocks0=trial.suggest_int("comm_blocks0", 1, self.max_comm_blocks),
            comm_blocks1=trial.suggest_int("comm_blocks1", 1, self.max_comm_blocks),
            row_order=trial.suggest_categorical("row_order", self.row_orders),
            n_splits=trial.suggest_categorical("n_splits", self.n_splits),
        )

    def warm_start(self) -> list[dict]:
        """Points every study starts from: a few block counts around the NVLink knee of the
        measured curve (8-24 blocks) with the default knobs. With them TPE (seeded, 60 trials)
        reached 1% of the enumerated optimum in 12 of 12 seeds on a 3072-point space, against
        10 of 12 without (tests/search/test_search_quality.py)."""
        splits = max(s for s in self.n_splits if s <= 2)  # 1 is always legal
        tile = "128x128" if "128x128" in self.tiles else self.tiles[0]
        order = "local-first" if "local-first" in self.row_orders else self.row_orders[0]
        return [{"tile": tile, "comm_blocks0": n, "comm_blocks1": n, "row_order": order, "n_splits": splits}
                for n in (4, 8, 16) if n <= self.max_comm_blocks]

    def neighbours(self, params: dict) -> list[dict]:
        """The legal points one knob away from `params`, in the order a polish tries them: the other
        row order, the other tiles, the other split counts, then each communication block count +-1.
        TPE finds the block counts' region well but can stop on a categorical combination that one
        change improves (results/bench/search_quality.json)."""
        changes = [("row_order", v) for v in self.row_orders] + [("tile", v) for v in self.tiles]
        changes += [("n_splits", v) for v in self.n_splits]
        for knob in ("comm_blocks0", "comm_blocks1"):
            changes += [(knob, params[knob] + d) for d in (-1, 1) if 1 <= params[knob] + d <= self.max_comm_blocks]
        return [{**params, knob: value} for knob, value in changes if params[knob] != value]

    def points(self):
        """Every point of the space, for enumeration (as the params a trial would hold)."""
        blocks = range(1, self.max_comm_blocks + 1)
        for tile, b0, b1, order, splits in product(self.tiles, blocks, blocks, self.row_orders, self.n_splits):
            yield {"tile": tile, "comm_blocks0": b0, "comm_blocks1": b1, "row_order": order, "n_splits": splits}

    @property
    def size(self) -> int:
        return len(self.tiles) * self.max_comm_blocks ** 2 * len(self.row_orders) * len(self.n_splits)


def common_splits(hidden: int, tiles: tuple[str, ...]) -> tuple[int, ...]:
    """Split counts legal at every tile width offered (one categorical serves all tiles):
    the common divisors of H's column tiles, up to MAX_SPLITS."""
    per_width = [set(legal_splits(hidden, parse_tile(t)[1], MAX_SPLITS)) for t in tiles]
    return tuple(sorted(set.intersection(*per_width)))


def comet_from_params(params: dict, tp_dispatch: str = "tokens") -> Comet:
    block_m, block_n = parse_tile(params["tile"])
    return Comet(block_m=block_m, block_n=block_n, comm_blocks0=int(params["comm_blocks0"]),
                 comm_blocks1=int(params["comm_blocks1"]), row_order=params["row_order"], n_splits=int(params["n_splits"]),
                 tp_dispatch=tp_dispatch)

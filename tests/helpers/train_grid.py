"""The dataset-size x batch-size x processes grid: one short `fit` per cell, with the `tinypool` model.

`fit_cell` trains one cell; `fit_cells` is what every process of a spawned process group runs
(tests/helpers/process_group.py), each cell's outcome written by rank 0 as <results>/<cell>.json.
"""

from __future__ import annotations

import dataclasses
import json
import traceback
from pathlib import Path

from tiny_arch import tiny_config

Cell = tuple[int, int]  # (images per split, batch size)


def cell_name(cell: Cell, world: int) -> str:
    return f"n{cell[0]}-b{cell[1]}-w{world}"


def fit_cell(data: Path, out: Path, batch_size: int):
    from segtrain.training.loop import fit

    return fit(tiny_config(data, out, epochs=1, batch_size=batch_size, lr=1e-3), log=lambda _: None)


def fit_cells(rank: int, cells: list[Cell], data_dir: str, out_dir: str, world: int) -> None:
    import pytest
    from tiny_arch import register_tiny

    with pytest.MonkeyPatch.context() as mp:
        register_tiny(mp)
        for cell in cells:
            name = cell_name(cell, world)
            try:
                fitted = fit_cell(Path(data_dir) / f"n{cell[0]}", Path(out_dir) / name, cell[1])
                result = {"ok": True, **dataclasses.asdict(fitted)}
            except Exception:
                result = {"ok": False, "error": traceback.format_exc(limit=3)}
            if rank == 0:
                (Path(out_dir) / f"{name}.json").write_text(json.dumps(result))

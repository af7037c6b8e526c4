"""BatchConfig: every setting through segtrain.common.settings, its defaults where the CLI reads them."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from segdeploy.cli import main
from segdeploy.infer.batch.config import BatchConfig, default_memory_budget


def test_the_budget_default_lives_in_batch_config_and_the_flag_is_checked(model: Path, tmp_path: Path) -> None:
    assert BatchConfig(sources="x", out_dir=tmp_path, model=model).memory_budget == default_memory_budget() >= 256
    res = CliRunner().invoke(main, ["batch", "x", "--out", str(tmp_path), "--memory-budget", "0"])
    assert res.exit_code == 2 and "'--memory-budget': 0 is not in the range" in res.stderr

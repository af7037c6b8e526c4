"""Ctrl-C and SIGTERM during `segtrain fit`: exit 130 / 143 with the command that continues, the last finished
epoch's files whole, never a write cut in half; a folder where no epoch finished is run into again; best-epoch
ties go to the lower validation loss."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from tiny_arch import POOL_ARCH, tiny_config, tiny_registered

from segtrain.cli import main
from segtrain.data.synthetic import make_sample_dataset
from segtrain.training.checkpoint import Checkpoint
from segtrain.training.interrupts import Stopped
from segtrain.training.loop import fit
from segtrain.training.run_files import RunOutputs, best_epoch

REPO = Path(__file__).resolve().parents[3]
TINY = ["--encoder", "conv", "--encoder-weights", "none", "--image-size", "32", "--batch-size", "2",
        "--workers", "0", "--device", "cpu", "--progress", "off", "--epochs", "3"]

# The child: `segtrain fit` with the tiny architectures registered; when epoch STOP_AT starts training it
# touches READY and waits there (at most 60 s) for the test's signal.
CHILD = """
import sys, time
from pathlib import Path
sys.path[:0] = [{repo!r}, {helpers!r}]
from tiny_arch import tiny_registered
import segtrain.training.loop as loop
from segtrain.cli import main
stop_at, ready = int(sys.argv[1]), Path(sys.argv[2])
original = loop.train_one_epoch
def waiting(*args, **kwargs):
    if args[6] == stop_at:
        ready.write_text("")
        time.sleep(60)
    return original(*args, **kwargs)
loop.train_one_epoch = waiting
with tiny_registered():
    main(sys.argv[3:], prog_name="segtrain")
"""


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_sample_dataset(tmp_path_factory.mktemp("interrupt-data") / "data", seed=4,
                               sizes={"train": 4, "validation": 2, "test": 1})


def fit_and_signal(tmp_path: Path, sig: int, stop_at: int, args: list[str]) -> subprocess.CompletedProcess:
    """Run the child fit, send `sig` once it waits in epoch `stop_at`; its exit code and output."""
    script, ready = tmp_path / "child.py", tmp_path / "ready"
    script.write_text(CHILD.format(repo=str(REPO), helpers=str(REPO / "tests" / "helpers")))
    child = subprocess.Popen([sys.executable, str(script), str(stop_at), str(ready), "fit", POOL_ARCH, *args],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 120
        while not ready.exists() and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert ready.exists(), child.communicate(timeout=30)
        child.send_signal(sig)
        out, err = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    return subprocess.CompletedProcess(child.args, child.returncode, out, err)


@pytest.mark.slow
def test_sigterm_stops_with_143_keeps_the_finished_epoch_and_names_the_resume(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    done = fit_and_signal(tmp_path, signal.SIGTERM, 2, ["--data", str(data), "--out", str(out), *TINY])
    assert done.returncode == 143, done
    last = out / "last.pth"
    assert done.stderr.strip().splitlines() == [
        f"Error: stopped by SIGTERM during epoch 2; {last} holds epoch 1 whole: continue with "
        f"`segtrain fit {POOL_ARCH} --resume {last}`"]
    assert Checkpoint.load(last).epoch == 1 and len((out / "metrics.csv").read_text().splitlines()) == 2
    with tiny_registered():  # the command it names works
        res = CliRunner().invoke(main, ["fit", POOL_ARCH, "--resume", str(last)])
    assert res.exit_code == 0, res.output
    assert Checkpoint.load(last).epoch == 3


@pytest.mark.slow
def test_ctrl_c_in_epoch_1_exits_130_and_the_same_command_runs_again(data: Path, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    args = ["--data", str(data), *TINY]  # no --out: runs/<model>
    done = fit_and_signal(tmp_path, signal.SIGINT, 1, args)
    folder = Path("runs") / POOL_ARCH
    assert done.returncode == 130, done
    assert done.stderr.strip().splitlines() == [
        f"Error: stopped by Ctrl-C before epoch 1 finished, so there is nothing to resume; run the same command "
        f"again ({folder} holds no finished epoch, so it is not protected as a run)"]
    assert not (tmp_path / folder / "last.pth").exists()
    monkeypatch.chdir(tmp_path)
    with tiny_registered():
        res = CliRunner().invoke(main, ["fit", POOL_ARCH, *args, "--epochs", "1"])
    assert res.exit_code == 0 and res.output.splitlines()[0] == f"writing to {folder}", res.output
    assert Checkpoint.load(tmp_path / folder / "last.pth").epoch == 1


def test_a_signal_while_the_epoch_is_written_waits_for_the_files(data: Path, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    write = RunOutputs.write
    written = []

    def write_then_check(self, weights, result):
        os.kill(os.getpid(), signal.SIGTERM)  # arrives at the start of the write
        write(self, weights, result)
        written.append(result.row["epoch"])

    monkeypatch.setattr(RunOutputs, "write", write_then_check)
    before = signal.getsignal(signal.SIGTERM)  # SIG_DFL, or what an earlier library (ray.init) installed
    out = tmp_path / "run"
    with tiny_registered(), pytest.raises(Stopped) as stopped:
        fit(tiny_config(data, out, epochs=3), log=lambda line: None)
    assert stopped.value.exit_code == 143 and written == [1]
    assert f"{out / 'last.pth'} holds epoch 1 whole" in str(stopped.value)
    assert Checkpoint.load(out / "last.pth").epoch == 1 and Checkpoint.load(out / "best_model.pth").epoch == 1
    assert signal.getsignal(signal.SIGTERM) is before  # put back


def test_ctrl_c_outside_training_is_130_not_aborted(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("segtrain.data.dataset_report.dataset_report", interrupted)
    res = CliRunner().invoke(main, ["data", str(tmp_path)])
    assert res.exit_code == 130 and res.output == "Error: interrupted (Ctrl-C); finished outputs are kept\n"


def row(epoch: int, miou: float, val_loss: float) -> dict:
    return {"epoch": epoch, "miou": miou, "val_loss": val_loss}


def test_best_epoch_ties_go_to_the_lower_validation_loss() -> None:
    assert best_epoch([row(1, 0.18, 1.55), row(2, 0.18, 0.29), row(3, 0.18, 0.40)]) == 2
    assert best_epoch([row(1, 0.18, 0.3), row(2, 0.18, 0.3)]) == 1  # a full tie: the first
    assert best_epoch([row(1, 0.2, 1.5), row(2, 0.18, 0.1)]) == 1  # mIoU first
    assert best_epoch([row(1, float("nan"), 0.1), row(2, 0.1, float("nan")), row(3, 0.1, 0.9)]) == 3

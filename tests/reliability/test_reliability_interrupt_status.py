"""A stopped run's exit status comes from the Hydra job itself: under a remote launcher (submitit, joblib) the
worker exits 143 / 130, and the stop survives the pickling that carries it back to the launching process."""

from __future__ import annotations

import pickle
import signal

import pytest
from omegaconf import OmegaConf

from ghmdet import train
from ghmdet.run.interrupts import RunInterrupted


@pytest.mark.parametrize("message", ["interrupted by SIGTERM at step 3: last.ckpt holds step 3", ""])
def test_a_stop_survives_pickling(message: str) -> None:
    copy = pickle.loads(pickle.dumps(RunInterrupted(signal.SIGTERM, message)))
    assert (copy.signum, copy.message, copy.exit_status) == (signal.SIGTERM, message, 143)
    assert str(copy) == (message or "SIGTERM")


@pytest.mark.parametrize(("signum", "status"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_the_job_itself_exits_with_128_plus_the_signal(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], signum: int, status: int
) -> None:
    line = f"interrupted by {signal.Signals(signum).name} at step 3: last.ckpt holds step 3"

    def stopped_run(cfg: object) -> dict:
        raise RunInterrupted(signum, line)

    monkeypatch.setattr(train, "run", stopped_run)
    job = train.hydra_app(one_line_errors=True)
    with pytest.raises(SystemExit) as exit_info:
        job(OmegaConf.create({}))  # a config passed in: Hydra calls the job function as is
    assert exit_info.value.code == status
    assert capsys.readouterr().err == f"ghmdet-train: {line}\n"

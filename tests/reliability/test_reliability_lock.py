"""One process per run dir: a second one (the same command twice, a sweep started while another runs) ends
with one line naming the holder and changes nothing; a lock left by a crash is taken over; in a multirun the
locked job fails as a job and the sweep goes on."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ghmdet.run.run_dir import LOCK_FILE, RunDirBusyError, RunDirLock
from tests.reliability.reliability_helpers import TINY, cli_env, read_record, train_command


def dead_pid() -> int:
    proc = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    return int(proc.stdout)


def test_a_second_lock_names_the_holder_and_a_released_one_is_free(tmp_path: Path) -> None:
    with RunDirLock(tmp_path):
        holder = json.loads((tmp_path / LOCK_FILE).read_text())
        assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
        with pytest.raises(RunDirBusyError) as error:
            RunDirLock(tmp_path).acquire()
        message = str(error.value)
        assert f"pid {os.getpid()} on {socket.gethostname()}" in message and str(tmp_path) in message
        assert "\n" not in message
    assert not (tmp_path / LOCK_FILE).exists()  # removed on release
    with RunDirLock(tmp_path):
        pass


def test_a_lock_file_left_by_a_crash_is_taken_over(tmp_path: Path) -> None:
    (tmp_path / LOCK_FILE).write_text(json.dumps({"pid": dead_pid(), "host": socket.gethostname()}))
    with RunDirLock(tmp_path):
        assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()


def test_a_dead_owners_children_are_waited_for(tmp_path: Path) -> None:
    # The lock is held by a process whose record names a dead owner (its orphaned DataLoader workers): the
    # lock is waited for, not refused.
    code = (
        "import fcntl, json, os, sys, time; "
        f"fd = os.open({str(tmp_path / LOCK_FILE)!r}, os.O_RDWR | os.O_CREAT); "
        "fcntl.flock(fd, fcntl.LOCK_EX); "
        f"os.write(fd, json.dumps({{'pid': {dead_pid()}, 'host': {socket.gethostname()!r}}}).encode()); "
        "print('locked', flush=True); time.sleep(1.5)"
    )
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None and child.stdout.readline().strip() == "locked"
    started = time.monotonic()
    with RunDirLock(tmp_path, orphan_wait_s=30):
        assert time.monotonic() - started > 0.5
    child.wait()
    with RunDirLock(tmp_path, orphan_wait_s=0):
        pass


@pytest.mark.slow
def test_the_same_command_twice_leaves_one_run(tmp_path: Path, data_dir: Path) -> None:
    run_dir = tmp_path / "run"
    command = train_command(run_dir, data_dir, "trainer.max_steps=30", "data.batch_size=1")
    first = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=cli_env()
    )
    deadline = time.monotonic() + 120
    while not (run_dir / LOCK_FILE).exists() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    second = subprocess.run(command, capture_output=True, text=True, env=cli_env(), timeout=120)
    _, first_err = first.communicate(timeout=240)
    assert first.returncode == 0, first_err[-3000:]
    assert second.returncode == 2, second.stderr[-3000:]
    lines = second.stderr.strip().splitlines()
    assert lines[-1].startswith("ghmdet-train: error: run dir ") and "Traceback" not in second.stderr
    assert f"in use by pid {first.pid} on {socket.gethostname()}" in lines[-1]
    record = read_record(run_dir)
    assert record["status"] == "completed" and record["iterations"] == 30
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["last.ckpt"]
    assert not list(run_dir.glob("metrics.*.json"))  # the second process recorded nothing
    steps = [line.split(",") for line in (run_dir / "csv" / "metrics.csv").read_text().splitlines()]
    column = steps[0].index("step")
    train_rows = [row[column] for row in steps[1:] if row[steps[0].index("train/loss")]]
    assert len(train_rows) == len(set(train_rows)) == 30  # one CSV row per step: one writer
    assert not (run_dir / LOCK_FILE).exists()


@pytest.mark.slow
def test_a_locked_job_of_a_multirun_fails_and_the_sweep_goes_on(
    tmp_path: Path, data_dir: Path, train: Callable[..., Any]
) -> None:
    sweep = tmp_path / "sweep"
    command = [
        sys.executable,
        "-m",
        "ghmdet.train",
        "-m",
        *TINY,
        f"paths.data_dir={data_dir}",
        f"hydra.sweep.dir={sweep}",
        "hydra.sweep.subdir=seed${seed}",
        "trainer.max_steps=2",
        "seed=0,1",
    ]
    (sweep / "seed0").mkdir(parents=True)
    with RunDirLock(sweep / "seed0"):  # as a job of another sweep still running there would
        proc = subprocess.run(command, capture_output=True, text=True, env=cli_env(), timeout=240)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert f"run dir {sweep / 'seed0'} is in use by pid {os.getpid()}" in proc.stderr.strip().splitlines()[-1]
    assert not (sweep / "seed0" / "metrics.json").exists()  # the running job's dir is left alone
    assert read_record(sweep / "seed1")["status"] == "completed"  # the sweep went on

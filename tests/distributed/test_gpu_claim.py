"""One GPU per joblib job: lock-file claims (no GPU needed: the ids are only strings here)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ghmdet.distributed import gpu_claim


@pytest.fixture
def fresh_claims(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """No claim held by this process; the handles claimed during the test are closed afterwards."""
    handles: list[object] = []
    monkeypatch.setattr(gpu_claim, "_CLAIMED", None)
    monkeypatch.delenv(gpu_claim.GPU_POOL_ENV, raising=False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    yield handles
    for handle in handles:
        handle.close()  # type: ignore[attr-defined]


def _claim(tmp_path: Path, handles: list[object], **kwargs: object) -> str:
    gpu_claim._CLAIMED = None  # as a new job process would start
    gpu = gpu_claim.claim_gpu(lock_dir=tmp_path, **kwargs)  # type: ignore[arg-type]
    handles.append(gpu_claim._CLAIMED[1])  # type: ignore[index]
    return gpu


def test_each_process_gets_its_own_gpu(tmp_path: Path, fresh_claims: list[object]) -> None:
    pool = ["4", "7"]
    assert _claim(tmp_path, fresh_claims, pool=pool) == "4"
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "4"
    assert _claim(tmp_path, fresh_claims, pool=pool) == "7"  # 4 is held (the lock of the first claim)
    with pytest.raises(RuntimeError, match=r"all GPUs \['4', '7'\] are held"):
        _claim(tmp_path, fresh_claims, pool=pool, wait_s=0)
    fresh_claims.pop(0).close()  # the job process holding GPU 4 exits
    assert _claim(tmp_path, fresh_claims, pool=pool, wait_s=0) == "4"


def test_a_process_keeps_its_gpu_for_later_jobs(tmp_path: Path, fresh_claims: list[object]) -> None:
    first = _claim(tmp_path, fresh_claims, pool=["0", "1"])
    os.environ["CUDA_VISIBLE_DEVICES"] = "something else"
    assert gpu_claim.claim_gpu(lock_dir=tmp_path, pool=["1"]) == first  # sticky: CUDA read it once
    assert os.environ["CUDA_VISIBLE_DEVICES"] == first


def test_locks_are_released_when_a_job_process_dies(tmp_path: Path, fresh_claims: list[object]) -> None:
    code = (
        "from ghmdet.distributed import gpu_claim as d; import sys; "
        f"print(d.claim_gpu(lock_dir={str(tmp_path)!r}, pool=['0', '1'], wait_s=0)); sys.stdout.flush(); "
        "sys.stdin.read()"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "0"
        assert _claim(tmp_path, fresh_claims, pool=["0", "1"], wait_s=0) == "1"
    finally:
        holder.communicate("", timeout=60)
    fresh_claims.pop().close()
    assert _claim(tmp_path, fresh_claims, pool=["0", "1"], wait_s=0) == "0"


def test_pool_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch, fresh_claims: list[object]) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert gpu_claim.gpu_pool() == ["2", "3"] and gpu_claim.gpu_count() == 2
    monkeypatch.setenv(gpu_claim.GPU_POOL_ENV, "5")
    assert gpu_claim.gpu_pool() == ["5"]
    monkeypatch.setenv(gpu_claim.GPU_POOL_ENV, "")
    assert gpu_claim.gpu_count() == 1  # no GPU: one job at a time


def test_no_gpu_is_a_clear_error(tmp_path: Path, fresh_claims: list[object]) -> None:
    with pytest.raises(RuntimeError, match="no GPU was found"):
        gpu_claim.claim_gpu(lock_dir=tmp_path, pool=[])

"""A run dir that can take results and has one writer: the output-dir check and the run dir's lock.

- :func:`check_output_dir`: the run dir must be writable (a probe file is written and fsync'ed) and have free
  space, before anything of an earlier run is moved;
- :class:`RunDirLock`: one process per run dir.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import socket
import sys
import time
from pathlib import Path
from typing import Any

#: free space a run dir needs at start-up unless the config sets ``min_free_disk_mb``
DEFAULT_MIN_FREE_MB = 100.0
#: Errors of an output dir that cannot take results (permissions, read-only, full disk, quota).
UNWRITABLE_ERRNOS = frozenset(
    {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.ENOTDIR}
)


class OutputDirError(OSError):
    """The run dir cannot take results (unwritable, read-only, full); raised before anything is written."""


def check_output_dir(out_dir: str | os.PathLike[str], min_free_mb: float = 0.0) -> None:
    """Raise :class:`OutputDirError` unless ``out_dir`` exists or can be made, takes a file and has space.

    A probe file is written, fsync'ed and removed (this catches read-only mounts, permissions, a full disk
    and quotas, which ``os.access`` does not); ``min_free_mb`` adds a free-space floor.
    """
    out_dir = Path(out_dir)
    probe = out_dir / f".write-probe-{os.getpid()}"
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with open(probe, "wb") as handle:
            handle.write(b"ghmdet write probe\n" * 64)
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as exc:
        raise OutputDirError(
            exc.errno,
            f"output dir {out_dir} is not writable: {exc.strerror or exc}; nothing was changed there",
        ) from exc
    finally:
        with contextlib.suppress(OSError):
            probe.unlink(missing_ok=True)
    if min_free_mb > 0:
        free_mb = shutil.disk_usage(out_dir).free / 2**20
        if free_mb < min_free_mb:
            raise OutputDirError(
                errno.ENOSPC,
                f"output dir {out_dir} has {free_mb:.0f} MiB free, less than "
                f"min_free_disk_mb={min_free_mb:g}; nothing was changed there",
            )


def describe_os_error(exc: OSError) -> str:
    """One line for an OSError: the message and the file it names."""
    if isinstance(exc, OutputDirError):
        return str(exc.strerror)
    where = f": {exc.filename}" if exc.filename else ""
    return f"{exc.strerror or exc}{where}"


#: The lock file of a run dir (removed when the run ends; one left by a crash is taken over).
LOCK_FILE = ".ghmdet-run.lock"


class RunDirBusyError(RuntimeError):
    """Another process holds the run dir's lock."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


class RunDirLock:
    """An exclusive lock on a run dir, so that two processes never train into one dir.

    ``flock`` on ``<run dir>/.ghmdet-run.lock``: the kernel releases it on any exit (a crash or SIGKILL
    included), so a lock file left behind is free and taken over. The file holds the owner's pid, host,
    start time and command, for the message a second process ends with. When the lock is held but its
    owner (same host) is dead, what holds it are the owner's orphaned children (DataLoader workers exit a
    moment after their parent): the lock is waited for, up to ``orphan_wait_s``. A lock that is not
    ``enabled`` takes nothing (DDP ranks share the run dir: only rank 0, the launching process, locks it).
    """

    def __init__(
        self, run_dir: str | os.PathLike[str], orphan_wait_s: float = 30.0, enabled: bool = True
    ) -> None:
        self.path = Path(run_dir) / LOCK_FILE
        self.orphan_wait_s = orphan_wait_s
        self.enabled = enabled
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise :class:`RunDirBusyError` naming the holder."""
        deadline = time.monotonic() + self.orphan_wait_s
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as err:
                holder = _read_holder(fd)
                os.close(fd)
                if err.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                if self._orphaned(holder) and time.monotonic() < deadline:
                    time.sleep(0.2)
                    continue
                raise RunDirBusyError(self._busy_message(holder)) from None
            try:
                current = os.stat(self.path).st_ino
            except FileNotFoundError:
                current = None
            if current != os.fstat(fd).st_ino:  # the owner removed the file as we opened it: try again
                os.close(fd)
                continue
            holder_text = json.dumps(
                {
                    "pid": os.getpid(),
                    "host": socket.gethostname(),
                    "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                    "command": " ".join(sys.argv),
                }
            )
            os.ftruncate(fd, 0)
            os.pwrite(fd, holder_text.encode() + b"\n", 0)
            self._fd = fd
            return

    def release(self) -> None:
        """Remove the lock file and release the lock (a no-op when not held)."""
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            if os.stat(self.path).st_ino == os.fstat(self._fd).st_ino:
                os.unlink(self.path)  # while still locked: a waiting process then retries on a new file
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> RunDirLock:
        if self.enabled:
            self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    @staticmethod
    def _orphaned(holder: dict[str, Any]) -> bool:
        pid = holder.get("pid")
        return isinstance(pid, int) and holder.get("host") == socket.gethostname() and not _pid_alive(pid)

    def _busy_message(self, holder: dict[str, Any]) -> str:
        run_dir = self.path.parent
        if not holder:
            who = "another process (its lock file names none)"
        else:
            pid, host = holder.get("pid", "?"), holder.get("host", "?")
            who = f"pid {pid} on {host} since {holder.get('started', '?')} ({holder.get('command', '?')})"
        if self._orphaned(holder):
            who += f"; that process is gone but its child processes still hold {self.path}"
        return (
            f"run dir {run_dir} is in use by {who}: two runs in one dir would overwrite each other's "
            "results. Wait for it to end (a stopped or killed run resumes with the same command) or give "
            "another hydra.run.dir"
        )


def _read_holder(fd: int) -> dict[str, Any]:
    try:
        holder = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return holder if isinstance(holder, dict) else {}

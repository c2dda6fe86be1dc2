"""One daemon per state directory: an exclusive ``flock`` on ``<state_dir>/lock``, taken before anything in the
directory is touched.

Two daemons on one directory destroy each other's frames: the second one's restore deletes the first one's new
files as orphans before it even fails to bind the port. The lock is held for the life of the process (the kernel
drops it when the process dies, kill -9 included, so a stale lock never blocks a restart); the file also names
the holder's pid, for the error message.
"""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path

from livewatch.errors import StateDirBusyError


class StateDirLock:
    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / "lock"
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise StateDirBusyError. OSError when the directory cannot hold a lock file."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)  # never a planted link
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EACCES):
                raise StateDirBusyError(
                    f"{self.path.parent}: another livewatch process (pid {holder or '?'}) uses this state directory; "
                    f"stop it or give this one its own --state-dir"
                ) from None
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None

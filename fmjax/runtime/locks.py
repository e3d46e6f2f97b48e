"""Exclusive file locks that die with their holder, and that say who holds them.

    with locks.exclusive(lock_file) as held:     # waits for the holder; held is True
      ...
    with locks.exclusive(lock_file, wait=False) as held:
      if not held: print(locks.holder(lock_file))  # 'pid 4242 on host gpu-3'

The lock is `flock` on the file, so the kernel releases it when the holder exits however it exits
(SIGKILL, power loss): a killed run never leaves a stale lock. The holder writes its pid and host
into the file once it holds it, for the messages of those that find it held. On a filesystem without
locks (NFS mounted nolock, Lustre without -o flock) it says so once and yields True: the work goes on
unguarded, as it would without the lock.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import socket
from typing import Iterator

from fmjax.runtime import console

# flock's errors where the filesystem has no locks
_NO_LOCKS = (errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP)


def holder(lock_file: str) -> str:
  """Who holds (or last held) `lock_file`: 'pid N on host H', or 'another process' where it does not say."""
  try:
    with open(lock_file, encoding="utf-8") as f:
      pid, _, host = f.read().strip().partition(" ")
  except OSError:
    return "another process"
  return f"pid {pid} on host {host}" if pid.isdigit() and host else "another process"


@contextlib.contextmanager
def exclusive(lock_file: str, wait: bool = True, waiting: str | None = None) -> Iterator[bool]:
  """Holds an exclusive lock on `lock_file` (created if missing, with its folder); yields whether it holds it.

  `wait=False` yields False at once where another process holds it. With `wait`, a lock found held is
  waited for, after one line (`waiting`, a phrase such as 'preparing /data/fmf', names what the holder
  is doing) naming the holder.
  """
  os.makedirs(os.path.dirname(lock_file) or ".", exist_ok=True)
  fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o644)
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      if not wait:
        yield False
        return
      console.say(f"waiting for {holder(lock_file)}" + (f", which is {waiting}" if waiting else "")
                  + f" (lock {lock_file})")
      fcntl.flock(fd, fcntl.LOCK_EX)
    except OSError as e:
      if e.errno not in _NO_LOCKS:
        raise
      console.say(f"{lock_file}: this filesystem has no file locks ({e.strerror}); two processes writing the "
                  "same files at once could collide")
      yield True
      return
    try:
      os.ftruncate(fd, 0)
      os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
    except OSError:  # a full disk: the lock holds all the same, only its holder's name is missing
      pass
    try:
      yield True
    finally:
      fcntl.flock(fd, fcntl.LOCK_UN)
  finally:
    os.close(fd)

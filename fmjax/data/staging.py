"""Writing data folders so that a crash at any moment leaves nothing a rerun trips over.

    with staging.exclusive(lock_file):        # one writer at a time; the lock dies with its holder
      with staging.staged(final) as partial:  # write into `partial`; it becomes `final` at the end
        ...

`staged` writes into `<final>.partial`, removes what a killed run left there first, and renames it
into place only when the block finishes; a block that raises removes it. An `OSError` (no space
left, a file that cannot be written) leaves the block as a `DataError` naming the folder.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
from typing import Iterator

from fmjax.runtime import console, errors

# flock's errors where the filesystem has no locks (NFS mounted nolock, Lustre without -o flock)
_NO_LOCKS = (errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP)


@contextlib.contextmanager
def exclusive(lock_file: str, wait: bool = True) -> Iterator[bool]:
  """Holds an exclusive lock on `lock_file` (created if missing); yields whether it holds it. The
  kernel releases it when the holder exits, however it exits, so a killed writer never blocks the next
  one. `wait=False` yields False at once where another process holds it. On a filesystem without
  locks it says so once and yields True: the work goes on unguarded, as it would without the lock."""
  os.makedirs(os.path.dirname(lock_file) or ".", exist_ok=True)
  with open(lock_file, "a") as f:
    try:
      fcntl.flock(f, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      yield False
      return
    except OSError as e:
      if e.errno not in _NO_LOCKS:
        raise
      console.say(f"{lock_file}: this filesystem has no file locks ({e.strerror}); two processes preparing the "
                  "same data at once could collide")
      yield True
      return
    try:
      yield True
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


def remove_leftover(path: str, what: str) -> None:
  """Removes `path` (a folder a killed run left), saying so."""
  if os.path.lexists(path):
    console.say(f"removing {path}, left by {what} that did not finish")
    shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def staged(final: str, what: str = "writing") -> Iterator[str]:
  """A fresh `<final>.partial` folder, renamed to `final` (which must be missing or empty) when the
  block ends; removed if the block raises. `what` names the work in messages ('generating ...')."""
  partial = f"{final.rstrip(os.sep)}.partial"
  parent = os.path.dirname(os.path.abspath(partial))
  if not os.access(parent, os.W_OK) or (os.path.isdir(final) and os.path.ismount(final)):
    raise errors.WorkdirError(f"{final}: {what} writes into {partial} first and renames it into place; "
                              f"{parent} cannot be written or {final} is a mount point: choose a folder inside it")
  remove_leftover(partial, "a run")
  try:
    os.makedirs(partial)
    yield partial
    if os.path.isdir(final) and not os.listdir(final):
      os.rmdir(final)
    os.replace(partial, final)
  except BaseException as e:
    shutil.rmtree(partial, ignore_errors=True)
    if isinstance(e, OSError) and not isinstance(e, errors.UserError):  # the machine's: no space left
      raise errors.DataError(f"{e.filename or final}: {what} failed: {e.strerror or e}; nothing was kept, "
                             "a rerun starts again") from None
    raise

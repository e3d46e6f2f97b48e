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
import fcntl
import os
import shutil
from typing import Iterator

from fmjax import console, errors


@contextlib.contextmanager
def exclusive(lock_file: str) -> Iterator[None]:
  """Holds an exclusive lock on `lock_file` (created if missing). The kernel releases it when the
  holder exits, however it exits, so a killed writer never blocks the next one."""
  os.makedirs(os.path.dirname(lock_file) or ".", exist_ok=True)
  with open(lock_file, "a") as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    try:
      yield
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
  remove_leftover(partial, "a run")
  try:
    os.makedirs(partial)
    yield partial
    if os.path.isdir(final) and not os.listdir(final):
      os.rmdir(final)
    os.replace(partial, final)
  except errors.UserError:
    shutil.rmtree(partial, ignore_errors=True)
    raise
  except OSError as e:
    shutil.rmtree(partial, ignore_errors=True)
    raise errors.DataError(f"{e.filename or final}: {what} failed: {e.strerror or e}; nothing was kept, "
                           "a rerun starts again") from None
  except BaseException:
    shutil.rmtree(partial, ignore_errors=True)
    raise

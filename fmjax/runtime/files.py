"""Writing a run's or a dataset's small files whole or not at all, and naming a full disk.

    files.write_atomic(path, text)   # <dir>/.<name>.tmp-<pid>, flushed and fsynced, then renamed onto path

A reader (or a crash at any moment) sees the old file or the new one, never half of one. An `OSError`
while writing removes the temporary file; no space left (ENOSPC, EDQUOT) is raised as `no_space`'s
one-line error naming the folder, the bytes needed where known and the bytes free.
"""

from __future__ import annotations

import errno
import os
import shutil

from fmjax.runtime import errors

NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
NO_SPACE_TEXTS = tuple(os.strerror(number) for number in NO_SPACE)  # how tensorstore and array_record say it


def is_no_space(error: BaseException) -> bool:
  """Whether `error`, or an exception it was raised from, is a full disk or an exhausted quota."""
  return any((isinstance(e, OSError) and e.errno in NO_SPACE)
             or any(text in str(e) for text in NO_SPACE_TEXTS)  # tensorstore and array_record report it as text
             for e in errors.causes(error))


def no_space_of(error: BaseException, directory: str) -> errors.UserError:
  """`no_space`'s error for `error` (a full disk in its chain, see `is_no_space`) that no layer below named:
  the folder of the file its OSError names, else `directory` (the command's own folder)."""
  path = next((os.fspath(e.filename) for e in errors.causes(error) if isinstance(e, OSError) and e.filename), None)
  return no_space(os.path.dirname(path) if path else directory,
                  f"writing {os.path.basename(path)}" if path else "writing its files")


def free_bytes(directory: str) -> int | None:
  """Bytes free to this user in `directory` (or its nearest existing parent); None where unknown."""
  while directory and not os.path.isdir(directory):
    directory = os.path.dirname(directory)
  try:
    return shutil.disk_usage(directory or ".").free
  except OSError:
    return None


def _size(n: int) -> str:
  return f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


def no_space(directory: str, what: str, needed: int | None = None, kept: str = "",
             error: type[errors.UserError] = errors.WorkdirError) -> errors.UserError:
  """The one-line error for a full disk while `what` (e.g. 'saving checkpoint step 300') in `directory`:
  the space needed where known, the space free, and `kept` (what is still intact)."""
  free = free_bytes(directory)
  need = f"about {_size(needed)} needed, " if needed else ""
  have = f"{_size(free)} free" if free is not None else "free space unknown"
  return error(f"{directory}: no space left on device while {what} ({need}{have}); "
               f"{kept + '; ' if kept else ''}free some space (or pick another folder) and rerun")


def write_atomic(path: str, data: str | bytes, what: str | None = None) -> str:
  """Writes `data` to `path` through a temporary file in its folder, fsynced, then renamed; returns `path`.

  A full disk is a WorkdirError naming the folder (`what` says what was being written, default the file's
  name); the previous `path`, if any, is untouched.
  """
  directory = os.path.dirname(os.path.abspath(path))
  temporary = os.path.join(directory, f".{os.path.basename(path)}.tmp-{os.getpid()}")
  raw = data.encode("utf-8") if isinstance(data, str) else data
  try:
    with open(temporary, "wb") as f:
      f.write(raw)
      f.flush()
      os.fsync(f.fileno())
    os.replace(temporary, path)
  except BaseException as e:
    if os.path.exists(temporary):
      os.remove(temporary)
    if isinstance(e, OSError) and is_no_space(e):
      raise no_space(directory, f"writing {what or os.path.basename(path)}", len(raw),
                     kept=f"{path} is unchanged" if os.path.exists(path) else "") from None
    raise
  return path

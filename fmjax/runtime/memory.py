"""This process's peak resident memory, as the jobs and the data commands report it (`peak_rss_mb`).

On Linux it is the high-water mark of this program's own memory (`VmHWM` in /proc/self/status).
`getrusage`'s `ru_maxrss` would also count the memory of the process that started it: a process
started by fork and exec keeps its parent's peak at the time of the fork (a job started from a
notebook or a benchmark that holds 3 GB would report at least 3 GB). Elsewhere (macOS) `ru_maxrss`.
"""

import resource
import sys


def peak_rss_mb() -> float:
  """This program's peak resident memory so far, in MiB."""
  try:
    with open("/proc/self/status") as f:
      for line in f:
        if line.startswith("VmHWM:"):
          return round(int(line.split()[1]) / 1024, 1)  # kB
  except OSError:
    pass
  peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  return round(peak / (2 ** 20 if sys.platform == "darwin" else 2 ** 10), 1)  # bytes on macOS, KiB on Linux

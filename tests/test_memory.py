"""peak_rss_mb: a program's own peak memory, not that of the process that started it."""

import os
import subprocess
import sys

import numpy as np

from fmjax.runtime import memory

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_a_child_does_not_report_its_parents_memory():
  held = np.ones(600 * 2 ** 20, np.uint8)  # 600 MiB resident in this process
  assert memory.peak_rss_mb() > 600
  child = subprocess.run([sys.executable, "-c", "from fmjax.runtime import memory; print(memory.peak_rss_mb())"],
                         capture_output=True, text=True, check=True, cwd=REPO)
  assert 1 < float(child.stdout) < 300  # ru_maxrss would say > 600
  del held

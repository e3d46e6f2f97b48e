"""How the entry points end on a user's mistake (fmjax.runtime.exits): one `error:` line, exit status 1, no
traceback; a bug keeps its traceback. The benches that run jobs end the same way as launch/main.py."""

import errno
import os
import subprocess
import sys

import pytest

from fmjax.runtime import errors, exits

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_a_user_error_is_its_message_on_one_line(capsys):
  with pytest.raises(SystemExit) as stopped:
    with exits.one_line_errors("/runs/x"):
      raise errors.DataError("/data/furnace: no such folder")
  assert stopped.value.code == 1
  assert capsys.readouterr().err == "error: /data/furnace: no such folder\n"


def test_a_full_disk_a_library_reported_as_its_own_error_names_the_folder(tmp_path, capsys):
  full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp_path / "records" / "part-0"))
  with pytest.raises(SystemExit) as stopped:
    with exits.one_line_errors("/runs/x"):
      try:
        raise full
      except OSError as e:
        raise ValueError("writing the records failed") from e  # e.g. array_record's own error
  assert stopped.value.code == 1
  err = capsys.readouterr().err
  assert err.startswith(f"error: {tmp_path / 'records'}: no space left on device while writing part-0 ("), err
  assert err.count("\n") == 1, err
  with pytest.raises(SystemExit):
    with exits.one_line_errors(str(tmp_path)):
      raise RuntimeError(os.strerror(errno.ENOSPC))  # named by text only (tensorstore): the command's folder
  assert capsys.readouterr().err.startswith(f"error: {tmp_path}: no space left on device while writing its files")


def test_a_bug_keeps_its_traceback():
  with pytest.raises(KeyError, match="w"):
    with exits.one_line_errors("/runs/x"):
      {}["w"]


def test_a_bench_given_a_missing_root_stops_in_one_line(tmp_path):
  done = subprocess.run([sys.executable, os.path.join(REPO, "bench", "aligner_table.py"), "--workdir",
                         str(tmp_path / "runs"), "--variants", "default", "--seeds", "0", "--root",
                         str(tmp_path / "nowhere")], cwd=REPO, capture_output=True, text=True, timeout=300)
  assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
  assert done.stderr.strip().splitlines()[-1] == f"error: {tmp_path / 'nowhere'}: no such folder", done.stderr

"""A full disk, for real: a small tmpfs mounted for the test (as root, where mount works; skipped otherwise).

Every file fmjax writes is written whole or not at all, a full disk is one line naming the folder (and the space
needed where known), and the newest intact checkpoint is kept.
"""

import errno
import logging
import os
import shutil
import subprocess
import sys
import time

import crash
import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from absl import logging as absl_logging

from fmjax.checkpoints import checkpointer, restore
from fmjax.convert import torch_fmformer
from fmjax.data import downsampled, tfds_fmf
from fmjax.runtime import errors, files, paths, report
from fmjax.train import loop, writers

pytestmark = pytest.mark.stack  # orbax's full-disk failures, also on Colab's versions (.ci/run, setup.cfg)
MB = 1 << 20


@pytest.fixture
def small_disk(tmp_path):
  """mount(megabytes) -> a fresh tmpfs of that size under tmp_path, unmounted after the test."""
  mounted = []

  def mount(megabytes: int) -> str:
    if os.geteuid() != 0:
      pytest.skip("mounting a tmpfs needs root")
    folder = tmp_path / f"disk{len(mounted)}"
    folder.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={megabytes}m", "tmpfs", str(folder)],
                          capture_output=True, text=True, check=False)
    if done.returncode:
      pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    mounted.append(str(folder))
    return str(folder)

  yield mount
  for folder in mounted:
    subprocess.run(["umount", folder], check=False)


def fill(folder: str, leave: int = 0) -> str:
  """Writes a filler file in `folder` until at most `leave` bytes are free there; its path."""
  path = os.path.join(folder, "filler")
  with open(path, "ab") as f:
    try:
      while files.free_bytes(folder) > leave:
        f.write(b"\xff" * min(64 << 10, max(files.free_bytes(folder) - leave, 4096)))
        f.flush()
    except OSError as e:
      assert e.errno == errno.ENOSPC
  return path


def random_state(step: int) -> dict:
  """About 1.2 MB that does not compress (orbax compresses its array files)."""
  return {"w": jax.random.normal(jax.random.PRNGKey(step), (1200, 250)), "step": np.asarray(step)}


def test_a_save_on_a_full_disk_is_one_line_and_keeps_the_step_before(small_disk):
  directory = os.path.join(small_disk(4), "checkpoints")
  with checkpointer.Checkpointer(directory, every_steps=1, keep=1) as ckpt:  # keep=1: step 1 must outlive step 2
    assert ckpt.maybe_save(1, random_state(1))
    ckpt.wait()
    filler = fill(os.path.dirname(directory), leave=MB // 2)
    assert ckpt.maybe_save(2, random_state(2))
    with pytest.raises(errors.WorkdirError) as error:
      ckpt.wait()
    message = str(error.value)
    assert message.startswith(f"{directory}: no space left on device while saving checkpoint step 2 (about 1.2 MB "
                              f"needed, "), message
    assert "free); the newest intact checkpoint, step 1, is kept;" in message and "\n" not in message, message
    assert sorted(os.listdir(directory)) == ["1"]  # the half-written step 2 is gone
    restored = ckpt.restore(random_state(0))
    np.testing.assert_array_equal(restored["w"], random_state(1)["w"])
    os.remove(filler)  # space freed: the same save goes through
    assert ckpt.maybe_save(2, random_state(2))
    ckpt.wait()
    assert ckpt.all_steps() == [2]


@pytest.fixture
def absl_records():
  """The records absl's logger hands to its handlers during the test."""
  seen = []
  handler = logging.Handler()
  handler.emit = seen.append
  absl_logging.get_absl_logger().addHandler(handler)
  yield seen
  absl_logging.get_absl_logger().removeHandler(handler)


def orbax_logs(text: str) -> None:
  """Logs a ValueError(`text`) as orbax's save thread logs its failure (`logging.exception` in orbax's
  futures/future.py), from a file of orbax's."""
  logger = absl_logging.get_absl_logger()
  try:
    raise ValueError(text)
  except ValueError as e:
    record = logger.makeRecord(logger.name, logging.ERROR,
                               os.path.join(os.path.dirname(ocp.__file__), "_src", "futures", "future.py"), 387,
                               "_SignalingThread.run() raised an exception: %s", (e,), sys.exc_info())
  logger.handle(record)


# What orbax 0.12.4 logged once, under load, of a save on a full disk: an error that does not name it.
CUT_SHORT = ('NOT_FOUND: Error writing "opt_state.mu/0" in OCDBT database at local file "{}/2.orbax-checkpoint-tmp/'
             'ocdbt.process_0/": Error reading Byte range [27287, 43310) of local file "{}/2.orbax-checkpoint-tmp/'
             'ocdbt.process_0/d/3ef5f87aa6647ed8247f1cef21c0198a"')


@pytest.mark.parametrize("surfaces_at", ["the next save", "close"])
def test_a_full_disk_surfacing_later_names_the_failed_step(small_disk, capfd, absl_records, surfaces_at):
  directory = os.path.join(small_disk(4), "checkpoints")
  cut_short = CUT_SHORT.format(directory, directory)
  with pytest.raises(errors.WorkdirError, match=r"while saving checkpoint step 2 .*step 1, is kept"):
    with checkpointer.Checkpointer(directory, every_steps=1, keep=2) as ckpt:
      assert ckpt.maybe_save(1, random_state(1))
      ckpt.wait()
      fill(os.path.dirname(directory), leave=MB // 2)
      assert ckpt.maybe_save(2, random_state(2))
      orbax_logs(cut_short)  # held until the save's end is known
      if surfaces_at == "the next save":
        ckpt.maybe_save(3, random_state(3))
      orbax_logs(cut_short.replace("d/3ef5", "d/9c01"))  # another write of the step (after its failure: dropped)
  assert sorted(os.listdir(directory)) == ["1"]
  err = capfd.readouterr().err
  assert "Traceback" not in err and "No space left" not in err, err  # orbax's own logs of it are dropped
  assert not [record for record in absl_records if record.exc_info], absl_records
  orbax_logs(cut_short)  # orbax logging the failure again after the Checkpointer closed
  assert not absl_records
  with checkpointer.Checkpointer(directory, every_steps=1) as ckpt:
    assert ckpt.restore_or_init(random_state(0))[1] == 1


@pytest.mark.parametrize("ending", ["close", "another failure"])
def test_what_orbax_logs_of_a_save_that_did_not_meet_a_full_disk_is_passed_on(tmp_path, absl_records, ending):
  directory = os.path.join(tmp_path, "checkpoints")
  with checkpointer.Checkpointer(directory, every_steps=1) as ckpt:
    assert ckpt.maybe_save(1, random_state(1))
    orbax_logs(f"an error of {directory} that names no full disk")
    assert not absl_records  # held until the save's end is known
    if ending == "another failure":
      finish = ckpt._manager.wait_until_finished

      def fail_once():
        ckpt._manager.wait_until_finished = finish
        raise RuntimeError("the disk went away")

      ckpt._manager.wait_until_finished = fail_once
      with pytest.raises(RuntimeError, match="^the disk went away$"):
        ckpt.wait()
      assert len(absl_records) == 1  # passed on before the failure propagates
  assert [str(record.exc_info[1]) for record in absl_records] == [f"an error of {directory} that names no full disk"]


def test_small_files_on_a_full_disk_keep_their_old_content(small_disk):
  folder = small_disk(1)
  summary = os.path.join(folder, "summary.json")
  files.write_atomic(summary, '{"acc": 0.5}')
  fill(folder)
  with pytest.raises(errors.WorkdirError, match=rf"^{folder}: no space left on device while writing summary.json "
                                                r"\(about .* needed, .* free\); .*summary.json is unchanged"):
    files.write_atomic(summary, '{"acc": 0.75, "f1": 0.5}' + " " * 8192)
  with open(summary, encoding="utf-8") as f:
    assert f.read() == '{"acc": 0.5}'
  assert sorted(os.listdir(folder)) == ["filler", "summary.json"]  # no temporary file left
  page = report.Report(folder, "run")
  page.add_text("text", "x" * 8192)
  with pytest.raises(errors.WorkdirError, match=rf"^{folder}: no space left on device while writing report.md"):
    page.write()


def test_a_full_workdir_fails_the_writability_check(small_disk):
  folder = small_disk(1)
  fill(folder)
  with pytest.raises(errors.WorkdirError, match=rf"^{folder}: no space left on device while checking that the "
                                                r"workdir can be written"):
    paths.ensure_writable_dir(folder)


def test_metrics_on_a_full_disk_are_one_line(small_disk):
  folder = small_disk(1)
  with writers.MetricWriter(folder) as writer:
    writer.write(1, {"loss": 1.0})
    fill(folder)
    with pytest.raises(errors.WorkdirError, match=rf"^{folder}(/tb)?: no space left on device while (appending to "
                                                  r"metrics.jsonl|writing TensorBoard's event file)"):
      for step in range(2, 2000):  # a tmpfs page may hold the first lines
        writer.write(step, {"loss": 1.0})
  assert writers.read_metrics(folder)[0] == {"step": 1, "split": "train", "loss": 1.0}


# ----------------------------------------------------------------------------- a training run that fills its disk


def checkpoint_steps(checkpoints: str) -> list[int]:
  return sorted(int(name) for name in os.listdir(checkpoints) if name.isdigit())


def wait_for_step(checkpoints: str, step: int, timeout_s: float = 120) -> None:
  """Until `step`'s async save has finished (its directory renamed into place, nothing unfinished beside it)."""
  deadline = time.time() + timeout_s
  while step not in checkpoint_steps(checkpoints) or any(checkpointer._UNFINISHED_MARK in n
                                                          for n in os.listdir(checkpoints)):
    assert time.time() < deadline, os.listdir(checkpoints)
    time.sleep(0.05)


@pytest.mark.slow
def test_a_run_that_fills_its_disk_stops_in_one_line_and_resumes(small_disk, tiny_job, capfd):
  """The disk fills after step 3's checkpoint (6 steps, checkpoints every 3): step 6's save fails in one line,
  step 3 stays restorable, and once space is freed the same run resumes from it and finishes."""
  workdir = os.path.join(small_disk(64), "run")
  checkpoints = os.path.join(workdir, "checkpoints")
  filler = []

  def fill_after_step_3(step: int) -> None:
    if step == 5:
      wait_for_step(checkpoints, 3)
      filler.append(fill(os.path.dirname(workdir), leave=64 << 10))  # room for metrics lines, not a checkpoint

  with pytest.raises(errors.WorkdirError) as error:
    loop.train_and_evaluate(tiny_job("fmformer"), workdir, on_step=fill_after_step_3)
  message = str(error.value)
  assert message.startswith(f"{checkpoints}: no space left on device while saving checkpoint step 6 (about "), message
  assert " needed, " in message and "the newest intact checkpoint, step 3, is kept" in message, message
  assert checkpoint_steps(checkpoints) == [3] and sorted(os.listdir(checkpoints)) == ["3", "config.json"]
  assert "Traceback" not in capfd.readouterr().err
  assert int(restore.read_weights(checkpoints)[1]) == 3
  os.remove(filler[0])
  summary = loop.train_and_evaluate(tiny_job("fmformer"), workdir)
  assert summary["steps"] == 6 and checkpoint_steps(checkpoints) == [3, 6]
  assert f"resuming from step 3 of {checkpoints}" in capfd.readouterr().err


def disk_bytes(folder: str) -> int:
  """What the files under `folder` take on a disk of 4 KiB pages."""
  return sum(-(-os.path.getsize(os.path.join(d, n)) // 4096) * 4096 for d, _, names in os.walk(folder) for n in names)


@pytest.mark.slow
def test_cli_a_disk_with_room_for_one_checkpoint(small_disk, fmformer_run, tiny_root, data_dir, cli_env):
  """The tiny run (checkpoints at steps 3 and 6) on a disk with room for about one and a half checkpoints:
  one `error:` line at step 6's save, step 3 kept; once space is freed, the same command resumes from step 3."""
  size = disk_bytes(os.path.join(fmformer_run[0], "checkpoints", "3"))
  assert size > 256 << 10, size  # (520 KB) far more than the run's small files (config, metrics, events: 16 KB)
  disk = small_disk(64)
  workdir = os.path.join(disk, "run")
  checkpoints = os.path.join(workdir, "checkpoints")
  filler = fill(disk, leave=size * 3 // 2 + (64 << 10))
  flags = (f"--config={os.path.join(crash.REPO, 'configs', 'fmformer.py')}:tiny", f"--workdir={workdir}",
           f"--config.data.root={tiny_root}", f"--config.data.data_dir={data_dir}", "--config.num_devices=1")
  stopped = crash.run_cli(disk, cli_env, *flags)
  assert stopped.returncode == 1 and "Traceback" not in stopped.stderr, stopped.stderr
  last = stopped.stderr.strip().splitlines()[-1]
  assert last.startswith(f"error: {checkpoints}: no space left on device while saving checkpoint step 6 (about "), last
  assert last.endswith("free); the newest intact checkpoint, step 3, is kept; free some space (or pick another "
                       "folder) and rerun"), last
  assert sorted(os.listdir(checkpoints)) == ["3", "config.json"]
  os.remove(filler)
  resumed = crash.run_cli(disk, cli_env, *flags)
  assert resumed.returncode == 0 and "Traceback" not in resumed.stderr, resumed.stderr
  assert f"resuming from step 3 of {checkpoints}" in resumed.stderr
  assert checkpoint_steps(checkpoints) == [3, 6]


# ----------------------------------------------------------------------------- data written on a full disk


def test_converting_official_weights_onto_a_full_disk_is_one_line(small_disk, capsys):
  from test_fmformer import fixture_path

  disk = small_disk(1)
  out = os.path.join(disk, "converted")
  fill(disk)
  assert torch_fmformer.main(["convert", fixture_path("vicu_seg"), out]) == 1
  err = capsys.readouterr().err
  assert err.startswith(f"error: {out}: no space left on device while writing its files ("), err
  assert err.count("\n") == 1, err


def test_the_reduced_frames_on_a_full_disk_are_one_line_and_keep_nothing(small_disk, tiny_root, data_dir):
  prepared_dir = tfds_fmf.load(tiny_root, data_dir).data_dir
  disk = small_disk(16)
  copy = os.path.join(disk, os.path.relpath(prepared_dir, data_dir))
  shutil.copytree(prepared_dir, copy, ignore=shutil.ignore_patterns("downsampled*", "*.lock"))
  prepared = tfds_fmf.load(tiny_root, disk)
  assert prepared.data_dir == copy
  fill(disk, leave=64 << 10)
  with pytest.raises(errors.DataError, match=rf"^{copy}: no space left on device while writing the reduced frames "
                                             r"downsampled_x4.npy \(about 0.5 MB needed, 0.1 MB free\); nothing "
                                             r"half-written was kept"):
    downsampled.ensure(prepared, 4)
  assert not [name for name in os.listdir(copy) if name.startswith("downsampled")]


def test_preparing_records_on_a_disk_that_fills_meanwhile_is_one_line(small_disk, tiny_root, monkeypatch):
  """The free space is checked up front; a disk that fills while the records are written (here: the check
  told nothing is needed) still stops in one line, with nothing kept."""
  disk = small_disk(2)
  monkeypatch.setattr(tfds_fmf, "prepared_bytes", lambda summaries: 0)
  with pytest.raises(errors.DataError, match=rf"^{disk}/fmf_frames/\S+: writing the records of {tiny_root} failed "
                                             r"\(.*No space left on device.*\); nothing was kept"):
    tfds_fmf.load(tiny_root, disk)
  assert not [path for path, _, names in os.walk(disk) for name in names if name != ".prepare.lock"]

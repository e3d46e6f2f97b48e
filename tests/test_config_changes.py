"""A resumed run's config against the one its checkpoints were saved with (fmjax.checkpoints.config_changes):
another learning rate stops the run before any work unless accepted; safe changes go through; both are
recorded in config.json at the step the run resumed from, and readers of config.json see the config in effect."""

import json
import os
import shutil

import crash  # tests/ is on the path
import pytest

from fmjax.checkpoints import config_changes, config_file, runs
from fmjax.runtime import errors
from fmjax.train import loop

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def files_of(workdir: str) -> dict[str, bytes]:
  """Every file under `workdir`, by relative path, with its bytes (but the workdir's lock, which names the
  newest run that held it: a run refused after taking it still held it)."""
  out = {}
  for folder, _, names in os.walk(workdir):
    for name in names:
      if name == loop.LOCK_FILE:
        continue
      path = os.path.join(folder, name)
      with open(path, "rb") as f:
        out[os.path.relpath(path, workdir)] = f.read()
  return out


def saved(workdir: str) -> dict:
  with open(os.path.join(workdir, "checkpoints", "config.json"), encoding="utf-8") as f:
    return json.load(f)


def test_cli_resume_with_another_learning_rate_stops_before_any_work_and_loses_nothing(fmformer_run, cli_env,
                                                                                      tmp_path):
  workdir = str(tmp_path / "run")
  shutil.copytree(fmformer_run[0], workdir)  # a finished tiny run: checkpoints at 3 and 6
  before = files_of(workdir)
  lr = saved(workdir)["optimizer"]["lr"]
  fresh_data = tmp_path / "data"  # a data dir of its own (a safe change): nothing may be generated there
  result = crash.run_cli(tmp_path, cli_env, f"--config={os.path.join(REPO, 'configs', 'fmformer.py')}:tiny",
                         f"--workdir={workdir}", "--config.num_devices=1", f"--config.data.data_dir={fresh_data}",
                         f"--config.optimizer.lr={lr * 4}")
  assert result.returncode == 1, result.stderr
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1, result.stderr
  assert lines[0] == (f"error: {workdir}/checkpoints/config.json: this run resumes with another config; 1 key "
                      f"differs: optimizer.lr (saved {lr}, given {lr * 4}); rerun with --config.accept_changes=True "
                      f"to resume with the change (recorded in config.json), or with --config.restart=True to "
                      f"start afresh (the checkpoints are kept aside)")
  assert files_of(workdir) == before  # checkpoints, config.json and the run's files, byte for byte
  assert not fresh_data.exists()


def test_safe_and_accepted_changes_resume_and_are_recorded_at_the_step_resumed_from(tiny_job, fmformer_run,
                                                                                   tmp_path):
  workdir = str(tmp_path / "run")
  shutil.copytree(fmformer_run[0], workdir)
  os.remove(os.path.join(workdir, "checkpoints", "6", "default", "_METADATA"))  # damaged: resumes from 3
  as_started = {**saved(workdir), "num_train_steps": 5}  # as if started for 5 steps (its step 3 is the same)
  with open(os.path.join(workdir, "checkpoints", "config.json"), "w", encoding="utf-8") as f:
    json.dump(as_started, f)
  assert config_file.CHANGES_KEY not in saved(workdir)

  # Extending the run is safe: no flag needed (to the shared run's 6 steps: its compiled programs)
  assert loop.train_and_evaluate(tiny_job("fmformer"), workdir)["steps"] == 6
  first = [{"step": 3, "key": "num_train_steps", "saved": 5, "given": 6}]
  assert saved(workdir)["num_train_steps"] == 6 and saved(workdir)[config_file.CHANGES_KEY] == first

  # Another learning rate is refused, then accepted with the flag
  config = tiny_job("fmformer")
  lr = config.optimizer.lr
  config.optimizer.lr = lr * 4
  with pytest.raises(errors.ConfigError, match=r"optimizer\.lr \(saved "):
    loop.train_and_evaluate(config, workdir)
  config.accept_changes = True
  assert loop.train_and_evaluate(config, workdir)["steps"] == 6  # resumed at 6: evaluated only
  in_effect = saved(workdir)
  assert in_effect["optimizer"]["lr"] == lr * 4 and in_effect["accept_changes"] is False  # takes on these only
  change = {"step": 6, "key": "optimizer.lr", "saved": lr, "given": lr * 4}
  assert in_effect[config_file.CHANGES_KEY] == first + [change]
  config.accept_changes, config.optimizer.lr = False, lr * 2  # a later change is checked again
  with pytest.raises(errors.ConfigError, match=r"optimizer\.lr \(saved "):
    loop.train_and_evaluate(config, workdir)

  # Readers of config.json see the config in effect, without the history
  for read in (config_file.run_config(workdir, "fmformer", "FmFormer", "an"), runs.read(workdir).config):
    assert read.optimizer.lr == lr * 4 and read.num_train_steps == 6 and config_file.CHANGES_KEY not in read
  assert type(runs.model_of(runs.read(workdir))).__name__ == "FmFormer"


def test_the_error_names_every_key_and_shortens_the_values(tmp_path):
  base = {"seed": 0, "model": {"dim": 8, "name": "x"}, "data": {"root": "/a", "data_dir": "/c"}, "log_every": 2}
  (tmp_path / "config.json").write_text(json.dumps({**base, config_file.CHANGES_KEY: [{"step": 1}]}))
  given = {"seed": 1, "model": {"dim": 16, "heads": 2}, "data": {"root": "/b" * 40, "data_dir": "/d"},
           "log_every": 5}
  config = config_file.parse(json.dumps(given))
  with pytest.raises(errors.ConfigError) as error:
    config_changes.check(str(tmp_path), config)
  message = str(error.value)
  assert "5 keys differ: seed (saved 0, given 1), model.dim (saved 8, given 16), model.name (saved \"x\", given " \
         "(absent)), and 2 more: data.root, model.heads; rerun with --config.accept_changes=True" in message, message
  assert "\n" not in message and "log_every" not in message and "data_dir" not in message  # safe ones
  config = config_file.parse(json.dumps({**given, "data": {"root": "/a", "data_dir": "/d"}, "model": base["model"],
                                         "seed": 0}))
  assert [c.key for c in config_changes.check(str(tmp_path), config)] == ["data.data_dir", "log_every"]
  assert config_changes.differences({"a": [1, 2]}, {"a": [1, 2]}) == []  # tuples saved as lists compare equal

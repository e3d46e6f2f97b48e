"""Checkpointer: save/restore round trips, keep-N, save cadence, resume, sharding, signals, errors, config."""

import builtins
import errno
import json
import os
import signal
import threading

import crash
import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import tensorstore
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from fmjax.checkpoints import checkpointer, config_file, restore
from fmjax.runtime import errors
from fmjax.train import loop

pytestmark = pytest.mark.stack  # also run on Colab's versions (.ci/run, setup.cfg)


class TrainState(flax.struct.PyTreeNode):
  step: jax.Array
  params: dict
  opt_state: optax.OptState
  batch_stats: dict
  rng: jax.Array


def make_state(seed: int = 0, width: int = 3, typed_key: bool = False) -> TrainState:
  """A small train state with an adamw optimiser state, BatchNorm-like statistics and a PRNG key."""
  k = jax.random.PRNGKey(seed)
  params = {"dense": {"kernel": jax.random.normal(k, (4, width)), "bias": jnp.zeros(width)}}
  return TrainState(step=jnp.asarray(seed, jnp.int32), params=params, opt_state=optax.adamw(1e-3).init(params),
                    batch_stats={"mean": jnp.full((width,), float(seed))},
                    rng=jax.random.key(seed) if typed_key else jax.random.PRNGKey(seed))


def leaves_equal(a, b) -> bool:
  unwrap = lambda x: jax.random.key_data(x) if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key) else x
  la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
  return len(la) == len(lb) and all(np.array_equal(unwrap(x), unwrap(y)) for x, y in zip(la, lb))


@pytest.fixture(autouse=True)
def no_leaked_threads():
  """Each test closes its managers: no orbax background thread outlives it.

  Threads of asyncio's default executors are shut down without waiting when orbax closes an event loop, so
  new threads are given a moment to finish before counting as leaked.
  """
  before = set(threading.enumerate())
  yield
  new = [t for t in threading.enumerate() if t not in before]
  for t in new:
    t.join(timeout=5)
  leaked = [t.name for t in new if t.is_alive()]
  assert not leaked, leaked


@pytest.mark.parametrize("typed_key", [False, True])
def test_save_restore_identical(tmp_path, typed_key):
  state = make_state(1, typed_key=typed_key)
  with checkpointer.Checkpointer(str(tmp_path), every_steps=1) as ckpt:
    assert ckpt.maybe_save(1, state)
    restored = ckpt.restore(make_state(0, typed_key=typed_key))
  assert isinstance(restored, TrainState)
  assert jax.tree.structure(restored) == jax.tree.structure(state)
  assert leaves_equal(restored, state)
  assert restored.rng.dtype == state.rng.dtype


def test_async_save_survives_donation(tmp_path):
  """maybe_save copies the buffers before returning, so the next step may donate (delete) them."""
  state, expected = make_state(2), jax.tree.map(np.asarray, make_state(2))
  with checkpointer.Checkpointer(str(tmp_path), every_steps=1) as ckpt:
    ckpt.maybe_save(1, state)
    jax.tree.map(lambda x: x.delete(), state)
    restored = ckpt.restore(make_state(0))
  assert leaves_equal(restored, expected)


def test_keep_and_every_steps(tmp_path):
  with checkpointer.Checkpointer(str(tmp_path), every_steps=3, keep=2) as ckpt:
    saved = [step for step in range(1, 11) if ckpt.maybe_save(step, make_state(step))]
    assert saved == [3, 6, 9]
    assert not ckpt.maybe_save(9, make_state(9), force=True)  # never the same step twice
    assert ckpt.maybe_save(10, make_state(10), force=True)
    ckpt.wait()
    assert ckpt.all_steps() == [9, 10]
  assert sorted(int(p) for p in os.listdir(tmp_path) if p.isdigit()) == [9, 10]


def test_restore_or_init_and_resume(tmp_path):
  init = make_state(0)
  with checkpointer.Checkpointer(str(tmp_path), every_steps=2) as ckpt:
    state, step = ckpt.restore_or_init(init)
    assert step == 0 and state is init
    for s in (2, 4):
      ckpt.maybe_save(s, make_state(s))
  (tmp_path / "6.orbax-checkpoint-tmp-123" / "default").mkdir(parents=True)  # a save cut short by a kill
  with checkpointer.Checkpointer(str(tmp_path), every_steps=2) as ckpt:  # a restarted run
    assert ckpt.latest_step() == 4
    state, step = ckpt.restore_or_init(init)
    assert step == 4 and leaves_equal(state, make_state(4))
    assert leaves_equal(ckpt.restore(init, step=2), make_state(2))
    with pytest.raises(errors.CheckpointError, match=r"step 3 .*steps there: \[2, 4\]"):
      ckpt.restore(init, step=3)
    with pytest.raises(errors.CheckpointError, match=r"step 4 .*kernel saved shape \(4, 3\) vs expected \(4, 2\)"):
      ckpt.restore(make_state(width=2))


def test_restore_keeps_sharding(tmp_path):
  mesh = jax.make_mesh((4,), ("data",))
  replicated, split = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
  state = jax.device_put(make_state(3), replicated)
  state = state.replace(batch_stats={"mean": jax.device_put(jnp.arange(8.0), split)})
  with checkpointer.Checkpointer(str(tmp_path), every_steps=1) as ckpt:
    ckpt.maybe_save(1, state)
    restored = ckpt.restore(state)  # concrete sharded arrays as the target
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)
    from_abstract = ckpt.restore(abstract)
  for r in (restored, from_abstract):
    assert leaves_equal(r, state)
    for x, y in zip(jax.tree.leaves(r), jax.tree.leaves(state)):
      assert x.sharding == y.sharding
  assert restored.params["dense"]["kernel"].sharding == replicated
  assert restored.batch_stats["mean"].sharding == split


def test_restore_from_eval_shape_under_mesh(tmp_path):
  """jax.eval_shape gives abstract meshes; they are resolved against the mesh set with jax.set_mesh."""
  mesh = jax.make_mesh((4,), ("data",))
  state = jax.device_put(make_state(4), NamedSharding(mesh, P()))
  with checkpointer.Checkpointer(str(tmp_path), every_steps=1) as ckpt:
    ckpt.maybe_save(1, state)
  abstract = jax.eval_shape(lambda: state)
  if abstract.params["dense"]["bias"].sharding is None:
    pytest.skip(f"jax {jax.__version__}'s eval_shape gives no shardings (Colab's 0.7.2): no abstract mesh to resolve")
  with pytest.raises(errors.CheckpointError, match="abstract mesh"):
    restore.restore_from(str(tmp_path), abstract)
  with jax.set_mesh(mesh):
    restored = restore.restore_from(str(tmp_path), abstract)
  assert leaves_equal(restored, state)
  assert restored.params["dense"]["bias"].sharding.is_equivalent_to(NamedSharding(mesh, P()), 1)


def test_signal_sets_stop_and_save(tmp_path):
  before = signal.getsignal(signal.SIGTERM)
  with checkpointer.Checkpointer(str(tmp_path), every_steps=100) as ckpt:
    assert not ckpt.maybe_save(7, make_state(7))
    with loop.StopSignals() as signals:
      os.kill(os.getpid(), signal.SIGTERM)
      assert signals.received == signal.SIGTERM  # and the process is still alive
      assert ckpt.maybe_save(7, make_state(7), force=True)  # what the loop does on a stop
    assert signal.getsignal(signal.SIGTERM) is before
    assert ckpt.latest_step() == 7


def test_second_sigint_acts_as_before():
  # Python's own SIGINT handler, whatever the launcher set (a shell's background job inherits SIG_IGN).
  outer = signal.signal(signal.SIGINT, signal.default_int_handler)
  try:
    with pytest.raises(KeyboardInterrupt), loop.StopSignals() as signals:
      os.kill(os.getpid(), signal.SIGINT)
      assert signals.received == signal.SIGINT
      os.kill(os.getpid(), signal.SIGINT)  # the default handler raises KeyboardInterrupt
  finally:
    signal.signal(signal.SIGINT, outer)


def test_signal_handlers_noop_off_main_thread():
  seen = []

  def install():
    with loop.StopSignals():
      seen.append(signal.getsignal(signal.SIGTERM))

  before = signal.getsignal(signal.SIGTERM)
  worker = threading.Thread(target=install)
  worker.start()
  worker.join()
  assert seen == [before]


def test_restore_from_errors(tmp_path):
  missing = str(tmp_path / "no_such_run")
  with pytest.raises(errors.CheckpointError, match="no checkpoint directory .*no_such_run"):
    restore.restore_from(missing, make_state())
  empty = tmp_path / "empty"
  empty.mkdir()
  with pytest.raises(errors.CheckpointError, match=f"no checkpoint in {empty}"):
    restore.restore_from(str(empty), make_state())
  with checkpointer.Checkpointer(str(tmp_path / "run"), every_steps=1) as ckpt:
    ckpt.maybe_save(5, make_state(5))
  assert leaves_equal(restore.restore_from(str(tmp_path / "run"), make_state()), make_state(5))
  with pytest.raises(errors.CheckpointError,
                     match=r"run step 5 .*params\.dense\.kernel saved shape \(4, 3\) vs expected \(4, 5\)"):
    restore.restore_from(str(tmp_path / "run"), make_state(width=5))
  fewer = make_state().replace(batch_stats={})
  with pytest.raises(errors.CheckpointError, match=r"batch_stats\.mean saved but not in the target"):
    restore.restore_from(str(tmp_path / "run"), fewer)


def test_config_round_trip(tmp_path):
  config = json.dumps({"model": "fmformer", "lr": 1e-3})
  assert config_file.read_config(str(tmp_path)) is None
  with checkpointer.Checkpointer(str(tmp_path), every_steps=1, config_json=config):
    pass
  assert config_file.read_config(str(tmp_path)) == config
  with checkpointer.Checkpointer(str(tmp_path), every_steps=1, config_json=json.dumps({"lr": 1.0})):
    pass  # written once: the first run's config stays
  assert config_file.read_config(str(tmp_path)) == config
  assert sorted(os.listdir(tmp_path)) == ["config.json"]


# ----------------------------------------------------------------------------- a run killed at any moment


WIDE = 300  # arrays large enough to get data files of their own (OCDBT keeps small values inside its tree nodes)


def _truncate_an_array_file(step_dir):
  crash.truncate_largest_array_file(step_dir, 20)


def _remove_array_files(step_dir):
  """Every data file of the step's OCDBT stores (small arrays are stored inline in the tree's nodes there)."""
  for d, _, names in os.walk(step_dir):
    if os.path.basename(d) == "d":
      for name in names:
        os.remove(os.path.join(d, name))


def _corrupt_the_array_store_manifest(step_dir):
  with open(os.path.join(step_dir, "default", "manifest.ocdbt"), "r+b") as f:
    f.seek(20)
    f.write(b"\xff" * 30)


def _rewrite(name: str, text: str):
  def damage(step_dir):
    for d, _, names in os.walk(step_dir):
      if name in names:
        with open(os.path.join(d, name), "w") as f:
          f.write(text)
  return damage


def _remove(name: str):
  def damage(step_dir):
    for d, _, names in os.walk(step_dir):
      if name in names:
        os.remove(os.path.join(d, name))
  return damage


DAMAGES = {
    "truncated array file": _truncate_an_array_file,
    "missing array files": _remove_array_files,
    "corrupt array store manifest": _corrupt_the_array_store_manifest,
    "missing tree metadata": _remove("_METADATA"),
    "damaged tree metadata": _rewrite("_METADATA", "{not json"),
    "missing step metadata": _remove("_CHECKPOINT_METADATA"),
}


def _saved_run(directory, steps=(2, 4)):
  with checkpointer.Checkpointer(str(directory), every_steps=2) as ckpt:
    for s in steps:
      ckpt.maybe_save(s, make_state(s, width=WIDE))


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_resume_skips_a_damaged_latest_step(tmp_path, capfd, damage):
  directory = tmp_path / "checkpoints"
  _saved_run(directory)
  DAMAGES[damage](str(directory / "4"))
  with checkpointer.Checkpointer(str(directory), every_steps=2) as ckpt:
    state, step = ckpt.restore_or_init(make_state(0, width=WIDE))
    assert step == 2 and leaves_equal(state, make_state(2, width=WIDE))
    assert ckpt.all_steps() == [2]
    assert ckpt.maybe_save(4, make_state(40, width=WIDE))  # the step can be saved again
    ckpt.wait()
    assert leaves_equal(ckpt.restore(make_state(0, width=WIDE)), make_state(40, width=WIDE))
  err = capfd.readouterr().err
  lines = [line for line in err.splitlines() if " is damaged" in line]
  assert len(lines) == 1 and f"checkpoint {directory / '4'} is damaged" in lines[0], err
  assert "Traceback" not in err and "exception was never retrieved" not in err, err
  moved = os.listdir(str(directory) + checkpointer.DAMAGED_SUFFIX)
  assert len(moved) == 1 and moved[0].startswith("4-") and moved[0] in lines[0]
  assert f"resuming from step 2 of {directory}" in err


def test_restore_from_skips_a_damaged_latest_step_and_leaves_it(tmp_path, capfd):
  _saved_run(tmp_path)
  _truncate_an_array_file(str(tmp_path / "4"))
  assert leaves_equal(restore.restore_from(str(tmp_path), make_state(0, width=WIDE)), make_state(2, width=WIDE))
  assert os.path.isdir(tmp_path / "4")  # read-only: another run's files stay as they are
  err = capfd.readouterr().err
  assert f"checkpoint {tmp_path / '4'} is damaged" in err and "using step 2" in err and "Traceback" not in err
  with pytest.raises(errors.CheckpointError, match=f"checkpoint {tmp_path / '4'} is damaged"):
    restore.restore_from(str(tmp_path), make_state(0, width=WIDE), step=4)  # an explicit step is not replaced


def test_no_intact_step_stops_instead_of_starting_afresh(tmp_path):
  _saved_run(tmp_path)
  for step in ("2", "4"):
    _truncate_an_array_file(str(tmp_path / step))
  with checkpointer.Checkpointer(str(tmp_path), every_steps=2) as ckpt:
    with pytest.raises(errors.CheckpointError,
                       match=r"no intact checkpoint .*steps 4, 2 are damaged.*restart=True"):
      ckpt.restore_or_init(make_state(0, width=WIDE))
  assert sorted(p for p in os.listdir(tmp_path) if p.isdigit()) == ["2", "4"]  # nothing moved or deleted
  moved = checkpointer.set_aside(str(tmp_path))
  assert moved and sorted(p for p in os.listdir(moved) if p.isdigit()) == ["2", "4"]
  with checkpointer.Checkpointer(str(tmp_path), every_steps=2) as ckpt:
    assert ckpt.restore_or_init(make_state(0, width=WIDE))[1] == 0


def test_a_mismatch_is_not_mistaken_for_damage(tmp_path):
  _saved_run(tmp_path)
  with checkpointer.Checkpointer(str(tmp_path), every_steps=2) as ckpt:
    with pytest.raises(errors.CheckpointError, match=r"step 4 .*does not match"):
      ckpt.restore_or_init(make_state(width=2))
  assert sorted(p for p in os.listdir(tmp_path) if p.isdigit()) == ["2", "4"]


def test_an_unfinished_save_is_reported_and_removed(tmp_path, capfd):
  _saved_run(tmp_path, steps=(2,))
  (tmp_path / "4.orbax-checkpoint-tmp" / "default").mkdir(parents=True)
  with checkpointer.Checkpointer(str(tmp_path), every_steps=2) as ckpt:
    assert ckpt.restore_or_init(make_state(0, width=WIDE))[1] == 2
  assert not os.path.exists(tmp_path / "4.orbax-checkpoint-tmp")
  err = capfd.readouterr().err
  assert f"checkpoint {tmp_path / '4.orbax-checkpoint-tmp'}: an unfinished save" in err


def test_a_relative_directory_is_a_programming_error(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  with pytest.raises(ValueError, match="relative"):
    checkpointer.Checkpointer("checkpoints", every_steps=1)


def test_a_checkpoint_from_before_the_aux_state_restores_upgraded(tmp_path):
  """Checkpoints written before TrainState.aux kept Uni-Code's CLUB nets in model_state['club']."""
  from fmjax.checkpoints import legacy
  from fmjax.checkpoints import state as state_lib

  params = {"w": jnp.arange(3.0)}
  club = {"params": {"video": {"k": jnp.ones(2)}}, "opt_state": {"video": {"count": jnp.asarray(4, jnp.int32)}}}
  old = legacy.StateBeforeAux(step=jnp.asarray(7, jnp.int32), params=params,
                                 model_state={"vq_ema": {"e": jnp.full(2, 5.0)}, "club": club},
                                 opt_state=optax.sgd(0.1).init(params))
  with checkpointer.Checkpointer(str(tmp_path), every_steps=1) as ckpt:
    assert ckpt.maybe_save(7, old)
  zeros = lambda tree: jax.tree.map(jnp.zeros_like, tree)
  template = state_lib.TrainState(step=jnp.asarray(0, jnp.int32), params=zeros(params),
                                  model_state={"vq_ema": {"e": jnp.zeros(2)}}, opt_state=optax.sgd(0.1).init(params),
                                  aux=zeros(club))
  restored = restore.restore_from(str(tmp_path), template)
  assert isinstance(restored, state_lib.TrainState) and int(restored.step) == 7
  assert list(restored.model_state) == ["vq_ema"]
  assert leaves_equal(restored.aux, club) and leaves_equal(restored.params, params)


# ----------------------------------------------------------------------------- unreadable now is not damaged


def _tensorstore_refusal(number: int) -> ValueError:
  """What orbax passes on from tensorstore when the OS refuses a read of a step's array file (the form measured
  with a file made unreadable: 'PERMISSION_DENIED: Error reading "params.dense.kernel/0.0" in OCDBT database at
  local file "<step>/default/": Failed to open: "<file>": Permission denied [os_error_code='13']')."""
  return ValueError(f"UNAVAILABLE: Error reading \"params.dense.kernel/0.0\" in OCDBT database: Failed to open: "
                    f"\"d/9a17\": {os.strerror(number)} [os_error_code='{number}']")


FAULTS = {  # (what Python's open raises, what tensorstore's open raises, the cause the error line names)
    "permission denied": (PermissionError(errno.EACCES, "Permission denied"), _tensorstore_refusal(errno.EACCES),
                          "Permission denied"),
    "I/O error": (OSError(errno.EIO, "Input/output error"), _tensorstore_refusal(errno.EIO), "Input/output error"),
    "timeout": (TimeoutError("timed out"), TimeoutError("timed out"), os.strerror(errno.ETIMEDOUT)),
}


def _refuse_reads(monkeypatch, step_dir: str, fault: str, layer: str) -> None:
  """Every read of `step_dir`'s files fails with FAULTS[fault]: Python's reads (orbax's metadata files) or
  tensorstore's (the arrays, from any step)."""
  python_error, tensorstore_error, _ = FAULTS[fault]
  if layer == "files":
    real_open = builtins.open

    def refusing_open(file, *args, **kwargs):
      if isinstance(file, (str, os.PathLike)) and os.fspath(file).startswith(step_dir + os.sep):
        raise python_error
      return real_open(file, *args, **kwargs)
    monkeypatch.setattr(builtins, "open", refusing_open)
  else:
    def refusing_ts_open(*args, **kwargs):
      raise tensorstore_error
    monkeypatch.setattr(tensorstore, "open", refusing_ts_open)


@pytest.mark.parametrize("layer", ["files", "arrays"])
@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_a_step_that_cannot_be_read_now_stops_the_run_and_moves_nothing(tmp_path, monkeypatch, fault, layer):
  directory = tmp_path / "checkpoints"
  _saved_run(directory)
  step_dir = str(directory / "4")
  expected = f"checkpoint {step_dir} cannot be read now ({FAULTS[fault][2]}); nothing was moved"
  with checkpointer.Checkpointer(str(directory), every_steps=2) as ckpt:
    with monkeypatch.context() as patched:
      _refuse_reads(patched, step_dir, fault, layer)
      with pytest.raises(errors.CheckpointError) as resumed:
        ckpt.restore_or_init(make_state(0, width=WIDE))
      with pytest.raises(errors.CheckpointError) as evaluated:
        restore.restore_from(str(directory), make_state(0, width=WIDE))
      with pytest.raises(errors.CheckpointError) as read:
        restore.read_weights(str(directory))
    for error in (resumed, evaluated, read):
      assert not isinstance(error.value, restore.DamagedCheckpoint)
      assert str(error.value).startswith(expected) and "\n" not in str(error.value), str(error.value)
    assert ckpt.all_steps() == [2, 4]
  assert sorted(os.listdir(directory)) == ["2", "4"]
  assert not os.path.exists(str(directory) + checkpointer.DAMAGED_SUFFIX)
  with checkpointer.Checkpointer(str(directory), every_steps=2) as ckpt:  # the access fixed: step 4 was intact
    state, step = ckpt.restore_or_init(make_state(0, width=WIDE))
    assert step == 4 and leaves_equal(state, make_state(4, width=WIDE))


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a file whatever its mode (the injected faults above "
                    "stand in for it here)")
def test_an_unreadable_step_directory_is_not_moved(tmp_path):
  _saved_run(tmp_path)
  os.chmod(tmp_path / "4" / "default", 0)
  try:
    with checkpointer.Checkpointer(str(tmp_path), every_steps=2) as ckpt:
      with pytest.raises(errors.CheckpointError, match=r"4 cannot be read now \(Permission denied\); nothing"):
        ckpt.restore_or_init(make_state(0, width=WIDE))
  finally:
    os.chmod(tmp_path / "4" / "default", 0o755)
  assert sorted(p for p in os.listdir(tmp_path) if p.isdigit()) == ["2", "4"]

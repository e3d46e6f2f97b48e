"""Data parallelism over all devices: one per-device function, two wrappers.

A step is written once for one device's shard of the batch, with collectives over the axis
`AXIS` (gradients `pmean`, counts `psum`, ...). `DataParallel('shard_map')` (the default) runs it
with `jax.shard_map` over a 1-D mesh; `DataParallel('pmap')` with `jax.pmap`, where replicated
values carry a leading device axis. Both give the same numbers; `put_state`/`get_state` and
`to_host` hide the layout difference from the training loop.
"""

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils

from fmjax.runtime import errors

AXIS = "data"
MODES = ("shard_map", "pmap")
REPLICATED, SHARDED = "replicated", "sharded"


def chosen_devices(num_devices: int) -> list | None:
  """The devices `config.num_devices` names: None (every device) for 0, else this process's first N,
  which a run of one process only may choose (a multi-process run spans every device)."""
  if not num_devices:
    return None
  if num_devices < 0 or num_devices > jax.device_count():
    raise errors.ConfigError(f"num_devices={num_devices}: choose 0 (every device) or 1..{jax.device_count()}")
  if jax.process_count() > 1:
    raise errors.ConfigError(f"num_devices={num_devices}: a run of {jax.process_count()} processes uses every "
                             "device; leave num_devices at 0")
  return jax.devices()[:num_devices]


class DataParallel:
  """The device mesh and the chosen wrapper; `mode` is 'shard_map' or 'pmap'."""

  def __init__(self, mode: str = "shard_map", devices: list | None = None):
    if mode not in MODES:
      raise errors.ConfigError(f"parallel={mode!r} is not one of {MODES}")
    self.mode = mode
    # Process by process: host p's block of every global batch lives on host p's devices.
    self.devices = sorted(devices or jax.devices(), key=lambda d: (d.process_index, d.id))
    self.mesh = jax.sharding.Mesh(np.asarray(self.devices), (AXIS,), axis_types=(jax.sharding.AxisType.Auto,))
    self.replicated = jax.NamedSharding(self.mesh, jax.P())
    self.sharded = jax.NamedSharding(self.mesh, jax.P(AXIS))
    self.local_devices = [d for d in self.devices if d.process_index == jax.process_index()]

  @property
  def num_devices(self) -> int:
    return len(self.devices)

  def check_batch_size(self, global_batch: int) -> None:
    if global_batch % self.num_devices:
      raise errors.ConfigError(f"batch size {global_batch} is not divisible by the {self.num_devices} devices")

  # --------------------------------------------------------------------------------- state

  def put_state(self, state: Any) -> Any:
    """Host (or single-device) pytree -> the wrapper's device layout, replicated everywhere."""
    if self.mode == "shard_map":
      if jax.process_count() > 1:  # no cross-host device transfers: each process puts its own copy
        state = jax.tree.map(lambda x: x if getattr(x, "sharding", None) == self.replicated else np.asarray(x), state)
      return jax.device_put(state, self.replicated)
    stack = lambda x: np.broadcast_to(np.asarray(x)[None], (len(self.local_devices),) + np.shape(x))
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(self.sharded, stack(x)), state)

  def get_state(self, state: Any) -> Any:
    """The wrapper's layout -> one replica (what checkpoints and evaluation read)."""
    if self.mode == "shard_map":
      return state
    return jax.tree.map(lambda x: x.addressable_data(0)[0], state)

  # --------------------------------------------------------------------------------- data

  def batches(self, host_batches: Iterable[dict], buffer_size: int = 2) -> Iterator[dict]:
    """This host's numpy batches -> global device arrays split over the devices, fed ahead."""
    if self.mode == "pmap":
      n = len(self.local_devices)
      split = lambda b: jax.tree.map(lambda x: x.reshape((n, x.shape[0] // n) + x.shape[1:]), b)
      host_batches = map(split, host_batches)
    return device_batches(host_batches, self.sharded, buffer_size)

  # --------------------------------------------------------------------------------- steps

  def wrap(self, fn: Callable, in_layouts: tuple, out_layouts: Any, donate_argnums: tuple[int, ...] = ()) -> Callable:
    """Compiles per-device `fn(*args)`; `in_layouts`/`out_layouts` mark each argument/output (or a
    pytree prefix of them) REPLICATED or SHARDED along the batch axis."""
    if self.mode == "pmap":
      return jax.pmap(fn, axis_name=AXIS, devices=self.devices, donate_argnums=donate_argnums)
    spec = lambda layout: jax.P() if layout == REPLICATED else jax.P(AXIS)
    # check_vma=False: classic per-device semantics, as under pmap (gradients of replicated
    # parameters are per-device until the explicit pmean), so both wrappers run the same code.
    mapped = jax.shard_map(fn, mesh=self.mesh, in_specs=jax.tree.map(spec, in_layouts),
                           out_specs=jax.tree.map(spec, out_layouts), check_vma=False)
    return jax.jit(mapped, donate_argnums=donate_argnums)

  def to_host(self, outputs: Any, out_layouts: Any) -> Any:
    """Outputs of a wrapped function as numpy: replicated values once, sharded ones gathered."""
    def fetch(layout, subtree):
      return jax.tree.map(lambda x: fetch_leaf(layout, x), subtree)

    def fetch_leaf(layout, x):
      if jax.process_count() > 1 and layout == SHARDED:
        x = multihost_utils.process_allgather(x, tiled=True)
      x = np.asarray(jax.device_get(x) if layout == SHARDED or self.mode == "shard_map" else x.addressable_data(0))
      if self.mode == "pmap":
        return x[0] if layout == REPLICATED else x.reshape((-1,) + x.shape[2:])
      return x
    return jax.tree.map(fetch, out_layouts, outputs)

  # --------------------------------------------------------------------------------- across processes

  @staticmethod
  def gather(host_values: Any) -> Any:
    """Each process's numpy rows (equal shapes on every process) -> all rows, process 0's first."""
    if jax.process_count() == 1:
      return host_values
    return jax.tree.map(np.asarray, multihost_utils.process_allgather(host_values, tiled=True))

  def map_rows(self, fn: Callable[[dict], dict], rows: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """`fn` (numpy rows -> numpy rows) over this process's contiguous block of `rows` (every process
    holds all of them), the results of all processes gathered in order: each row computed once."""
    n = len(next(iter(rows.values())))
    if n == 0 or jax.process_count() == 1:
      return fn(rows)
    per_process = -(-n // jax.process_count())
    start = jax.process_index() * per_process
    block = np.minimum(np.arange(start, start + per_process), n - 1)  # the last process repeats the last row
    results = self.gather(fn({k: v[block] for k, v in rows.items()}))
    return {k: v[:n] for k, v in results.items()}


def device_batches(batches: Iterable[dict], sharding=None, buffer_size: int = 2) -> Iterator[Any]:
  """Global jax.Arrays from per-host numpy batches, transferred ahead in a background thread.

  `sharding` (e.g. NamedSharding(mesh, P('data'))) splits the leading axis across devices; each
  host contributes its own rows (`jax.make_array_from_process_local_data`). Without one, arrays go
  to the default device.
  """
  def put(batch: dict):
    if sharding is None:
      return jax.device_put(batch)
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), batch)

  return _background(map(put, batches), buffer_size)


def _background(iterator: Iterator, buffer_size: int) -> Iterator:
  """Runs `iterator` in a daemon thread, `buffer_size` items ahead; re-raises its errors."""
  q: queue.Queue = queue.Queue(maxsize=buffer_size)
  done = object()

  def fill():
    try:
      for item in iterator:
        q.put(item)
      q.put(done)
    except BaseException as e:  # handed to the consumer
      q.put(e)

  threading.Thread(target=fill, daemon=True).start()
  while True:
    item = q.get()
    if item is done:
      return
    if isinstance(item, BaseException):
      raise item
    yield item

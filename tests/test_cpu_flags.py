"""The XLA flags the launcher gives several forced CPU host devices (fmjax.runtime.cpu_flags)."""

from fmjax.runtime import cpu_flags

OFF = "--xla_cpu_multi_thread_eigen=false"


def test_several_forced_devices_get_no_intra_op_pool():
  assert cpu_flags.without_intra_op_pool("--xla_force_host_platform_device_count=2") == (
      "--xla_force_host_platform_device_count=2 --xla_cpu_multi_thread_eigen=false")
  flags = "--xla_dump_to=/tmp/d --xla_force_host_platform_device_count=4 --xla_backend_optimization_level=0"
  assert cpu_flags.without_intra_op_pool(flags) == flags + " " + OFF


def test_one_device_or_none_forced_is_left_alone():
  for flags in ("", "--xla_force_host_platform_device_count=1", "--xla_dump_to=/tmp/d",
                "--xla_force_host_platform_device_count=4 --xla_force_host_platform_device_count=1"):
    assert cpu_flags.without_intra_op_pool(flags) == flags


def test_a_pool_setting_of_the_users_own_is_kept():
  for flags in ("--xla_force_host_platform_device_count=2 --xla_cpu_multi_thread_eigen=true",
                "--xla_cpu_multi_thread_eigen=false --xla_force_host_platform_device_count=8"):
    assert cpu_flags.without_intra_op_pool(flags) == flags


def test_forced_host_devices_reads_the_last_count():
  assert cpu_flags.forced_host_devices("") == 1
  assert cpu_flags.forced_host_devices("--xla_force_host_platform_device_count=12") == 12
  assert cpu_flags.forced_host_devices("--xla_force_host_platform_device_count=1 "
                                       "--xla_force_host_platform_device_count=3") == 3


def test_protect_rewrites_the_environment_once():
  env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
  assert cpu_flags.protect(env)
  assert env["XLA_FLAGS"] == "--xla_force_host_platform_device_count=2 " + OFF
  assert not cpu_flags.protect(env)  # already there
  assert env["XLA_FLAGS"] == "--xla_force_host_platform_device_count=2 " + OFF
  empty = {}
  assert not cpu_flags.protect(empty) and empty == {}


def test_devices_forced_by_jax_num_cpu_devices_count_too():
  env = {"JAX_NUM_CPU_DEVICES": "2"}
  assert cpu_flags.protect(env) and env["XLA_FLAGS"] == OFF
  for value in ("1", "-1", "two"):  # one device, JAX's "unset", and a value JAX itself rejects
    env = {"JAX_NUM_CPU_DEVICES": value, "XLA_FLAGS": "--xla_dump_to=/tmp/d"}
    assert not cpu_flags.protect(env) and env["XLA_FLAGS"] == "--xla_dump_to=/tmp/d"

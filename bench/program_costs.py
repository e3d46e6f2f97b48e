"""FLOPs per step and memory of each job's accelerator program, estimated without an accelerator, as JSON.

    python bench/program_costs.py            # every job at its accelerator config and the notebook's batch sizes

Each job's training step (the trainer's own, `step.make_train_step`) at its accelerator config (FmFormer `:accel`
and `:seg,accel`, pretrain `:full` and `:hdcid,full`, align and `:alignvsr`) with the batch the notebook trains with
(the config's), lowered with the accelerators' kernels (`model.attention='xla'`, what 'auto' lowers to on a TPU or
GPU) and compiled for this machine's CPU. The figures are XLA's for that CPU program, so they are estimates of the
accelerator's: the FLOP count is the same arithmetic on any backend (up to fusion choices; XLA counts a loop's body
once, so a program with loops, pretrain's LSTM scans, gets a lower bound), while the memory a TPU or GPU needs
depends on its own layouts and fusions. Memory is the arguments (the train state and the batch), the outputs (the
new state: donated, so they alias the arguments) and XLA's temporary buffers, against a TPU v5e's 16 GB of HBM.
Beside them, the same step with `model.attention='auto'` exported for TPU and GPU (`jax.export`): its loops (the CPU
attention's would show as `stablehlo.while`), host callbacks and bfloat16 matmuls.
"""

import argparse
import json
import os
import platform
import re
import sys
import time

import jax
from jax import export

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import fmformer_bench

from configs import align as align_config
from configs import fmformer as fmformer_config
from configs import pretrain as pretrain_config
from fmjax.runtime import (
  parallel,
  registry,
)
from fmjax.train import optim, step

TPU_V5E_HBM_BYTES = 16 * 2**30
JOBS = {"fmformer_accel": (fmformer_config, "accel"), "fmformer_seg_accel": (fmformer_config, "seg,accel"),
        "pretrain_full": (pretrain_config, "full"), "pretrain_hdcid_full": (pretrain_config, "hdcid,full"),
        "align": (align_config, ""), "align_alignvsr": (align_config, "alignvsr")}


def costs(module, variant: str) -> dict:
  config = module.get_config(variant)
  config.model.attention = "xla"
  task = registry.find(config.job, "Task").prepare(config)
  tx, lr = optim.make(config.optimizer, config.num_train_steps)
  par = parallel.DataParallel("shard_map", jax.devices()[:1])
  batch = next(iter(task.train_batches(config.input.batch_size, 0, 0)))
  state = jax.eval_shape(lambda: step.create_train_state(task, tx, jax.random.PRNGKey(0)))
  shapes = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), batch)
  start = time.perf_counter()
  compiled = step.make_train_step(task, tx, lr, config.seed, par).lower(state, shapes).compile()
  compile_s = time.perf_counter() - start
  config.model.attention = "auto"  # the program as a TPU or GPU gets it: exported for them (no device needed)
  auto_step = step.make_train_step(type(task)(task.config, task.data), tx, lr, config.seed, par)
  module = export.export(auto_step, platforms=("tpu", "cuda"))(state, shapes).mlir_module()
  memory = compiled.memory_analysis()
  total = memory.argument_size_in_bytes + memory.output_size_in_bytes - memory.alias_size_in_bytes \
      + memory.temp_size_in_bytes
  return {"batch": config.input.batch_size, "dtype": config.model.dtype,
          "flops_per_step": fmformer_bench.flops_of(compiled),
          "argument_bytes": memory.argument_size_in_bytes, "output_bytes": memory.output_size_in_bytes,
          "alias_bytes": memory.alias_size_in_bytes, "temp_bytes": memory.temp_size_in_bytes, "total_bytes": total,
          "share_of_tpu_v5e_hbm": total / TPU_V5E_HBM_BYTES, "compile_s": compile_s,
          "exported_tpu_cuda": {"loops": module.count("stablehlo.while"),
                                "host_callbacks": len(re.findall(r'call_target_name = "[^"]*callback', module)),
                                "bf16_matmuls": len(re.findall(r"stablehlo\.dot_general.*bf16", module))}}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--jobs", default=",".join(JOBS), help=f"comma-separated, from {list(JOBS)}")
  args = parser.parse_args()
  result = {"machine": f"{platform.machine()} {os.cpu_count()} cpu", "jax": jax.__version__,
            "method": "the train step lowered with model.attention='xla' and compiled for this CPU: estimates",
            "jobs": {}}
  for name in args.jobs.split(","):
    if name not in JOBS:
      raise SystemExit(f"error: --jobs: {name!r} is not one of {list(JOBS)}")
    result["jobs"][name] = costs(*JOBS[name])
  print(json.dumps(result, indent=1))


if __name__ == "__main__":
  main()

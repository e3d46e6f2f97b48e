"""A toy evaluator defined outside fmjax (the "adding an evaluator" recipe of docs/extending.md): the accuracy of a
classification job's clip predictions on every `stride`-th clip of a split, computed its own way.

It names the one predict function it uses (`logits`), cuts its own clips from the prepared data with
the job's geometry (`context.inputs`), and knows nothing else of the job.
"""

import jax
import numpy as np

from fmjax.data import pipeline
from fmjax.evals.base import Evaluation


class Evaluator:
  predict_fns = ("logits",)

  def __init__(self, context, *, split: str = "test", stride: int = 1, batch_size: int = 16):
    self.context, self.split, self.stride, self.batch_size = context, split, stride, batch_size

  def run(self, par, variables, shared) -> Evaluation:
    del shared
    data, inputs = self.context.data, self.context.inputs
    logits = jax.jit(self.context.predict_fns["logits"])
    variables = par.get_state(variables)
    dataset = pipeline.make_dataset(data.recordings, data.split(self.split)[::self.stride], sample_kind=inputs["kind"],
                                    batch_size=self.batch_size, sample_spec=inputs["spec"], shuffle=False,
                                    num_epochs=1, drop_remainder=False, pad=True)
    right, count = 0, 0
    for batch in dataset:
      predicted = np.asarray(logits(variables, {name: batch[name] for name in inputs["fields"]})).argmax(-1)
      valid = batch["valid"]
      right += int(np.sum(predicted[valid] == batch[inputs["target"]][valid]))
      count += int(valid.sum())
    return Evaluation({"toy_clip_accuracy": right / count, "toy_clips": count})

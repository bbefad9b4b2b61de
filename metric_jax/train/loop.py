"""The training loop: steps, progress bar, metrics (TensorBoard + metrics.jsonl), periodic evaluation, checkpoints with
exact resume, and the end-of-run artefacts (Markdown results table, loss-curve and embedding plots).

`fit` is plumbing around `Trainer.train_step`; it owns no randomness. Batches come from `batches(start_step)`, an iterable
of this process's share of the global batch for steps `start_step, start_step + 1, ...` (e.g. `metric_jax.data.BatchLoader`
with a `(seed, step)`-pure sampler), so restoring the state of step s and asking for batches from s reproduces an
uninterrupted run exactly.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Callable, Dict, Iterable, List, Optional

import jax
import numpy as np

from metric_jax.train.checkpoint import Checkpointer
from metric_jax.train.step import Trainer, TrainState


class MetricsWriter:
  """Appends `{"step": s, "split": ..., **metrics}` lines to `workdir/metrics.jsonl` and scalars to TensorBoard events
  (`workdir/tb`). Only process 0 writes. `truncate_after(step)` drops lines of steps beyond a restored checkpoint."""

  def __init__(self, workdir: Optional[str], *, tensorboard: bool = True):
    self.workdir = workdir
    self.enabled = workdir is not None and jax.process_index() == 0
    self.path = os.path.join(workdir, "metrics.jsonl") if workdir else None
    self._tb = None
    if self.enabled:
      os.makedirs(workdir, exist_ok=True)
      if tensorboard:
        from tensorboardX import SummaryWriter
        self._tb = SummaryWriter(os.path.join(workdir, "tb"))

  def truncate_after(self, step: int) -> None:
    if not self.enabled or not os.path.exists(self.path):
      return
    with open(self.path) as f:
      keep = [line for line in f if line.strip() and json.loads(line)["step"] <= step]
    with open(self.path, "w") as f:
      f.writelines(keep)

  def write(self, step: int, split: str, metrics: Dict[str, float]) -> None:
    if not self.enabled:
      return
    record = {"step": int(step), "split": split, **{k: float(v) for k, v in metrics.items()}}
    with open(self.path, "a") as f:
      f.write(json.dumps(record) + "\n")
    if self._tb is not None:
      for k, v in metrics.items():
        self._tb.add_scalar(f"{split}/{k}", float(v), int(step))

  def close(self) -> None:
    if self._tb is not None:
      self._tb.flush()
      self._tb.close()


def read_metrics(workdir: str) -> List[dict]:
  """The records of `workdir/metrics.jsonl`."""
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


class NonFiniteError(FloatingPointError):
  """Training met a non-finite loss or gradient norm; the state of that step was not saved."""


def _eval_records(result: Dict) -> Dict[str, Dict[str, float]]:
  """`eval_fn`'s result as `{split: metrics}`: a flat dict is one split named "eval"."""
  if result and all(isinstance(v, dict) for v in result.values()):
    return result
  return {"eval": result}


def fit(trainer: Trainer, state: TrainState, batches: Callable[[int], Iterable[dict]], *, num_steps: int,
        workdir: Optional[str] = None, checkpoint_every: int = 0, log_every: int = 10, eval_every: int = 0,
        eval_fn: Optional[Callable[[TrainState, int], Dict]] = None, progress: bool = True,
        meta: Optional[dict] = None, writer: Optional[MetricsWriter] = None, log: Callable[[str], None] = print,
        on_state: Optional[Callable[[TrainState], None]] = None):
  """Trains `state` up to `num_steps` steps and returns `(state, summary)`.

  With a `workdir`, the latest checkpoint under `workdir/checkpoints` (if any) is restored first ("resuming from step
  N" is logged) and `metrics.jsonl` is cut back to that step, so a killed attempt leaves no duplicate records;
  checkpoints are saved synchronously every `checkpoint_every` steps and at the end, so a kill loses at most one interval.
  Train metrics are averaged over each logging interval of `log_every` steps. `eval_fn(state, step)` runs every
  `eval_every` steps and at the end; it returns a flat metrics dict (logged as split "eval") or `{split: metrics}`.

  `on_state(state)`, when given, sees the state before the first step and after every step (e.g. for a sampler that
  mines with the current network; such a loader must compute each batch on demand, without prefetching, for the
  batches to be reproducible on resume).

  Every step's loss and gradient norm are checked: the first non-finite one raises `NonFiniteError` naming the step
  and the quantity; the last good checkpoint stays the latest one.

  `summary` holds the last interval's train metrics, the last evaluation, timing (`data_seconds`, `step_seconds`,
  `images_per_second`) and `start_step`.
  """
  if num_steps < 0:
    raise ValueError(f"`num_steps` must be non-negative, got {num_steps}.")
  own_writer = writer is None
  writer = MetricsWriter(workdir) if writer is None else writer
  checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"), async_save=False) if workdir else None
  start = 0
  if checkpointer is not None and checkpointer.latest_step() is not None:
    state, saved = checkpointer.restore(state)
    start = int(saved.get("next_step", checkpointer.latest_step()))
    if jax.process_index() == 0 and start < num_steps:
      log(f"resuming from step {start} (checkpoint {os.path.join(checkpointer.directory, str(start))})")
  writer.truncate_after(start)
  if int(jax.device_get(trainer.local_copy(state.step))) != start:
    raise RuntimeError(f"restored state is at step {int(state.step)} but the checkpoint says {start}.")

  bar = None
  if progress and jax.process_index() == 0:
    from tqdm.auto import tqdm
    bar = tqdm(total=num_steps, initial=start, desc="train", dynamic_ncols=True)
  data_seconds = step_seconds = 0.0
  images = 0
  last_train: Dict[str, float] = {}
  last_eval: Dict = {}
  window_t, window_images = time.perf_counter(), 0
  window_sums: Dict[str, float] = {}
  window_steps = 0
  if on_state is not None:
    on_state(state)
  source = batches(start) if start < num_steps else ()
  iterator = iter(source)
  try:
    for step in range(start, num_steps):
      t0 = time.perf_counter()
      batch = next(iterator)
      t1 = time.perf_counter()
      state, metrics = trainer.train_step(state, trainer.shard_batch(batch))
      if on_state is not None:
        on_state(state)
      done = step + 1
      values = {k: float(v) for k, v in jax.device_get(trainer.local_copy(metrics)).items()}
      for key in ("loss", "grad_norm"):
        if key in values and not np.isfinite(values[key]):
          raise NonFiniteError(
              f"step {done}: the {'loss' if key == 'loss' else 'gradient norm'} is {values[key]} "
              f"(loss {values.get('loss')}, gradient norm {values.get('grad_norm')}); training stopped before saving "
              f"this step. The last good checkpoint is "
              f"{checkpointer.latest_step() if checkpointer is not None else None} in "
              f"{checkpointer.directory if checkpointer is not None else '(no workdir)'}.")
      for k, v in values.items():
        window_sums[k] = window_sums.get(k, 0.0) + v
      window_steps += 1
      batch_images = int(np.shape(batch["image"])[0]) * jax.process_count()
      images += batch_images
      window_images += batch_images
      if log_every and (done % log_every == 0 or done == num_steps):
        last_train = {k: v / window_steps for k, v in window_sums.items()}
        now = time.perf_counter()
        last_train["images_per_second"] = window_images / max(now - window_t, 1e-9)
        window_t, window_images, window_sums, window_steps = now, 0, {}, 0
        writer.write(done, "train", last_train)
        if bar is not None:
          bar.set_postfix(loss=f"{last_train['loss']:.4f}", img_s=f"{last_train['images_per_second']:.0f}")
      t2 = time.perf_counter()
      data_seconds += t1 - t0
      step_seconds += t2 - t1
      if bar is not None:
        bar.update(1)
      if eval_fn is not None and eval_every and done % eval_every == 0 and done != num_steps:
        last_eval = eval_fn(state, done)
        for split, m in _eval_records(last_eval).items():
          writer.write(done, split, m)
      if checkpointer is not None and checkpoint_every and done % checkpoint_every == 0 and done != num_steps:
        checkpointer.save(done, state, dict(meta or {}, next_step=done))
  finally:
    for obj in (iterator, source):
      if hasattr(obj, "close"):
        obj.close()
    if bar is not None:
      bar.close()
    if checkpointer is not None and sys.exc_info()[0] is not None:
      checkpointer.close()
  if eval_fn is not None and (start < num_steps or not last_eval):
    last_eval = eval_fn(state, num_steps)
    if start < num_steps:
      for split, m in _eval_records(last_eval).items():
        writer.write(num_steps, split, m)
  if checkpointer is not None:
    if start < num_steps:
      checkpointer.save(num_steps, state, dict(meta or {}, next_step=num_steps))
    checkpointer.close()
  if own_writer:
    writer.close()
  total = data_seconds + step_seconds
  summary = {"start_step": start, "train": last_train, "eval": last_eval, "data_seconds": data_seconds,
             "step_seconds": step_seconds, "images_per_second": images / total if total > 0 else float("nan")}
  return state, summary

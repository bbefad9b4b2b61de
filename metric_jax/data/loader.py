"""`BatchLoader`: fixed-shape numpy batches from in-memory arrays and a sampler, prefetched by a background thread.

Why a thread over numpy arrays and not grain: the datasets of the seed papers fit in memory once decoded (Omniglot small1
is 30 MB at 105x105, MNIST 8 MB, CUB at 256x256 2.3 GB), the samplers are pure functions of (seed, step), and a batch is
one fancy-indexing gather plus an optional numpy transform, both of which release the GIL for most of their time. A single
prefetch thread keeps the accelerator fed (see benchmarks/results/data.md) with no extra dependency, no worker processes
to start on 2-core machines, and exact resumption from one integer (`step`). grain would add multiprocess workers and its
own checkpointable iterator state, which this setting does not need.

Padding: a sampler index of -1 yields an all-zero image, label -1 and `valid=False`; losses take `valid` as
`query_valid` / `key_valid`, so padded rows never change a result.
"""

from __future__ import annotations

import queue
import threading
from typing import Callable, Optional

import numpy as np

Transform = Callable[[np.ndarray, np.random.Generator], np.ndarray]


def default_transform(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """uint8 [b, H, W, C] -> float32 in [0, 1]."""
  del rng
  return images.astype(np.float32) * np.float32(1.0 / 255.0)


_DONE = object()


class BatchLoader:
  """Iterable over batches `dict(image=float32 [b, H, W, C], label=int32 [b], valid=bool [b])`.

  Yields the batches of steps `start_step, start_step + 1, ...` (forever; stop with `close()` or by leaving the loop).
  Batch `s` is a pure function of `(sampler, seed, s)`: the indices are `sampler.indices(s)` and the transform's rng is
  `np.random.default_rng([seed, s, sampler.process_index])`, so augmentation is reproducible after a resume.

  Args:
    images: uint8 `[N, H, W, C]` (any array supporting fancy indexing along axis 0).
    labels: int `[N]`.
    sampler: any sampler of `metric_jax.data.samplers` (needs `indices(step)`, `batch_size`, `process_index`).
    transform: `transform(images_uint8 [b, H, W, C], rng) -> float32 [b, H', W', C']`; default scales to [0, 1].
    start_step: first step to yield (the saved `loader.step` when resuming).
    prefetch: batches computed ahead by the background thread (0 = no thread, computed on demand).
    seed: seed of the transform's rng (separate from the sampler's seed).

  Attributes:
    step: the step of the next batch to be yielded; save it in checkpoints and pass it back as `start_step`.
  """

  def __init__(self, images, labels, sampler, *, transform: Optional[Transform] = None, start_step: int = 0,
               prefetch: int = 2, seed: int = 0):
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
      raise ValueError(f"`labels` must be a 1-D integer array, got shape {labels.shape}, dtype {labels.dtype}.")
    if getattr(images, "ndim", None) != 4:
      raise ValueError(f"`images` must be [N, H, W, C], got shape {getattr(images, 'shape', None)}.")
    if images.shape[0] != labels.shape[0]:
      raise ValueError(f"`images` has {images.shape[0]} rows but `labels` has {labels.shape[0]}.")
    if isinstance(start_step, bool) or not isinstance(start_step, (int, np.integer)) or start_step < 0:
      raise ValueError(f"`start_step` must be a non-negative integer, got {start_step!r}.")
    if isinstance(prefetch, bool) or not isinstance(prefetch, (int, np.integer)) or prefetch < 0:
      raise ValueError(f"`prefetch` must be a non-negative integer, got {prefetch!r}.")
    self.images = images
    self.labels = labels.astype(np.int32)
    self.sampler = sampler
    self.transform = transform or default_transform
    self.seed = int(seed)
    self.step = int(start_step)
    self.prefetch = int(prefetch)
    self._queue = None
    self._thread = None
    self._stop = threading.Event()

  def make_batch(self, step: int) -> dict:
    """The batch of `step` (no prefetching, no state change)."""
    idx = np.asarray(self.sampler.indices(step), dtype=np.int64)
    valid = idx >= 0
    safe = np.where(valid, idx, 0)
    raw = np.asarray(self.images[safe])
    rng = np.random.default_rng([self.seed, int(step), int(getattr(self.sampler, "process_index", 0))])
    image = np.asarray(self.transform(raw, rng), dtype=np.float32)
    if not valid.all():
      image[~valid] = 0.0
    label = np.where(valid, self.labels[safe], -1).astype(np.int32)
    return {"image": image, "label": label, "valid": valid}

  def state(self) -> dict:
    """What a checkpoint needs to resume this loader: `{"step": step}`."""
    return {"step": self.step}

  def _worker(self, first_step):
    step = first_step
    try:
      while not self._stop.is_set():
        item = (step, self.make_batch(step))
        while not self._stop.is_set():
          try:
            self._queue.put(item, timeout=0.1)
            break
          except queue.Full:
            continue
        step += 1
    except BaseException as e:  # surfaced to the consumer by __next__
      self._queue.put((None, e))

  def _start(self):
    self._stop.clear()
    self._queue = queue.Queue(maxsize=self.prefetch)
    self._thread = threading.Thread(target=self._worker, args=(self.step,), daemon=True, name="BatchLoader")
    self._thread.start()

  def __iter__(self):
    return self

  def __next__(self) -> dict:
    if self.prefetch == 0:
      batch = self.make_batch(self.step)
      self.step += 1
      return batch
    if self._thread is None:
      self._start()
    step, batch = self._queue.get()
    if step is None:
      self.close()
      raise batch
    self.step = step + 1
    return batch

  def close(self):
    """Stops the prefetch thread; iterating again restarts it at `step`."""
    self._stop.set()
    if self._thread is not None:
      self._thread.join()
    self._thread = None
    self._queue = None

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()

  def __del__(self):
    try:
      self._stop.set()
    except Exception:
      pass

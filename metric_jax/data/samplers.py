"""Batch samplers: deterministic functions of (seed, step), infinite, with epoch bookkeeping, sharded over processes.

A sampler holds no position. `indices(step)` returns the dataset indices of this process's share of the global batch of
`step`, for any step in any order, so resuming from a checkpoint only needs the step (`BatchLoader.step`); nothing else
is saved. Every random draw comes from `np.random.default_rng([seed, stream, epoch or step])`.

Sharding: the global batch of `global_batch_size` indices is cut into `process_count` contiguous slices; process
`process_index` gets slice number `process_index`, so the concatenation over processes is exactly the single-process global
batch (the train step all-gathers embeddings, so pairwise losses still see the whole global batch). `global_batch_size`
must be divisible by `process_count`.

An index of -1 marks a padding slot (only `ClassAccumulatingSampler` produces them); `BatchLoader` turns it into
`valid=False`.

Samplers:
* `PKSampler`: P classes x K samples (GPW's recipe; S4 batches). Per epoch the classes are shuffled and taken P at a time.
* `NPairSampler`: N classes x 2 (S3), with an optional negative-class-mining hook (`greedy_negative_class_miner`).
* `PairSampler`: S0's pairs, two independently shuffled batches; indices = concat(first, second).
* `RandomSampler`: uniform batches without class structure (GPW's random-sampler ablation).
* `ClassAccumulatingSampler`: whole classes (optionally at most `max_per_class` images each) accumulated until the next
  class no longer fits, the rest padded (S2's SOP batches; S4's "at most 10 per class").
"""

from __future__ import annotations

import abc
import functools
from typing import Callable, Optional

import numpy as np

_UNDERSIZED = ("replace", "drop", "error")


def _check_int(value, name, minimum):
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
    raise ValueError(f"`{name}` must be an integer >= {minimum}, got {value!r}.")
  return int(value)


def _check_labels(labels):
  labels = np.asarray(labels)
  if labels.ndim != 1:
    raise ValueError(f"`labels` must be 1-D, got shape {labels.shape}.")
  if not np.issubdtype(labels.dtype, np.integer):
    raise TypeError(f"`labels` must hold integers, got dtype {labels.dtype}.")
  if labels.size == 0:
    raise ValueError("`labels` is empty.")
  return labels.astype(np.int64)


class _Sampler(abc.ABC):
  """Shared bookkeeping: seed, process shard, `indices(step)` from `global_indices(step)`."""

  steps_per_epoch: int

  def __init__(self, global_batch_size, *, seed, process_index, process_count):
    self.seed = _check_int(seed, "seed", 0)
    self.process_count = _check_int(process_count, "process_count", 1)
    self.process_index = _check_int(process_index, "process_index", 0)
    if self.process_index >= self.process_count:
      raise ValueError(f"`process_index` must be < process_count={self.process_count}, got {process_index}.")
    self.global_batch_size = int(global_batch_size)
    if self.global_batch_size % self.process_count:
      raise ValueError(f"the global batch of {self.global_batch_size} cannot be split evenly over "
                       f"`process_count`={self.process_count} processes.")
    self.batch_size = self.global_batch_size // self.process_count

  def _rng(self, *keys) -> np.random.Generator:
    return np.random.default_rng([self.seed, *[int(k) for k in keys]])

  def _check_step(self, step):
    return _check_int(step, "step", 0)

  @abc.abstractmethod
  def global_indices(self, step: int) -> np.ndarray:
    """np.int64 `[global_batch_size]`: the whole batch of `step` over all processes (-1 = padding)."""

  def indices(self, step: int) -> np.ndarray:
    """np.int64 `[batch_size]`: this process's contiguous slice of the global batch of `step` (-1 = padding)."""
    batch = self.global_indices(self._check_step(step))
    start = self.process_index * self.batch_size
    return batch[start:start + self.batch_size]

  def epoch(self, step: int) -> int:
    """The epoch `step` belongs to."""
    return self._check_step(step) // self.steps_per_epoch


class _ClassSampler(_Sampler):
  """Per-epoch shuffled order of classes, taken `classes_per_batch` at a time; `samples_per_class` drawn in each."""

  def __init__(self, labels, classes_per_batch, samples_per_class, *, seed, process_index, process_count, undersized):
    self.classes_per_batch = _check_int(classes_per_batch, "classes_per_batch", 1)
    self.samples_per_class = _check_int(samples_per_class, "samples_per_class", 1)
    if undersized not in _UNDERSIZED:
      raise ValueError(f"`undersized` must be one of {_UNDERSIZED}, got {undersized!r}.")
    labels = _check_labels(labels)
    classes, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    order = np.argsort(inverse, kind="stable")
    members = np.split(order, np.cumsum(counts)[:-1])
    small = counts < self.samples_per_class
    if small.any() and undersized == "error":
      raise ValueError(f"{int(small.sum())} classes have fewer than `samples_per_class`={self.samples_per_class} "
                       f"examples (e.g. class {classes[small][0]} has {counts[small][0]}); pass undersized='replace' "
                       f"or 'drop'.")
    keep = ~small if undersized == "drop" else np.ones_like(small)
    self.classes = classes[keep]
    self.class_members = [m for m, k in zip(members, keep) if k]
    self.undersized = undersized
    if len(self.classes) < self.classes_per_batch:
      raise ValueError(f"`classes_per_batch`={self.classes_per_batch} but only {len(self.classes)} classes "
                       f"{'have >= samples_per_class examples' if undersized == 'drop' else 'exist'}.")
    self.steps_per_epoch = len(self.classes) // self.classes_per_batch
    super().__init__(self.classes_per_batch * self.samples_per_class, seed=seed, process_index=process_index,
                     process_count=process_count)

  @functools.lru_cache(maxsize=4)
  def _class_order(self, epoch):
    return self._rng(0, epoch).permutation(len(self.classes))

  def batch_classes(self, step: int) -> np.ndarray:
    """Positions (into `self.classes`) of the P classes of the global batch of `step`."""
    epoch, pos = divmod(self._check_step(step), self.steps_per_epoch)
    p = self.classes_per_batch
    return self._class_order(epoch)[pos * p:(pos + 1) * p]

  def _draw(self, class_positions, rng):
    k = self.samples_per_class
    out = np.empty((len(class_positions), k), dtype=np.int64)
    for row, c in enumerate(class_positions):
      members = self.class_members[c]
      out[row] = members[rng.choice(members.size, size=k, replace=members.size < k)]
    return out.reshape(-1)

  def global_indices(self, step):
    step = self._check_step(step)
    return self._draw(self.batch_classes(step), self._rng(1, step))


class PKSampler(_ClassSampler):
  """P classes x K samples per batch.

  Each epoch shuffles the classes (seeded by (seed, epoch)) and walks through them P at a time, so every class appears
  once per epoch (`steps_per_epoch = C // P`, the last `C mod P` classes of the shuffled order wait for the next epoch).
  The K samples of a class are drawn without replacement, seeded by (seed, step). The global batch is class-major:
  `[c_1 x K, c_2 x K, ..., c_P x K]`.

  Args:
    labels: int `[N]` class of every example.
    classes_per_batch: P.
    samples_per_class: K.
    seed: non-negative integer.
    process_index, process_count: this process's slice of the global batch of P*K (must divide evenly).
    undersized: classes with fewer than K examples: `replace` (default; drawn with replacement, so the class still fills
      K slots, with repeats), `drop` (never sampled), `error` (raise at construction).

  Attributes:
    global_batch_size: P * K. batch_size: P * K / process_count. steps_per_epoch: C // P.

  References:
    Hermans, A., Beyer, L. & Leibe, B. (2017). In defense of the triplet loss for person re-identification (PK batches).
  """

  def __init__(self, labels, classes_per_batch, samples_per_class, *, seed, process_index=0, process_count=1,
               undersized="replace"):
    super().__init__(labels, classes_per_batch, samples_per_class, seed=seed, process_index=process_index,
                     process_count=process_count, undersized=undersized)


def greedy_negative_class_miner(embed_fn: Callable[[np.ndarray], np.ndarray]):
  """Negative class mining of the N-pair paper (S3, Sec. 3.2.1) as an `NPairSampler` hook.

  Returns `mining_fn(candidate_indices [C', e], num_classes, rng) -> positions [num_classes]` which
    1. embeds the e examples of each of the C' candidate classes with `embed_fn(indices [C'*e]) -> [C'*e, D]` (the
       current network; the caller keeps it up to date),
    2. picks one candidate class at random, then greedily adds the class that violates the triplet constraint most with
       respect to the classes already selected, until `num_classes` are selected (ties broken at random).
  The violation of candidate c is `max_s (f_s^a . f_c - f_s^a . f_s^p)` over selected classes s when e >= 2 (anchor f^a and
  positive f^p are the class's first two examples, f_c is the mean of c's examples); with e = 1 it is `max_s f_s . f_c`.

  References:
    Sohn, K. (2016). Improved deep metric learning with multi-class N-pair loss objective. NeurIPS.
  """

  def mining_fn(candidate_indices, num_classes, rng):
    candidate_indices = np.asarray(candidate_indices)
    num_candidates, per_class = candidate_indices.shape
    emb = np.asarray(embed_fn(candidate_indices.reshape(-1)), dtype=np.float64)
    if emb.ndim != 2 or emb.shape[0] != candidate_indices.size:
      raise ValueError(f"`embed_fn` must return [{candidate_indices.size}, D] embeddings, got shape {emb.shape}.")
    emb = emb.reshape(num_candidates, per_class, -1)
    anchors, centers = emb[:, 0], emb.mean(axis=1)
    positive_sim = np.einsum("cd,cd->c", emb[:, 0], emb[:, 1]) if per_class >= 2 else np.zeros(num_candidates)
    selected = [int(rng.integers(num_candidates))]
    violation = centers @ anchors[selected[0]] - positive_sim[selected[0]]
    taken = np.zeros(num_candidates, bool)
    taken[selected[0]] = True
    while len(selected) < num_classes:
      scores = np.where(taken, -np.inf, violation)
      best = np.flatnonzero(scores == scores.max())
      new = int(best[rng.integers(best.size)]) if best.size > 1 else int(best[0])
      selected.append(new)
      taken[new] = True
      violation = np.maximum(violation, centers @ anchors[new] - positive_sim[new])
    return np.asarray(selected, dtype=np.int64)

  return mining_fn


class NPairSampler(_ClassSampler):
  """N classes x 2 examples per batch (S3's N-pair batches), optionally with negative class mining.

  Without `mining_fn` this is a PK sampler with K = 2 (classes with a single example are dropped: they cannot form a
  pair). With `mining_fn`, every step draws `num_candidate_classes` classes at random and `examples_per_candidate` of
  their examples, calls `mining_fn(candidate_indices [C', e], num_classes, rng)` (see `greedy_negative_class_miner`,
  which wraps an embedding function) to choose N of them, then draws 2 examples of each. The global batch is
  `[a_1, p_1, a_2, p_2, ..., a_N, p_N]`.

  Args:
    labels: int `[N_examples]`.
    num_classes: N, classes (pairs) per batch.
    seed, process_index, process_count: as for `PKSampler`.
    mining_fn: optional hook, see above.
    num_candidate_classes: C' candidates for mining (default min(C, 8N)).
    examples_per_candidate: e, examples embedded per candidate (the paper: one or two).

  References:
    Sohn, K. (2016). Improved deep metric learning with multi-class N-pair loss objective. NeurIPS.
  """

  def __init__(self, labels, num_classes, *, seed, process_index=0, process_count=1, mining_fn=None,
               num_candidate_classes=None, examples_per_candidate=1):
    super().__init__(labels, num_classes, 2, seed=seed, process_index=process_index, process_count=process_count,
                     undersized="drop")
    self.num_classes = self.classes_per_batch
    self.mining_fn = mining_fn
    c = len(self.classes)
    self.num_candidate_classes = min(c, 8 * self.num_classes) if num_candidate_classes is None else _check_int(
        num_candidate_classes, "num_candidate_classes", self.num_classes)
    if self.num_candidate_classes > c:
      raise ValueError(f"`num_candidate_classes`={num_candidate_classes} exceeds the {c} classes with >= 2 examples.")
    self.examples_per_candidate = _check_int(examples_per_candidate, "examples_per_candidate", 1)

  def global_indices(self, step):
    step = self._check_step(step)
    if self.mining_fn is None:
      return super().global_indices(step)
    rng = self._rng(2, step)
    candidates = rng.choice(len(self.classes), size=self.num_candidate_classes, replace=False)
    e = self.examples_per_candidate
    candidate_indices = np.stack([
        self.class_members[c][rng.choice(self.class_members[c].size, size=e, replace=self.class_members[c].size < e)]
        for c in candidates])
    chosen = np.asarray(self.mining_fn(candidate_indices, self.num_classes, rng), dtype=np.int64)
    if chosen.shape != (self.num_classes,) or len(set(chosen.tolist())) != self.num_classes:
      raise ValueError(f"`mining_fn` must return {self.num_classes} distinct candidate positions, got {chosen!r}.")
    return self._draw(candidates[chosen], rng)


class _PermutationSampler(_Sampler):
  """Per-epoch permutations of the examples; drops the last incomplete batch of each epoch."""

  def __init__(self, num_examples, batch_size, streams, *, seed, process_index, process_count):
    self.num_examples = _check_int(num_examples, "num_examples", 1)
    self.stream_batch = batch_size
    if batch_size > self.num_examples:
      raise ValueError(f"a batch of {batch_size} is larger than the {self.num_examples} examples.")
    self.streams = streams
    self.steps_per_epoch = self.num_examples // batch_size
    super().__init__(batch_size * streams, seed=seed, process_index=process_index, process_count=process_count)

  @functools.lru_cache(maxsize=4)
  def _perm(self, epoch, stream):
    return self._rng(3, epoch, stream).permutation(self.num_examples)

  def global_indices(self, step):
    epoch, pos = divmod(self._check_step(step), self.steps_per_epoch)
    b = self.stream_batch
    return np.concatenate([self._perm(epoch, s)[pos * b:(pos + 1) * b] for s in range(self.streams)]).astype(np.int64)


class RandomSampler(_PermutationSampler):
  """Uniform random batches without class structure: a fresh permutation of the examples every epoch.

  Args:
    num_examples: dataset size N.
    batch_size: global batch size B (`steps_per_epoch = N // B`, the remainder of each epoch's permutation is skipped).
    seed, process_index, process_count: as for `PKSampler`.
  """

  def __init__(self, num_examples, batch_size, *, seed, process_index=0, process_count=1):
    super().__init__(num_examples, _check_int(batch_size, "batch_size", 1), 1, seed=seed,
                     process_index=process_index, process_count=process_count)


class PairSampler(_PermutationSampler):
  """S0's random pairs: two independently shuffled batches of B examples; pair i is (first[i], second[i]).

  Each epoch draws two independent permutations of the examples; step s takes positions [sB, (s+1)B) of both.
  `global_indices(step) = concat(first, second)`, length 2B; the pair labels are `labels[first] == labels[second]`.

  Args:
    labels: int `[N]` (only its length is used; kept for the symmetric signature and its checks).
    pairs_per_batch: B.
    seed, process_index, process_count: as for `PKSampler` (the process slices cut the concatenation).

  References:
    S0 (PairNet, DESIGN.md): pairs come from two independently shuffled batches.
  """

  def __init__(self, labels, pairs_per_batch, *, seed, process_index=0, process_count=1):
    labels = _check_labels(labels)
    super().__init__(labels.size, _check_int(pairs_per_batch, "pairs_per_batch", 1), 2, seed=seed,
                     process_index=process_index, process_count=process_count)
    self.pairs_per_batch = self.stream_batch


class ClassAccumulatingSampler(_Sampler):
  """Whole classes accumulated until the batch is full (S2 on SOP), the rest of the batch padded with -1.

  Each epoch shuffles the classes (and each class's examples); walking through them, a class's examples (at most
  `max_per_class`, and at most `batch_size`) are appended to the current batch when they fit, otherwise the batch is closed
  (padded with -1 up to `batch_size`) and the class opens the next one. The number of batches of an epoch depends on its
  shuffle, so `epoch(step)` walks the epochs' batch counts (cached; cheap: one pass over the class sizes per epoch).

  Args:
    labels: int `[N]`.
    batch_size: global batch size B.
    seed, process_index, process_count: as for `PKSampler`.
    max_per_class: optional cap of examples per class in a batch (S4: at most 10).

  References:
    S2 (DML-DA, DESIGN.md): SOP batches hold whole classes. Ustinova, E. & Lempitsky, V. (2016). Learning deep
    embeddings with histogram loss. NeurIPS (at most 10 samples per class).
  """

  def __init__(self, labels, batch_size, *, seed, process_index=0, process_count=1, max_per_class=None):
    labels = _check_labels(labels)
    batch_size = _check_int(batch_size, "batch_size", 1)
    self.max_per_class = None if max_per_class is None else _check_int(max_per_class, "max_per_class", 1)
    classes, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    order = np.argsort(inverse, kind="stable")
    self.class_members = np.split(order, np.cumsum(counts)[:-1])
    self.classes = classes
    super().__init__(batch_size, seed=seed, process_index=process_index, process_count=process_count)
    cap = batch_size if self.max_per_class is None else min(batch_size, self.max_per_class)
    self._sizes = np.minimum(counts, cap)
    self._epoch_starts = [0]  # first global step of each epoch computed so far
    self.steps_per_epoch = max(1, int(np.ceil(self._sizes.sum() / batch_size)))  # nominal (lower bound)

  def _epoch_plan(self, epoch):
    """[(class position, take)] lists, one per batch, of `epoch`."""
    return self._epoch_plan_cached(epoch)

  @functools.lru_cache(maxsize=4)
  def _epoch_plan_cached(self, epoch):
    order = self._rng(4, epoch).permutation(len(self.classes))
    batches, current, filled = [], [], 0
    for c in order:
      size = int(self._sizes[c])
      if filled + size > self.global_batch_size:
        batches.append(current)
        current, filled = [], 0
      current.append(int(c))
      filled += size
    batches.append(current)
    return batches

  def _locate(self, step):
    while len(self._epoch_starts) < 2 or self._epoch_starts[-1] <= step:
      e = len(self._epoch_starts) - 1
      self._epoch_starts.append(self._epoch_starts[e] + len(self._epoch_plan(e)))
    epoch = int(np.searchsorted(self._epoch_starts, step, side="right")) - 1
    return epoch, step - self._epoch_starts[epoch]

  def epoch(self, step):
    return self._locate(self._check_step(step))[0]

  def global_indices(self, step):
    step = self._check_step(step)
    epoch, pos = self._locate(step)
    rng = self._rng(5, step)
    out = np.full((self.global_batch_size,), -1, dtype=np.int64)
    filled = 0
    for c in self._epoch_plan(epoch)[pos]:
      members = self.class_members[c]
      take = int(self._sizes[c])
      out[filled:filled + take] = members[rng.permutation(members.size)[:take]]
      filled += take
    return out


__all__ = ["PKSampler", "NPairSampler", "PairSampler", "RandomSampler", "ClassAccumulatingSampler",
           "greedy_negative_class_miner"]

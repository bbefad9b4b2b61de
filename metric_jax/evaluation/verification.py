"""Verification accuracy with n negatives (S3, N-pair): can the positive be told apart from n negatives?

Every sample with at least one other sample of its class is an anchor `a`. For each anchor one positive `p` (another
sample of its class) and `n` negatives `q_1..q_n` (samples of other classes, distinct, drawn without replacement) are
drawn uniformly at random from a seeded generator. The anchor is verified when its positive scores strictly better
than every negative:

  acc_n = mean_a 1[ s(a, p) > max_l s(a, q_l) ]

with `s` the cosine / dot similarity, or minus the (squared) Euclidean distance. Equal scores count as a failure.
Chance level is `1 / (n + 1)`.

References:
  Sohn. "Improved Deep Metric Learning with Multi-class N-pair Loss Objective", NeurIPS 2016, Sec. 5 (face
  verification with 1 and 71 negatives).
"""

from __future__ import annotations

import numpy as np

from metric_jax.evaluation import _inputs


def sample_tuples(labels, num_negatives: int, seed: int = 0):
  """Draws `(anchor [A], positive [A], negatives [A, n])` indices; anchors are the samples with a positive."""
  labels = np.asarray(labels)
  rng = np.random.default_rng(seed)
  order = np.argsort(labels, kind="stable")
  sorted_labels = labels[order]
  classes, starts, counts = np.unique(sorted_labels, return_index=True, return_counts=True)
  size = labels.shape[0]
  anchors, positives, negatives = [], [], []
  for start, count in zip(starts, counts):
    if count < 2:
      continue
    if size - count < num_negatives:
      raise ValueError(f"`num_negatives`={num_negatives} exceeds the {size - count} samples outside one class.")
    members = order[start:start + count]
    others = np.concatenate([order[:start], order[start + count:]])
    for offset, anchor in enumerate(members):
      pick = rng.integers(count - 1)
      positives.append(members[pick + (pick >= offset)])  # any member but the anchor itself
      negatives.append(others[rng.choice(others.size, num_negatives, replace=False)])
      anchors.append(anchor)
  if not anchors:
    raise ValueError("no class in `labels` has two samples, so no anchor has a positive to verify.")
  return np.asarray(anchors), np.asarray(positives), np.stack(negatives)


def _scores(embeddings, anchor, others, metric):
  """`s(anchor_a, others_al)` for `anchor [A]` and `others [A, L]` indices."""
  a = embeddings[anchor][:, None, :]
  o = embeddings[others]
  if metric in ("cosine", "dot"):
    return np.sum(a * o, axis=-1, dtype=np.float64)
  d2 = np.sum(np.square(a.astype(np.float64) - o), axis=-1)
  return -d2 if metric == "squared_euclidean" else -np.sqrt(d2)


def verification_accuracy(embeddings, labels, *, num_negatives=(1, 71), metric: str = "cosine", seed: int = 0,
                          chunk_size: int = 4096) -> dict:
  """`{"verification@n": acc_n}` for each n in `num_negatives` (see module docstring).

  Args:
    embeddings: float `[N, D]`.
    labels: integer `[N]`.
    num_negatives: the n values, each positive.
    metric: `cosine` | `dot` | `euclidean` | `squared_euclidean`.
    seed: seed of the draws (each n uses `seed`).
    chunk_size: anchors scored at a time (memory `chunk_size * (n + 1) * D` floats).
  """
  _inputs.check_metric(metric)
  embeddings = _inputs.as_embeddings(embeddings, "embeddings")
  labels = _inputs.as_labels(labels, embeddings.shape[0], "labels")
  if isinstance(num_negatives, (int, np.integer)):
    num_negatives = (num_negatives,)
  if np.unique(labels).size < 2:
    raise ValueError("`labels` hold a single class, so there is no negative to verify against.")
  if metric == "cosine":
    norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
    embeddings = embeddings / np.where(norms > 0, norms, 1).astype(np.float32)
  out = {}
  for n in num_negatives:
    n = _inputs.check_positive_int(n, "num_negatives")
    anchor, positive, negatives = sample_tuples(labels, n, seed)
    correct = 0
    for s in range(0, anchor.size, chunk_size):
      sl = slice(s, s + chunk_size)
      pos = _scores(embeddings, anchor[sl], positive[sl, None], metric)[:, 0]
      neg = _scores(embeddings, anchor[sl], negatives[sl], metric).max(axis=1)
      correct += int(np.sum(pos > neg))
    out[f"verification@{n}"] = correct / anchor.size
  return out


__all__ = ["verification_accuracy", "sample_tuples"]

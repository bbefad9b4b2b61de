"""Retrieval metrics from exact nearest neighbours: Recall@K, precision@1, R-precision, MAP@R.

For query i let `R_i` be the number of references that share its label (itself excluded in leave-one-out evaluation)
and `rel_ij` = 1 when its j-th nearest reference shares its label. Then

  Recall@K_i     = 1[sum_{j<=K} rel_ij > 0]                      (Song et al. 2016: any correct in the top K)
  precision@1_i  = rel_i1
  R-precision_i  = (1 / R_i) sum_{j<=R_i} rel_ij
  MAP@R_i        = (1 / R_i) sum_{j<=R_i} rel_ij * P@j_i,   P@j_i = (1 / j) sum_{l<=j} rel_il

and each metric is the mean over queries. A query with `R_i = 0` (its class has no other sample among the references)
takes part in none of them, for every metric including Recall@K: this is pytorch-metric-learning's `AccuracyCalculator`
convention for "lone" queries. A set where every query is lone raises a `ValueError`.

References:
  Musgrave, Belongie, Lim. "A Metric Learning Reality Check", ECCV 2020 (R-precision, MAP@R).
  Song, Xiang, Jegelka, Savarese. "Deep Metric Learning via Lifted Structured Feature Embedding", CVPR 2016 (Recall@K).
"""

from __future__ import annotations

import numpy as np

from metric_jax.evaluation import _inputs
from metric_jax.evaluation.knn import DEFAULT_CHUNK_SIZE, knn


def relevant_counts(query_labels: np.ndarray, reference_labels: np.ndarray, *, leave_one_out: bool) -> np.ndarray:
  """`R_i [Q]`: references sharing query i's label, minus one (itself) when `leave_one_out`."""
  classes, counts = np.unique(reference_labels, return_counts=True)
  position = np.searchsorted(classes, query_labels)
  position = np.minimum(position, classes.size - 1)
  found = classes[position] == query_labels
  r = np.where(found, counts[position], 0)
  return r - int(leave_one_out)


def metrics_from_neighbors(neighbor_labels, query_labels, num_relevant, ks=(1, 2, 4, 8)) -> dict:
  """Retrieval metrics from the labels of each query's sorted neighbours.

  Args:
    neighbor_labels: integer `[Q, K]`, labels of the K nearest references of each query, nearest first; K must be at
      least `max(ks)` and at least `max(num_relevant)`.
    query_labels: integer `[Q]`.
    num_relevant: integer `[Q]`, `R_i`; queries with `R_i = 0` are left out.
    ks: the K of each Recall@K.

  Returns:
    `{"recall@K": ..., "precision@1": ..., "r_precision": ..., "map@r": ...}` as Python floats.
  """
  ks = _inputs.check_ks(ks)
  neighbor_labels = np.asarray(neighbor_labels)
  num_relevant = np.asarray(num_relevant)
  query_labels = np.asarray(query_labels)
  depth = neighbor_labels.shape[1]
  if max(ks) > depth or num_relevant.max(initial=0) > depth:
    raise ValueError(f"`neighbor_labels` holds {depth} neighbours per query, fewer than max(ks)={max(ks)} or "
                     f"max R={num_relevant.max(initial=0)}.")
  keep = num_relevant > 0
  if not keep.any():
    raise ValueError("no query has another sample of its class among the references, so every retrieval metric is "
                     "undefined; check `query_labels` / `reference_labels`.")
  rel = neighbor_labels[keep] == query_labels[keep, None]
  r = num_relevant[keep]
  out = {}
  for k in ks:
    out[f"recall@{k}"] = float(np.mean(rel[:, :k].any(axis=1)))
  out["precision@1"] = float(np.mean(rel[:, 0]))
  within_r = np.arange(depth)[None, :] < r[:, None]
  rel_r = rel & within_r
  out["r_precision"] = float(np.mean(rel_r.sum(axis=1) / r))
  precision_at_j = np.cumsum(rel_r, axis=1) / np.arange(1, depth + 1)[None, :]
  out["map@r"] = float(np.mean(np.sum(precision_at_j * rel_r, axis=1) / r))
  return out


def retrieval_metrics(query_embeddings, query_labels, reference_embeddings=None, reference_labels=None, *,
                      ks=(1, 2, 4, 8), metric: str = "cosine", chunk_size: int = DEFAULT_CHUNK_SIZE) -> dict:
  """Recall@K for each K, precision@1, R-precision and MAP@R of exact nearest-neighbour retrieval.

  Args:
    query_embeddings: float `[Q, D]`.
    query_labels: integer `[Q]`.
    reference_embeddings: float `[N, D]`, a set disjoint from the queries; None means leave-one-out retrieval in
      the query set (each query's own row is excluded).
    reference_labels: integer `[N]`, given exactly when `reference_embeddings` is.
    ks: the K of each Recall@K.
    metric: `cosine` | `dot` | `euclidean` | `squared_euclidean` (see `knn`).
    chunk_size: queries per kNN chunk.

  Returns:
    Flat dict of Python floats: `recall@K` for each K, `precision@1`, `r_precision`, `map@r`.
  """
  ks = _inputs.check_ks(ks)
  queries = _inputs.as_embeddings(query_embeddings, "query_embeddings")
  query_labels = _inputs.as_labels(query_labels, queries.shape[0], "query_labels")
  leave_one_out = reference_embeddings is None
  if leave_one_out:
    if reference_labels is not None:
      raise ValueError("`reference_labels` were given without `reference_embeddings`.")
    references, reference_labels = queries, query_labels
  else:
    references = _inputs.as_embeddings(reference_embeddings, "reference_embeddings")
    reference_labels = _inputs.as_labels(reference_labels, references.shape[0], "reference_labels")
    _inputs.check_same_dim(queries, references)
  if np.unique(reference_labels).size < 2:
    name = "query_labels" if leave_one_out else "reference_labels"
    raise ValueError(f"`{name}` hold a single class, so every retrieval is trivially correct; retrieval metrics need "
                     "at least two classes.")
  num_relevant = relevant_counts(query_labels, reference_labels, leave_one_out=leave_one_out)
  available = references.shape[0] - int(leave_one_out)
  if max(ks) > available:
    raise ValueError(f"`ks` asks for Recall@{max(ks)} but only {available} reference(s) are available per query.")
  depth = max(max(ks), int(num_relevant.max()))
  index, _ = knn(queries, None if leave_one_out else references, depth, metric=metric,
                         exclude_self=leave_one_out, chunk_size=chunk_size)
  return metrics_from_neighbors(reference_labels[index], query_labels, num_relevant, ks)


__all__ = ["retrieval_metrics", "metrics_from_neighbors", "relevant_counts"]

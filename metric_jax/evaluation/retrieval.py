"""Retrieval metrics from exact nearest neighbours: Recall@K, precision@1, R-precision, MAP@R.

A reference is *relevant* to a query when it shares the query's label: the same class id (labels `[N]`), or at least
one common label (multi-hot labels `[N, L]`, the convention of `metric_jax.labels`). For query i let `R_i` be the number
of references relevant to it (itself excluded in leave-one-out evaluation) and `rel_ij` = 1 when its j-th nearest
reference is relevant. Then

  Recall@K_i     = 1[sum_{j<=K} rel_ij > 0]                      (Song et al. 2016: any correct in the top K)
  precision@1_i  = rel_i1
  R-precision_i  = (1 / R_i) sum_{j<=R_i} rel_ij
  MAP@R_i        = (1 / R_i) sum_{j<=R_i} rel_ij * P@j_i,   P@j_i = (1 / j) sum_{l<=j} rel_il

and each metric is the mean over queries. A query with `R_i = 0` (its class has no other sample among the references;
with multi-hot labels, no reference shares any of its labels, e.g. a row without labels) takes part in none of them,
for every metric including Recall@K: this is pytorch-metric-learning's `AccuracyCalculator` convention for "lone"
queries. A set where every query is lone raises a `ValueError`. With class ids written as one-hot rows every metric is
unchanged (relevance and `R_i` are the same).

References:
  Musgrave, Belongie, Lim. "A Metric Learning Reality Check", ECCV 2020 (R-precision, MAP@R).
  Song, Xiang, Jegelka, Savarese. "Deep Metric Learning via Lifted Structured Feature Embedding", CVPR 2016 (Recall@K).
"""

from __future__ import annotations

import numpy as np

from metric_jax.evaluation import _inputs
from metric_jax.evaluation.knn import DEFAULT_CHUNK_SIZE, knn

_WORK_ELEMENTS = 1 << 24  # entries per temporary array of the multi-hot label comparisons (16M: tens of MB)


def _shared_label_counts(query_labels: np.ndarray, reference_labels: np.ndarray) -> np.ndarray:
  """Multi-hot `[Q, L]`, `[N, L]` -> `[Q]`: references sharing at least one label with each query.

  Identical label rows are counted once on each side (`np.unique`), so the work is `U_q x U_r x L` for `U_q`, `U_r`
  distinct label sets, in query blocks of bounded size; `share = (P_q P_r^T > 0)` is one float32 matmul per block
  (exact: the products count shared labels, at most L).
  """
  ref_sets, ref_counts = np.unique(reference_labels, axis=0, return_counts=True)
  query_sets, query_inverse = np.unique(query_labels, axis=0, return_inverse=True)
  ref_sets = ref_sets.astype(np.float32)
  ref_counts = ref_counts.astype(np.float64)
  counts = np.empty(query_sets.shape[0], np.int64)
  rows = max(1, _WORK_ELEMENTS // max(ref_sets.shape[0], 1))
  for start in range(0, query_sets.shape[0], rows):
    share = query_sets[start:start + rows].astype(np.float32) @ ref_sets.T > 0.5
    counts[start:start + rows] = np.rint(share.astype(np.float64) @ ref_counts).astype(np.int64)
  return counts[query_inverse.reshape(-1)]


def relevant_counts(query_labels: np.ndarray, reference_labels: np.ndarray, *, leave_one_out: bool) -> np.ndarray:
  """`R_i [Q]`: references relevant to query i (same class id / a shared label), minus itself when `leave_one_out`
  (a multi-hot row without any label is not relevant to itself)."""
  if _inputs.is_multi_hot(query_labels):
    counts = _shared_label_counts(query_labels, reference_labels)
    if leave_one_out:
      counts = counts - query_labels.any(axis=1)
    return counts
  classes, counts = np.unique(reference_labels, return_counts=True)
  position = np.searchsorted(classes, query_labels)
  position = np.minimum(position, classes.size - 1)
  found = classes[position] == query_labels
  r = np.where(found, counts[position], 0)
  return r - int(leave_one_out)


def relevance(query_labels: np.ndarray, neighbor_labels: np.ndarray) -> np.ndarray:
  """`rel [Q, K]` boolean: neighbour j of query i is relevant to it.

  Class ids: `query_labels [Q]`, `neighbor_labels [Q, K]`, equality. Multi-hot: `[Q, L]` and `[Q, K, L]`, at least one
  common label.
  """
  query_labels = np.asarray(query_labels)
  neighbor_labels = np.asarray(neighbor_labels)
  if query_labels.ndim == 1:
    return neighbor_labels == query_labels[:, None]
  return np.any(neighbor_labels.astype(bool) & query_labels.astype(bool)[:, None, :], axis=2)


def _neighbour_relevance(query_labels, reference_labels, index) -> np.ndarray:
  """`rel [Q, K]` for neighbour indices `index [Q, K]` into the references, without a `[Q, K, L]` array: multi-hot
  rows are bit-packed (`L / 8` bytes) and compared in query blocks of bounded size."""
  if not _inputs.is_multi_hot(query_labels):
    return reference_labels[index] == query_labels[:, None]
  packed_queries = np.packbits(query_labels, axis=1)
  packed_references = np.packbits(reference_labels, axis=1)
  out = np.empty(index.shape, bool)
  rows = max(1, _WORK_ELEMENTS // max(index.shape[1] * packed_queries.shape[1], 1))
  for start in range(0, index.shape[0], rows):
    block = slice(start, start + rows)
    common = packed_references[index[block]] & packed_queries[block, None, :]
    out[block] = common.any(axis=2)
  return out


def metrics_from_relevance(relevant, num_relevant, ks=(1, 2, 4, 8)) -> dict:
  """Retrieval metrics from the relevance of each query's sorted neighbours.

  Args:
    relevant: boolean `[Q, K]`, `rel_ij` for the K nearest references of each query, nearest first; K must be at
      least `max(ks)` and at least `max(num_relevant)`.
    num_relevant: integer `[Q]`, `R_i`; queries with `R_i = 0` are left out.
    ks: the K of each Recall@K.

  Returns:
    `{"recall@K": ..., "precision@1": ..., "r_precision": ..., "map@r": ...}` as Python floats.
  """
  ks = _inputs.check_ks(ks)
  relevant = np.asarray(relevant, dtype=bool)
  num_relevant = np.asarray(num_relevant)
  depth = relevant.shape[1]
  if max(ks) > depth or num_relevant.max(initial=0) > depth:
    raise ValueError(f"the neighbour lists hold {depth} neighbours per query, fewer than max(ks)={max(ks)} or "
                     f"max R={num_relevant.max(initial=0)}.")
  keep = num_relevant > 0
  if not keep.any():
    raise ValueError("no query has another sample of its class among the references (no reference shares a label "
                     "with any query), so every retrieval metric is undefined; check `query_labels` / "
                     "`reference_labels`.")
  rel = relevant[keep]
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


def metrics_from_neighbors(neighbor_labels, query_labels, num_relevant, ks=(1, 2, 4, 8)) -> dict:
  """Retrieval metrics from the labels of each query's sorted neighbours.

  Args:
    neighbor_labels: labels of the K nearest references of each query, nearest first: class ids `[Q, K]`, or
      multi-hot `[Q, K, L]`; K must be at least `max(ks)` and at least `max(num_relevant)`.
    query_labels: class ids `[Q]`, or multi-hot `[Q, L]`.
    num_relevant: integer `[Q]`, `R_i`; queries with `R_i = 0` are left out.
    ks: the K of each Recall@K.

  Returns:
    `{"recall@K": ..., "precision@1": ..., "r_precision": ..., "map@r": ...}` as Python floats.
  """
  neighbor_labels = np.asarray(neighbor_labels)
  query_labels = np.asarray(query_labels)
  if neighbor_labels.ndim != query_labels.ndim + 1 or neighbor_labels.shape[0] != query_labels.shape[0]:
    raise ValueError(f"`neighbor_labels` {neighbor_labels.shape} must be [Q, K] for class ids [Q] or [Q, K, L] for "
                     f"multi-hot [Q, L] `query_labels`, got query labels of shape {query_labels.shape}.")
  return metrics_from_relevance(relevance(query_labels, neighbor_labels), num_relevant, ks)


def retrieval_metrics(query_embeddings, query_labels, reference_embeddings=None, reference_labels=None, *,
                      ks=(1, 2, 4, 8), metric: str = "cosine", chunk_size: int = DEFAULT_CHUNK_SIZE) -> dict:
  """Recall@K for each K, precision@1, R-precision and MAP@R of exact nearest-neighbour retrieval.

  Args:
    query_embeddings: float `[Q, D]`.
    query_labels: class ids `[Q]`, or multi-hot `[Q, L]` (boolean or 0/1; relevant = at least one shared label).
    reference_embeddings: float `[N, D]`, a set disjoint from the queries; None means leave-one-out retrieval in
      the query set (each query's own row is excluded).
    reference_labels: `[N]` or `[N, L]`, the same kind as `query_labels`, given exactly when `reference_embeddings`
      is.
    ks: the K of each Recall@K.
    metric: `cosine` | `dot` | `euclidean` | `squared_euclidean` (see `knn`).
    chunk_size: queries per kNN chunk.

  Returns:
    Flat dict of Python floats: `recall@K` for each K, `precision@1`, `r_precision`, `map@r`.
  """
  ks = _inputs.check_ks(ks)
  queries = _inputs.as_embeddings(query_embeddings, "query_embeddings")
  query_labels = _inputs.as_labels(query_labels, queries.shape[0], "query_labels", multi_hot=True)
  leave_one_out = reference_embeddings is None
  if leave_one_out:
    if reference_labels is not None:
      raise ValueError("`reference_labels` were given without `reference_embeddings`.")
    references, reference_labels = queries, query_labels
  else:
    references = _inputs.as_embeddings(reference_embeddings, "reference_embeddings")
    reference_labels = _inputs.as_labels(reference_labels, references.shape[0], "reference_labels", multi_hot=True)
    _inputs.check_same_dim(queries, references)
    _inputs.check_label_kinds(query_labels, reference_labels)
  name = "query_labels" if leave_one_out else "reference_labels"
  multi_hot = _inputs.is_multi_hot(query_labels)
  if not multi_hot and np.unique(reference_labels).size < 2:
    raise ValueError(f"`{name}` hold a single class, so every retrieval is trivially correct; retrieval metrics need "
                     "at least two classes.")
  num_relevant = relevant_counts(query_labels, reference_labels, leave_one_out=leave_one_out)
  available = references.shape[0] - int(leave_one_out)
  if multi_hot and num_relevant.any() and np.all((num_relevant == 0) | (num_relevant == available)):
    raise ValueError(f"multi-hot `{name}`: every query shares a label with all references or with none, so every "
                     "retrieval is trivially correct; retrieval metrics need references that share no label with "
                     "the query.")
  if max(ks) > available:
    raise ValueError(f"`ks` asks for Recall@{max(ks)} but only {available} reference(s) are available per query.")
  depth = max(max(ks), int(num_relevant.max()))
  index, _ = knn(queries, None if leave_one_out else references, depth, metric=metric,
                 exclude_self=leave_one_out, chunk_size=chunk_size)
  relevant = _neighbour_relevance(query_labels, reference_labels, index)
  return metrics_from_relevance(relevant, num_relevant, ks)


__all__ = ["retrieval_metrics", "metrics_from_neighbors", "metrics_from_relevance", "relevance", "relevant_counts"]

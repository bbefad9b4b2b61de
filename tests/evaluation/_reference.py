"""Small, obviously-correct numpy references for the evaluation tests (float64, full matrices, stable sorts)."""

import numpy as np


def score_matrix(queries, references, metric):
  """Full `[Q, N]` matrix in float64, larger = nearer (distances negated)."""
  q = np.asarray(queries, np.float64)
  r = np.asarray(references, np.float64)
  if metric == "cosine":
    q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-300)
    r = r / np.maximum(np.linalg.norm(r, axis=1, keepdims=True), 1e-300)
    return q @ r.T
  if metric == "dot":
    return q @ r.T
  d2 = ((q[:, None, :] - r[None, :, :]) ** 2).sum(-1)
  return -d2 if metric == "squared_euclidean" else -np.sqrt(d2)


def brute_knn(queries, references, k, metric, exclude_self=False):
  """(indices [Q, k], scores [Q, k] in the metric's own sign) by a stable sort of each full row."""
  scores = score_matrix(queries, references, metric)
  if exclude_self:
    np.fill_diagonal(scores, -np.inf)
  order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
  top = np.take_along_axis(scores, order, axis=1)
  if metric in ("euclidean", "squared_euclidean"):
    top = -top
  return order, top


def brute_recall_at_k(queries, query_labels, references, reference_labels, ks, metric, leave_one_out):
  """Recall@K by a loop over queries; a query with no other sample of its class is skipped."""
  scores = score_matrix(queries, references, metric)
  hits = {k: [] for k in ks}
  for i in range(len(queries)):
    row = scores[i].copy()
    same = reference_labels == query_labels[i]
    if leave_one_out:
      row[i] = -np.inf
      same[i] = False
    if not same.any():
      continue
    order = np.argsort(-row, kind="stable")
    if leave_one_out:
      order = order[order != i]
    for k in ks:
      hits[k].append(bool(same[order[:k]].any()))
  return {f"recall@{k}": float(np.mean(hits[k])) for k in ks}


def clustered(rng, num_classes, per_class, dim, noise, *, dtype=np.float32):
  """Gaussian clusters: embeddings [num_classes * per_class, dim] and labels, shuffled."""
  centres = rng.standard_normal((num_classes, dim))
  labels = np.repeat(np.arange(num_classes), per_class)
  rng.shuffle(labels)
  x = centres[labels] + noise * rng.standard_normal((labels.size, dim))
  return x.astype(dtype), labels

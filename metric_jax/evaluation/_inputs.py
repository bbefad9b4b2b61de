"""Host-side argument checks for evaluation: embeddings and labels as numpy, errors that name the argument.

Evaluation runs once per epoch on whole data sets, so its inputs are checked eagerly (values included): an empty set,
a NaN or infinite embedding, labels of the wrong length or dtype raise a `ValueError` / `TypeError` here instead of
becoming a silent number in a metric.
"""

from __future__ import annotations

import numpy as np

METRICS = ("cosine", "dot", "euclidean", "squared_euclidean")


def as_embeddings(x, name: str) -> np.ndarray:
  """`x` (numpy or jax) as a finite float32 numpy `[N, D]` matrix with N >= 1 and D >= 1."""
  if x is None:
    raise ValueError(f"`{name}` is required, got None.")
  x = np.asarray(x)
  if x.ndim != 2:
    raise ValueError(f"`{name}` must have 2 dimensions [N, D], got shape {x.shape}.")
  if not np.issubdtype(x.dtype, np.floating):
    raise TypeError(f"`{name}` must be a floating-point array, got dtype {x.dtype}.")
  if x.shape[0] == 0:
    raise ValueError(f"`{name}` is empty (shape {x.shape}); evaluation needs at least one row.")
  if x.shape[1] == 0:
    raise ValueError(f"`{name}` has dimension 0 (shape {x.shape}).")
  x = np.ascontiguousarray(x, dtype=np.float32)
  finite = np.isfinite(x).all(axis=1)
  if not finite.all():
    bad = np.flatnonzero(~finite)
    raise ValueError(f"`{name}` holds NaN or infinite values in {bad.size} row(s), first at row {bad[0]}.")
  return x


def as_labels(labels, size: int, name: str) -> np.ndarray:
  """Integer labels `[size]` as an int64 numpy array."""
  if labels is None:
    raise ValueError(f"`{name}` is required, got None.")
  labels = np.asarray(labels)
  if labels.ndim != 1:
    raise ValueError(f"`{name}` must be 1-D, got shape {labels.shape}.")
  if not np.issubdtype(labels.dtype, np.integer):
    raise TypeError(f"`{name}` must hold integers, got dtype {labels.dtype}.")
  if labels.shape[0] != size:
    raise ValueError(f"`{name}` has length {labels.shape[0]} but its embeddings have {size} rows.")
  return labels.astype(np.int64)


def check_same_dim(queries: np.ndarray, references: np.ndarray, ref_name: str = "reference_embeddings"):
  if references.shape[1] != queries.shape[1]:
    raise ValueError(f"`{ref_name}` have dimension {references.shape[1]} but the queries have dimension "
                     f"{queries.shape[1]}.")


def check_metric(metric: str) -> str:
  if metric not in METRICS:
    raise ValueError(f"`metric` must be one of {METRICS}, got {metric!r}.")
  return metric


def check_positive_int(value, name: str) -> int:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
    raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
  return int(value)


def check_ks(ks) -> tuple:
  if isinstance(ks, (int, np.integer)):
    ks = (ks,)
  ks = tuple(ks)
  if not ks:
    raise ValueError("`ks` must hold at least one K, got an empty sequence.")
  for k in ks:
    check_positive_int(k, "ks")
  return tuple(int(k) for k in ks)

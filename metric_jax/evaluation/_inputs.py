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


def as_labels(labels, size: int, name: str, *, multi_hot: bool = False) -> np.ndarray:
  """Class ids `[size]` as an int64 numpy array or, with `multi_hot`, also multi-hot labels `[size, L]` as bool.

  Multi-hot labels follow `metric_jax.labels`: boolean, or integer 0/1, with `L >= 2` columns; row i carries label l
  where `labels[i, l]` is set, and two rows are related when they share at least one label. A `[size, 1]` array is
  refused as ambiguous (a column of class ids looks the same). Where `multi_hot` is False a 2-D array is an error
  that says which metrics accept multi-hot labels.
  """
  if labels is None:
    raise ValueError(f"`{name}` is required, got None.")
  labels = np.asarray(labels)
  if labels.ndim == 2:
    if not multi_hot:
      raise ValueError(f"`{name}` must be 1-D class ids [{size}] here, got shape {labels.shape}: multi-hot labels "
                       "[N, L] are supported by the retrieval metrics only (clustering, classification and "
                       "verification need one class per row).")
    if labels.shape[1] < 2:
      raise ValueError(f"`{name}` has shape {labels.shape}: pass class ids as a 1-D array [{size}], or multi-hot "
                       f"labels [{size}, L] with L >= 2 label columns.")
    if not (labels.dtype == np.bool_ or np.issubdtype(labels.dtype, np.integer)):
      raise TypeError(f"multi-hot `{name}` must hold booleans or integers 0/1, got dtype {labels.dtype}.")
    if labels.dtype != np.bool_ and not np.isin(labels, (0, 1)).all():
      bad = labels[~np.isin(labels, (0, 1))][0]
      raise ValueError(f"multi-hot `{name}` must hold 0/1 values, found {bad}; pass class ids as a 1-D array "
                       f"[{size}] instead.")
    if labels.shape[0] != size:
      raise ValueError(f"`{name}` has {labels.shape[0]} rows but its embeddings have {size} rows.")
    return labels.astype(bool)
  if labels.ndim != 1:
    accepted = "1-D class ids or 2-D multi-hot labels" if multi_hot else "1-D"
    raise ValueError(f"`{name}` must be {accepted}, got shape {labels.shape}.")
  if not np.issubdtype(labels.dtype, np.integer):
    raise TypeError(f"`{name}` must hold integers, got dtype {labels.dtype}.")
  if labels.shape[0] != size:
    raise ValueError(f"`{name}` has length {labels.shape[0]} but its embeddings have {size} rows.")
  return labels.astype(np.int64)


def is_multi_hot(labels: np.ndarray) -> bool:
  """Whether checked labels are multi-hot `[N, L]` rather than class ids `[N]`."""
  return labels.ndim == 2


def check_label_kinds(query_labels: np.ndarray, reference_labels: np.ndarray, ref_name: str = "reference_labels"):
  """Query and reference labels must both be class ids or both multi-hot with the same number of label columns."""
  if is_multi_hot(query_labels) != is_multi_hot(reference_labels):
    kinds = ("multi-hot", "class ids") if is_multi_hot(query_labels) else ("class ids", "multi-hot")
    raise ValueError(f"`{ref_name}` must be of the same kind as the query labels: query labels are {kinds[0]} "
                     f"{query_labels.shape}, `{ref_name}` are {kinds[1]} {reference_labels.shape}.")
  if is_multi_hot(query_labels) and query_labels.shape[1] != reference_labels.shape[1]:
    raise ValueError(f"multi-hot `{ref_name}` have {reference_labels.shape[1]} label columns but the query labels "
                     f"have {query_labels.shape[1]}.")


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

"""Label masks for pairwise losses.

For a `[B, M]` matrix of queries x keys, a pair (i, j) is *positive* when both rows are valid, their labels match and j is
not query i itself; *negative* when both are valid and the labels differ. "Itself" is described by `self_offset`: query i is
key `i + self_offset`. The default `"auto"` means offset 0 for a square matrix (queries and keys are the same batch) and no
self pairs for a rectangular one (a memory bank, or keys from other devices). Pass an integer when local queries are a
slice of global keys (device `d` of a data-parallel step: `self_offset = d * B_local`), or `None` for disjoint sets.

Labels are either integer class ids `[B]` or multi-hot `[B, L]` (boolean, or integer 0/1, `L >= 2`): with multi-hot
labels a pair is positive when the two rows share at least one label and negative when they share none (so a row
without any label is a negative of every other row). Queries and keys must use the same kind of labels (and the same
`L`). Positives are then no longer transitive (i~j and j~k do not imply i~k); every loss that works on the masks of
`pair_masks` handles that, since it only ever reads the masks.
"""

from __future__ import annotations

from typing import NamedTuple, Union

import jax.numpy as jnp

from metric_jax import _checks

SelfOffset = Union[int, str, None, jnp.ndarray]


class PairMasks(NamedTuple):
  """Boolean `[B, M]` masks; `valid` = both rows valid and not a self pair."""
  positive: jnp.ndarray
  negative: jnp.ndarray
  valid: jnp.ndarray


def resolve_self_offset(num_queries: int, num_keys: int, self_offset: SelfOffset = "auto"):
  if isinstance(self_offset, str):
    if self_offset != "auto":
      raise ValueError(f"`self_offset` must be an integer, None or 'auto', got {self_offset!r}.")
    return 0 if num_queries == num_keys else None
  return self_offset


def self_pair_mask(num_queries: int, num_keys: int, self_offset: SelfOffset = "auto"):
  """`[B, M]` boolean mask, True where key j is query i itself."""
  offset = resolve_self_offset(num_queries, num_keys, self_offset)
  if offset is None:
    return jnp.zeros((num_queries, num_keys), dtype=bool)
  rows = jnp.arange(num_queries)[:, None] + offset
  return rows == jnp.arange(num_keys)[None, :]


def is_multi_hot(labels) -> bool:
  """Whether checked labels are multi-hot `[B, L]` (as opposed to class ids `[B]`)."""
  return len(jnp.shape(labels)) == 2


def check_label_kinds(query_labels, key_labels):
  """Raises a ValueError naming `key_labels` when queries and keys use different kinds of labels (or multi-hot widths)."""
  if is_multi_hot(query_labels) != is_multi_hot(key_labels):
    kinds = ("multi-hot", "class ids") if is_multi_hot(query_labels) else ("class ids", "multi-hot")
    raise ValueError(f"`key_labels` must be of the same kind as `query_labels`: query labels are {kinds[0]} "
                     f"{tuple(jnp.shape(query_labels))}, key labels are {kinds[1]} {tuple(jnp.shape(key_labels))}.")
  if is_multi_hot(query_labels) and jnp.shape(query_labels)[1] != jnp.shape(key_labels)[1]:
    raise ValueError(f"multi-hot `key_labels` have {jnp.shape(key_labels)[1]} label columns but `query_labels` "
                     f"have {jnp.shape(query_labels)[1]}.")


def same_label(query_labels, key_labels):
  """`[B, M]` boolean: True where query i and key j share a label.

  Class ids `[B]`, `[M]`: equality. Multi-hot `[B, L]`, `[M, L]`: at least one common label, computed as one
  `[B, L] x [L, M]` count matmul (never a `[B, M, L]` tensor).
  """
  if not is_multi_hot(query_labels):
    return query_labels[:, None] == key_labels[None, :]
  q = (query_labels != 0).astype(jnp.float32)
  k = (key_labels != 0).astype(jnp.float32)
  return jnp.matmul(q, k.T) > 0.5


def _as_labels(labels, name):
  if not hasattr(labels, "shape"):
    labels = jnp.asarray(labels)
  size = labels.shape[0] if labels.ndim else -1
  return _checks.check_labels(labels, size, name, multi_hot=True)


def pair_masks(query_labels, key_labels=None, *, query_valid=None, key_valid=None,
               self_offset: SelfOffset = "auto") -> PairMasks:
  """Positive, negative and valid `[B, M]` masks from query labels and key labels.

  Args:
    query_labels: integer class ids `[B]`, or multi-hot `[B, L]` (boolean or integer 0/1; see module docstring).
    key_labels: `[M]` or `[M, L]`, the same kind as `query_labels`; None means the queries' labels (and mask) are
      the keys'.
    query_valid: optional boolean `[B]`; False rows (padding) take part in no pair.
    key_valid: optional boolean `[M]`.
    self_offset: which key is each query itself (see module docstring).

  Returns:
    `PairMasks(positive, negative, valid)`.
  """
  same = key_labels is None
  query_labels = _as_labels(query_labels, "query_labels")
  num_queries = query_labels.shape[0]
  if same:
    key_labels = query_labels
    if key_valid is None:
      key_valid = query_valid
  else:
    key_labels = _as_labels(key_labels, "key_labels")
    check_label_kinds(query_labels, key_labels)
  num_keys = key_labels.shape[0]
  query_valid = _checks.check_valid(query_valid, num_queries, "query_valid")
  key_valid = _checks.check_valid(key_valid, num_keys, "key_valid")
  valid = query_valid[:, None] & key_valid[None, :] & ~self_pair_mask(num_queries, num_keys, self_offset)
  shared = same_label(query_labels, key_labels)
  return PairMasks(positive=valid & shared, negative=valid & ~shared, valid=valid)


def check_matrix_inputs(matrix, query_labels, key_labels=None, query_valid=None, key_valid=None,
                        self_offset: SelfOffset = "auto", matrix_name: str = "matrix") -> tuple:
  """Validates the matrix form's arguments together and returns `(matrix, PairMasks)`.

  The shapes of `query_labels` / `key_labels` (class ids or multi-hot, see module docstring) and masks must agree
  with the `[B, M]` matrix; errors name the argument.
  """
  matrix = _checks.check_matrix(matrix, matrix_name)
  num_queries, num_keys = matrix.shape
  query_labels = _checks.check_labels(query_labels, num_queries, "query_labels", multi_hot=True)
  if key_labels is None:
    if num_keys != num_queries:
      raise ValueError(f"`key_labels` is required when `{matrix_name}` is rectangular {matrix.shape}.")
    key_labels = query_labels
    key_valid = query_valid if key_valid is None else key_valid
  key_labels = _checks.check_labels(key_labels, num_keys, "key_labels", multi_hot=True)
  check_label_kinds(query_labels, key_labels)
  query_valid = _checks.check_valid(query_valid, num_queries, "query_valid")
  key_valid = _checks.check_valid(key_valid, num_keys, "key_valid")
  masks = pair_masks(query_labels, key_labels, query_valid=query_valid, key_valid=key_valid,
                     self_offset=self_offset)
  return matrix, masks


def view_labels(num_samples: int, num_views: int = 2):
  """Labels of a self-supervised batch of `num_views` augmented views of `num_samples` samples, `[V * N]` int32.

  The batch is laid out view-major, `concatenate([view_1, ..., view_V])` of `[N, D]` blocks, so row `v * N + i` is
  view v of sample i and gets label i: the views of one sample are each other's positives and every other row is a
  negative. With the default two views this is the SimCLR batch of `ntxent` (and of `supcon` without class labels).
  """
  for value, name in ((num_samples, "num_samples"), (num_views, "num_views")):
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
      raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
  return jnp.tile(jnp.arange(num_samples, dtype=jnp.int32), num_views)


__all__ = ["PairMasks", "pair_masks", "same_label", "is_multi_hot", "self_pair_mask", "resolve_self_offset",
           "check_matrix_inputs", "check_label_kinds", "view_labels"]

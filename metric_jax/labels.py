"""Label masks for pairwise losses.

For a `[B, M]` matrix of queries x keys, a pair (i, j) is *positive* when both rows are valid, their labels match and j is
not query i itself; *negative* when both are valid and the labels differ. "Itself" is described by `self_offset`: query i is
key `i + self_offset`. The default `"auto"` means offset 0 for a square matrix (queries and keys are the same batch) and no
self pairs for a rectangular one (a memory bank, or keys from other devices). Pass an integer when local queries are a
slice of global keys (device `d` of a data-parallel step: `self_offset = d * B_local`), or `None` for disjoint sets.
"""

from __future__ import annotations

from typing import NamedTuple, Optional, Union

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


def pair_masks(query_labels, key_labels=None, *, query_valid=None, key_valid=None,
               self_offset: SelfOffset = "auto") -> PairMasks:
  """Positive, negative and valid `[B, M]` masks from query labels `[B]` and key labels `[M]`.

  Args:
    query_labels: integer `[B]`.
    key_labels: integer `[M]`; None means the queries' labels (and mask) are the keys'.
    query_valid: optional boolean `[B]`; False rows (padding) take part in no pair.
    key_valid: optional boolean `[M]`.
    self_offset: which key is each query itself (see module docstring).

  Returns:
    `PairMasks(positive, negative, valid)`.
  """
  same = key_labels is None
  if not hasattr(query_labels, "shape"):
    query_labels = jnp.asarray(query_labels)
  query_labels = _checks.check_labels(query_labels, query_labels.shape[0] if query_labels.ndim else -1,
                                      "query_labels")
  num_queries = query_labels.shape[0]
  if same:
    key_labels = query_labels
    if key_valid is None:
      key_valid = query_valid
  else:
    if not hasattr(key_labels, "shape"):
      key_labels = jnp.asarray(key_labels)
    key_labels = _checks.check_labels(key_labels, key_labels.shape[0] if key_labels.ndim else -1, "key_labels")
  num_keys = key_labels.shape[0]
  query_valid = _checks.check_valid(query_valid, num_queries, "query_valid")
  key_valid = _checks.check_valid(key_valid, num_keys, "key_valid")
  valid = query_valid[:, None] & key_valid[None, :] & ~self_pair_mask(num_queries, num_keys, self_offset)
  same_label = query_labels[:, None] == key_labels[None, :]
  return PairMasks(positive=valid & same_label, negative=valid & ~same_label, valid=valid)


def check_matrix_inputs(matrix, query_labels, key_labels=None, query_valid=None, key_valid=None,
                        self_offset: SelfOffset = "auto", matrix_name: str = "matrix") -> tuple:
  """Validates the matrix form's arguments together and returns `(matrix, PairMasks)`.

  The shapes of `query_labels` / `key_labels` / masks must agree with the `[B, M]` matrix; errors name the argument.
  """
  matrix = _checks.check_matrix(matrix, matrix_name)
  num_queries, num_keys = matrix.shape
  query_labels = _checks.check_labels(query_labels, num_queries, "query_labels")
  if key_labels is None:
    if num_keys != num_queries:
      raise ValueError(f"`key_labels` is required when `{matrix_name}` is rectangular {matrix.shape}.")
    key_labels = query_labels
    key_valid = query_valid if key_valid is None else key_valid
  key_labels = _checks.check_labels(key_labels, num_keys, "key_labels")
  query_valid = _checks.check_valid(query_valid, num_queries, "query_valid")
  key_valid = _checks.check_valid(key_valid, num_keys, "key_valid")
  masks = pair_masks(query_labels, key_labels, query_valid=query_valid, key_valid=key_valid,
                     self_offset=self_offset)
  return matrix, masks


__all__ = ["PairMasks", "pair_masks", "self_pair_mask", "resolve_self_offset", "check_matrix_inputs"]

"""Multi-class N-pair loss (S3): the N-pair-mc and N-pair-ovo forms of Sohn (2016).

An (N+1)-tuple is an anchor `f`, its positive `f⁺` and N−1 negatives. The N-pair-mc batch holds N pairs
`(f_c, f_c⁺)` from N distinct classes, and every other pair's positive is a negative for `f_c`:

  mc:   L = 1/N Σ_c log(1 + Σ_{c'≠c} exp(f_cᵀf_{c'}⁺ − f_cᵀf_c⁺))
  ovo:  L = 1/N Σ_c Σ_{c'≠c} log(1 + exp(f_cᵀf_{c'}⁺ − f_cᵀf_c⁺))

on dot products (the embeddings are *not* normalized; the paper regularizes their L2 norm instead, see `l2_reg`).

How a general labelled batch maps to pairs (the convention of pytorch-metric-learning's `NPairsLoss`): for every class,
the anchor is the first valid query of that class that has a positive key, and its positive is the first valid key of
the same class other than the anchor itself. In a batch that is its own key set, the anchor and positive of a class are
its first two valid samples; further samples of the class are ignored, and a class with a single sample takes no part in
the loss (it is neither an anchor nor a negative). The matrix form works on any `[B, M]` dot-product matrix: the
anchor's tuple is its row restricted to the positive keys of all anchors, read in place (no gather of columns).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from metric_jax import _checks, labels
from metric_jax.losses import _finite, _lse, _metric
from metric_jax.losses._registry import register


def _check_bool(value, name):
  if not isinstance(value, bool):
    raise TypeError(f"`{name}` must be a Python bool, got {value!r}.")
  return value


def _npair_tuples(matrix, query_labels, key_labels, query_valid, key_valid, self_offset):
  """Locates the tuples of the N-pair convention above inside the `[B, M]` matrix (no gather of its columns).

  Returns:
    `(matrix, is_anchor [B], pos_key [B], tuple_mask [B, M], alarm)`: the sanitized matrix (see
    `metric_jax.losses._finite`), `pos_key[i]` the positive key of anchor i, `tuple_mask[i, k]` marking the positives
    of the *other* anchors, i.e. the negatives of anchor i's tuple, and the alarm scalar (NaN when a valid pair's entry
    is not finite).
  """
  matrix, masks = labels.check_matrix_inputs(matrix, query_labels, key_labels, query_valid, key_valid, self_offset)
  matrix, alarm = _finite.sanitize(matrix, masks.valid)
  num_queries, num_keys = matrix.shape
  query_labels = jnp.asarray(query_labels)
  has_pos = jnp.any(masks.positive, axis=1)
  pos_key = jnp.argmax(masks.positive, axis=1)  # first positive key of each query
  same_class = query_labels[:, None] == query_labels[None, :]
  earlier = jnp.arange(num_queries)[None, :] < jnp.arange(num_queries)[:, None]
  taken = jnp.any(same_class & earlier & has_pos[None, :], axis=1)
  is_anchor = has_pos & ~taken
  is_pos_key = jnp.zeros((num_keys,), bool).at[pos_key].max(is_anchor)
  tuple_mask = is_anchor[:, None] & is_pos_key[None, :] & (pos_key[:, None] != jnp.arange(num_keys)[None, :])
  return matrix, is_anchor, pos_key, tuple_mask, alarm


def _npair_terms(matrix, is_anchor, pos_key, tuple_mask, mode: str):
  """Per-anchor losses along rows (anchors as queries) and per positive key along columns (positives as anchors)."""
  target = jnp.take_along_axis(matrix, pos_key[:, None], axis=1)[:, 0]                     # S[a_c, p_c], [B]
  key_target = jnp.zeros((matrix.shape[1],), matrix.dtype).at[pos_key].add(jnp.where(is_anchor, target, 0.0))
  row_diff = jnp.where(tuple_mask, matrix - target[:, None], 0.0)        # S[a_c, p_c'] − S[a_c, p_c]
  col_diff = jnp.where(tuple_mask, matrix - key_target[None, :], 0.0)    # S[a_c', p_c] − S[a_c, p_c]
  if mode == "mc":  # log(1 + Σ exp(diff)), computed on the differences (no cancellation).
    row, _ = _lse.masked_logsumexp(row_diff, tuple_mask, axis=1, add_one=True)
    col, _ = _lse.masked_logsumexp(col_diff, tuple_mask, axis=0, add_one=True)
    return row, col
  row = jnp.sum(jnp.where(tuple_mask, jax.nn.softplus(row_diff), 0.0), axis=1)
  col = jnp.sum(jnp.where(tuple_mask, jax.nn.softplus(col_diff), 0.0), axis=0)
  return row, col


def _npair_matrix_loss(mode, matrix, query_labels, key_labels, query_valid, key_valid, self_offset, symmetric):
  _check_bool(symmetric, "symmetric")
  matrix, is_anchor, pos_key, tuple_mask, alarm = _npair_tuples(matrix, query_labels, key_labels, query_valid,
                                                                key_valid, self_offset)
  row, col = _npair_terms(matrix, is_anchor, pos_key, tuple_mask, mode)
  # A single pair has no negative: its term is exactly 0 (mc: log 1, ovo: empty sum), as the contract requires.
  num_anchors = jnp.sum(is_anchor)
  loss = jnp.sum(jnp.where(is_anchor, row, 0.0))
  if symmetric:  # the column terms live on the positive keys; keys that are no anchor's positive have no term (0).
    loss = 0.5 * (loss + jnp.sum(col))
  return loss / jnp.maximum(num_anchors, 1) + alarm


def npair_mc_loss(matrix, query_labels, key_labels=None, *, query_valid=None, key_valid=None, self_offset="auto",
                  symmetric: bool = False):
  """Multi-class N-pair loss (N-pair-mc) on a dot-product similarity matrix.

  `L = 1/N Σ_c log(1 + Σ_{c'≠c} exp(S[a_c, p_{c'}] − S[a_c, p_c]))` over the N classes that have an (anchor a_c,
  positive p_c) pair (see the module docstring for how pairs are picked). This is the softmax cross-entropy of each
  anchor row of the `N × N` anchor-versus-positive table with the own positive as target.

  Args:
    matrix: dot-product similarities `S = f_q f_kᵀ`, `[B, M]`.
    query_labels: integer `[B]`.
    key_labels: integer `[M]`; None when the keys are the queries (square matrix, self pairs excluded).
    query_valid: optional boolean `[B]`; False rows are padding.
    key_valid: optional boolean `[M]`.
    self_offset: which key each query is itself (see `metric_jax.labels`).
    symmetric: also use the positives as anchors (the column softmax of the table) and average both directions
      (the paper's symmetric form; for a symmetric `S` it is exactly the tuple loss anchored at `f_c⁺`).

  Returns:
    Scalar loss; 0 when no class has a pair.

  References:
    Sohn, "Improved Deep Metric Learning with Multi-class N-pair Loss Objective", NeurIPS 2016.
  """
  return _npair_matrix_loss("mc", matrix, query_labels, key_labels, query_valid, key_valid, self_offset, symmetric)


def npair_ovo_loss(matrix, query_labels, key_labels=None, *, query_valid=None, key_valid=None, self_offset="auto",
                   symmetric: bool = False):
  """One-vs-one N-pair loss (N-pair-ovo) on a dot-product similarity matrix.

  `L = 1/N Σ_c Σ_{c'≠c} log(1 + exp(S[a_c, p_{c'}] − S[a_c, p_c]))`: N−1 independent triplet-style (softplus) terms
  per anchor instead of one softmax. Arguments as in `npair_mc_loss`.

  Returns:
    Scalar loss; 0 when no class has a pair.

  References:
    Sohn, "Improved Deep Metric Learning with Multi-class N-pair Loss Objective", NeurIPS 2016.
  """
  return _npair_matrix_loss("ovo", matrix, query_labels, key_labels, query_valid, key_valid, self_offset, symmetric)


def _embedding_l2(embeddings, valid, l2_reg):
  _checks.check_positive(l2_reg, "l2_reg", strict=False)
  sq_norms = jnp.sum(jnp.square(embeddings), axis=1)
  return l2_reg * _lse.safe_mean(sq_norms, valid)


def _anchor_positive_matrix(embeddings, labels_, valid, similarity):
  """The compact `[K, K]` similarity matrix `A Pᵀ` of anchors × positives, `K = max(B // 2, 1)`.

  Every anchor owns a distinct positive, so a batch of B rows has at most B // 2 tuples. The anchors (picked with the
  convention of the module docstring on the label masks alone) are moved to the first slots; slots past the number of
  anchors are marked invalid. Row k and column k then form tuple k, which the matrix form finds with the labels
  `arange(K)` and no self pairs. The product costs a quarter of the full `[B, B]` matrix.
  """
  num_rows = embeddings.shape[0]
  masks = labels.pair_masks(labels_, query_valid=valid)
  has_pos = jnp.any(masks.positive, axis=1)
  pos_key = jnp.argmax(masks.positive, axis=1)
  same_class = labels_[:, None] == labels_[None, :]
  earlier = jnp.arange(num_rows)[None, :] < jnp.arange(num_rows)[:, None]
  is_anchor = has_pos & ~jnp.any(same_class & earlier & has_pos[None, :], axis=1)
  num_slots = max(num_rows // 2, 1)
  anchor_rows = jnp.argsort(~is_anchor, stable=True)[:num_slots]
  slot_valid = is_anchor[anchor_rows]
  anchors = jnp.take(embeddings, anchor_rows, axis=0)
  positives = jnp.take(embeddings, pos_key[anchor_rows], axis=0)
  return _metric.similarity_matrix(anchors, similarity, keys=positives), jnp.arange(num_slots), slot_valid


@register("npair_mc")
def npair_mc(embeddings, labels, *, valid=None, symmetric: bool = False, l2_reg: float = 0.0,
             similarity: str = "dot"):
  """N-pair-mc loss of `[B, D]` embeddings with `[B]` labels, plus `l2_reg · mean_i |f_i|²` over valid rows.

  Equal to `npair_mc_loss` on the full `[B, B]` similarity matrix, but computed on the `[B/2, B/2]` matrix of anchors
  × positives only. `similarity`: `"dot"` (default, the paper's; embeddings used as given) or `"cosine"` (embeddings
  L2-normalized inside; the logits then lie in `[-1, 1]`). `l2_reg` is the paper's L2 regularizer of the
  (unnormalized) embedding norms; 0 turns it off (the default, so that a batch without pairs gives exactly 0).
  """
  embeddings, labels_, valid, alarm = _finite.embedding_inputs(embeddings, labels, valid)
  matrix, slot_labels, slot_valid = _anchor_positive_matrix(embeddings, labels_, valid, similarity)
  loss = npair_mc_loss(matrix, slot_labels, slot_labels, query_valid=slot_valid, key_valid=slot_valid,
                       self_offset=None, symmetric=symmetric)
  return loss + _embedding_l2(embeddings, valid, l2_reg) + alarm


@register("npair_ovo")
def npair_ovo(embeddings, labels, *, valid=None, symmetric: bool = False, l2_reg: float = 0.0,
              similarity: str = "dot"):
  """N-pair-ovo loss of `[B, D]` embeddings with `[B]` labels, plus `l2_reg · mean_i |f_i|²` over valid rows.

  Computed, like `npair_mc`, on the `[B/2, B/2]` matrix of anchors × positives; `similarity` as in `npair_mc`.
  """
  embeddings, labels_, valid, alarm = _finite.embedding_inputs(embeddings, labels, valid)
  matrix, slot_labels, slot_valid = _anchor_positive_matrix(embeddings, labels_, valid, similarity)
  loss = npair_ovo_loss(matrix, slot_labels, slot_labels, query_valid=slot_valid, key_valid=slot_valid,
                        self_offset=None, symmetric=symmetric)
  return loss + _embedding_l2(embeddings, valid, l2_reg) + alarm


__all__ = ["npair_mc_loss", "npair_ovo_loss", "npair_mc", "npair_ovo"]

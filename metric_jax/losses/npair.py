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

from metric_jax import _checks
from metric_jax.losses import _finite, _lse, _metric, _shard
from metric_jax.losses._registry import register


def _check_bool(value, name):
  if not isinstance(value, bool):
    raise TypeError(f"`{name}` must be a Python bool, got {value!r}.")
  return value


def _first_of_class(class_ids, candidate):
  """`[N]` bool: True at the lowest index among the `candidate` rows of each class (sort-based, `O(N log N)`)."""
  index = jnp.arange(class_ids.shape[0])
  order = jnp.lexsort((index, class_ids, ~candidate))       # candidates first, by class, then by index
  sorted_ids, sorted_candidate = class_ids[order], candidate[order]
  new_class = jnp.concatenate([jnp.ones((1,), bool), sorted_ids[1:] != sorted_ids[:-1]])
  return jnp.zeros_like(candidate).at[order].set(sorted_candidate & new_class)


def _tuple_rows(matrix, is_anchor, pos_key, target, is_pos_key, key_target, mode: str):
  """One block of anchor rows: `(sum of the row terms, column partials)`.

  Row terms (anchors as queries): mc `log(1 + Σ_k exp(S_ik − S_i,p(i)))`, ovo `Σ_k softplus(S_ik − S_i,p(i))` over
  the tuple keys k (the other anchors' positives). Column partials (positives as anchors, the symmetric form): per key
  k, over the block's anchors i, `(shift, total)` of `logsumexp_i(S_ik − S_a(k),k)` (mc) or `Σ_i softplus(...)` (ovo).
  """
  keys = jnp.arange(matrix.shape[1])
  tuple_mask = is_anchor[:, None] & is_pos_key[None, :] & (pos_key[:, None] != keys[None, :])
  row_diff = jnp.where(tuple_mask, matrix - target[:, None], 0.0)        # S[a_c, p_c'] − S[a_c, p_c]
  col_diff = jnp.where(tuple_mask, matrix - key_target[None, :], 0.0)    # S[a_c', p_c] − S[a_c, p_c]
  if mode == "mc":  # log(1 + Σ exp(diff)), computed on the differences (no cancellation).
    row, _ = _lse.masked_logsumexp(row_diff, tuple_mask, axis=1, add_one=True)
    return jnp.sum(jnp.where(is_anchor, row, 0.0)), _shard.block_logsumexp(col_diff, tuple_mask, axis=0)
  row = jnp.sum(jnp.where(tuple_mask, jax.nn.softplus(row_diff), 0.0))
  return row, jnp.sum(jnp.where(tuple_mask, jax.nn.softplus(col_diff), 0.0), axis=0)


def _combine(mode, row_sums, col_parts, num_anchors, symmetric, axis_name):
  """`(Σ row terms [+ Σ column terms] / 2) / N` from the blocks' outputs."""
  loss = _shard.sum_blocks(row_sums, axis_name)
  if symmetric:  # the column terms live on the positive keys; keys that are no anchor's positive have no term (0).
    if mode == "mc":
      col, _ = _shard.combine_logsumexp(*col_parts, axis_name, add_one=True)
    else:
      col = _shard.sum_blocks(col_parts, axis_name)
    loss = 0.5 * (loss + jnp.sum(col))
  # A single pair has no negative: its term is exactly 0 (mc: log 1, ovo: empty sum), as the contract requires.
  return loss / jnp.maximum(num_anchors, 1)


def _npair_matrix_loss(mode, matrix, query_labels, key_labels, query_valid, key_valid, self_offset, symmetric,
                       axis_name, block_size):
  """The matrix form: locates the tuples of the N-pair convention (module docstring) in the `[B, M]` matrix rows.

  Anchors are global: query i is an anchor when it has a positive key and no earlier query (over every device, in
  global order) of its class has one; its positive is its first positive key.
  """
  _check_bool(symmetric, "symmetric")
  if len(jnp.shape(query_labels)) == 2:
    raise ValueError(f"`query_labels` must be integer class ids [B] for the N-pair losses: their tuples take one "
                     f"anchor and one positive per class, which multi-hot labels {tuple(jnp.shape(query_labels))} do "
                     "not define.")
  problem = _shard.from_matrix(matrix, query_labels, key_labels, query_valid, key_valid, self_offset,
                               axis_name=axis_name, block_size=block_size)

  def first_positive(rows, extras, consts):   # labels only: the matrix rows are not read
    return (jnp.any(rows.positive, axis=1), jnp.argmax(rows.positive, axis=1).astype(jnp.int32)), None

  (has_pos, pos_key), _, _ = problem.map(first_positive)
  first = _first_of_class(problem.gather(problem.query_labels), problem.gather(has_pos))
  is_anchor = has_pos & jax.lax.dynamic_slice_in_dim(first, problem.row_offset, problem.num_rows)
  num_keys = problem.num_keys
  is_pos_key = problem.psum(jnp.zeros((num_keys,), jnp.int32).at[pos_key].add(is_anchor.astype(jnp.int32))) > 0
  # S[a, p(a)] for the local anchors (an entry of a valid pair), read directly from the given matrix rows.
  target = jnp.where(is_anchor, jnp.take_along_axis(matrix, pos_key[:, None], axis=1)[:, 0], 0.0)
  key_target = problem.psum(jnp.zeros((num_keys,), target.dtype).at[pos_key].add(target))

  def values(rows, extras, consts):
    return None, _tuple_rows(rows.matrix, *extras, *consts, mode)

  _, (row_sums, col_parts), alarm = problem.map(values, extras=(is_anchor, pos_key, target),
                                                consts=(is_pos_key, key_target))
  loss = _combine(mode, row_sums, col_parts, problem.count(is_anchor), symmetric, axis_name)
  return loss + alarm + problem.alarm


def npair_mc_loss(matrix, query_labels, key_labels=None, *, query_valid=None, key_valid=None, self_offset="auto",
                  symmetric: bool = False, axis_name=None, block_size=None):
  """Multi-class N-pair loss (N-pair-mc) on a dot-product similarity matrix.

  `L = 1/N Σ_c log(1 + Σ_{c'≠c} exp(S[a_c, p_{c'}] − S[a_c, p_c]))` over the N classes that have an (anchor a_c,
  positive p_c) pair (see the module docstring for how pairs are picked). This is the softmax cross-entropy of each
  anchor row of the `N × N` anchor-versus-positive table with the own positive as target.

  Args:
    matrix: dot-product similarities `S = f_q f_kᵀ`, `[B, M]`.
    query_labels: integer `[B]` (class ids only; multi-hot labels are refused).
    key_labels: integer `[M]`; None when the keys are the queries (square matrix, self pairs excluded).
    query_valid: optional boolean `[B]`; False rows are padding.
    key_valid: optional boolean `[M]`.
    self_offset: which key each query is itself (see `metric_jax.labels`).
    symmetric: also use the positives as anchors (the column softmax of the table) and average both directions
      (the paper's symmetric form; for a symmetric `S` it is exactly the tuple loss anchored at `f_c⁺`).
    axis_name: inside `shard_map`, the axis over which the query rows are sharded (anchors are picked in global
      order; the column sums of `symmetric` run over every device); `block_size`: query rows in blocks. See
      `metric_jax.losses._shard`.

  Returns:
    Scalar loss; 0 when no class has a pair.

  References:
    Sohn, "Improved Deep Metric Learning with Multi-class N-pair Loss Objective", NeurIPS 2016.
  """
  return _npair_matrix_loss("mc", matrix, query_labels, key_labels, query_valid, key_valid, self_offset, symmetric,
                            axis_name, block_size)


def npair_ovo_loss(matrix, query_labels, key_labels=None, *, query_valid=None, key_valid=None, self_offset="auto",
                   symmetric: bool = False, axis_name=None, block_size=None):
  """One-vs-one N-pair loss (N-pair-ovo) on a dot-product similarity matrix.

  `L = 1/N Σ_c Σ_{c'≠c} log(1 + exp(S[a_c, p_{c'}] − S[a_c, p_c]))`: N−1 independent triplet-style (softplus) terms
  per anchor instead of one softmax. Arguments as in `npair_mc_loss`.

  Returns:
    Scalar loss; 0 when no class has a pair.

  References:
    Sohn, "Improved Deep Metric Learning with Multi-class N-pair Loss Objective", NeurIPS 2016.
  """
  return _npair_matrix_loss("ovo", matrix, query_labels, key_labels, query_valid, key_valid, self_offset, symmetric,
                            axis_name, block_size)


def _embedding_l2(embeddings, valid, l2_reg, axis_name):
  """`l2_reg · mean_i |f_i|²` over the valid rows of every device."""
  _checks.check_positive(l2_reg, "l2_reg", strict=False)
  sq_norms = jnp.where(valid, jnp.sum(jnp.square(embeddings), axis=1), 0.0)
  total, count = _shard.psum((jnp.sum(sq_norms), jnp.sum(valid).astype(embeddings.dtype)), axis_name)
  return l2_reg * jnp.where(count > 0, total / jnp.maximum(count, 1), 0.0)


def _compact_tuples(key_labels, key_valid, num_queries: int, num_slots: int):
  """The tuples of the key set, one per class: `(slot_valid [S], anchor key [S], positive key [S])`.

  The anchor of a class is its first valid key, which must be a query (the first `num_queries` keys), and its
  positive the class's second valid key; a class needs two valid keys. Sort-based (`O(M log M)`, no `[M, M]` mask).
  """
  index = jnp.arange(key_labels.shape[0])
  order = jnp.lexsort((index, key_labels, ~key_valid))      # valid keys first, grouped by class, by index
  sorted_ids, sorted_valid = key_labels[order], key_valid[order]
  starts = sorted_valid & jnp.concatenate([jnp.ones((1,), bool), sorted_ids[1:] != sorted_ids[:-1]])
  second = jnp.concatenate([sorted_valid[1:] & (sorted_ids[1:] == sorted_ids[:-1]), jnp.zeros((1,), bool)])
  is_tuple = starts & second & (order < num_queries)
  picked = jnp.argsort(~is_tuple, stable=True)[:num_slots]
  positive = jnp.concatenate([order[1:], order[:1]])
  return is_tuple[picked], order[picked], positive[picked]


def _npair_registry(mode, embeddings, labels_, valid, symmetric, l2_reg, similarity, axis_name, block_size, memory):
  """The registry form on the compact `[S, S]` matrix of anchors × positives (`S` tuple slots).

  Every anchor owns a distinct positive, so a batch of G rows has at most G // 2 tuples (G with memory, whose keys can
  be positives); slot s is tuple s, and row s and column s of `A Pᵀ` form it. The slots are spread over the devices of
  `axis_name` (each computes its `[S / n, S]` rows); the product costs a quarter of the full `[G, G]` matrix.
  """
  _check_bool(symmetric, "symmetric")
  _checks.check_positive(l2_reg, "l2_reg", strict=False)
  matrix_fn = _metric.similarity_fn(similarity)
  _shard.check_axis_name(axis_name)
  block_size = _shard.check_block_size(block_size)
  embeddings, labels_, valid = _finite.check_embedding_inputs(embeddings, labels_, valid)
  embeddings, alarm = _finite.sanitize_rows(embeddings, valid)
  alarm = _shard.psum(alarm, axis_name)
  n = _shard.axis_size(axis_name)
  keys, key_labels, key_valid = (_shard.gather(x, axis_name) for x in (embeddings, labels_, valid))
  num_queries = keys.shape[0]
  mem = _shard.check_memory(memory, embeddings.shape[1], labels_)
  keys, key_labels, key_valid, alarm = _shard.append_memory(keys, key_labels, key_valid, alarm, mem)
  num_slots = num_queries if mem is not None else max(num_queries // 2, 1)
  local_slots = -(-num_slots // n)
  slot_valid, anchor_key, positive_key = _compact_tuples(key_labels, key_valid, num_queries, local_slots * n)
  positives = jnp.take(keys, positive_key, axis=0)                                  # [S, D], the compact keys
  first = _shard.axis_index(axis_name) * local_slots
  local = lambda x: jax.lax.dynamic_slice_in_dim(x, first, local_slots)
  anchors = jnp.take(keys, local(anchor_key), axis=0)                               # this device's [S / n, D]
  is_anchor = local(slot_valid)
  # S[a_s, p_s] for this device's slots, row by row (the diagonal of the compact matrix), gathered for the columns.
  target = _rowwise(matrix_fn, anchors, local(positives))
  target = jnp.where(is_anchor, target, 0.0)
  key_target = _shard.gather(target, axis_name)
  own = first + jnp.arange(local_slots, dtype=jnp.int32)

  def values(rows, consts, start):
    anchor_rows, anchor_valid, own_key, row_target = rows
    matrix = matrix_fn(anchor_rows, consts[0])
    return None, _tuple_rows(matrix, anchor_valid, own_key, row_target, consts[1], consts[2], mode)

  _, (row_sums, col_parts) = _shard.map_blocks(values, (anchors, is_anchor, own, target),
                                               (positives, slot_valid, key_target), block_size=block_size)
  num_anchors = _shard.psum(jnp.sum(is_anchor).astype(target.dtype), axis_name)
  loss = _combine(mode, row_sums, col_parts, num_anchors, symmetric, axis_name)
  return loss + _embedding_l2(embeddings, valid, l2_reg, axis_name) + alarm


def _rowwise(matrix_fn, a, b):
  """`[R]` with entry r the similarity of `a[r]` and `b[r]`, computed by `matrix_fn` on `[1, D]` row pairs."""
  return jax.vmap(lambda x, y: matrix_fn(x[None], y[None])[0, 0])(a, b)


@register("npair_mc")
def npair_mc(embeddings, labels, *, valid=None, symmetric: bool = False, l2_reg: float = 0.0,
             similarity: str = "dot", axis_name=None, block_size=None, memory=None):
  """N-pair-mc loss of `[B, D]` embeddings with `[B]` labels, plus `l2_reg · mean_i |f_i|²` over valid rows.

  Equal to `npair_mc_loss` on the full `[B, B]` similarity matrix (on the batch plus `memory` keys with memory), but
  computed on the `[B/2, B/2]` matrix of anchors × positives only. `similarity`: `"dot"` (default, the paper's;
  embeddings used as given) or `"cosine"` (embeddings L2-normalized inside; the logits then lie in `[-1, 1]`).
  `l2_reg` is the paper's L2 regularizer of the (unnormalized) embedding norms; 0 turns it off (the default, so that a
  batch without pairs gives exactly 0). Scale arguments (`axis_name`: the tuple slots are spread over the devices;
  `block_size`: slots in blocks; `memory`: extra keys, which can be positives but never anchors): see
  `metric_jax.losses._shard`.
  """
  return _npair_registry("mc", embeddings, labels, valid, symmetric, l2_reg, similarity, axis_name, block_size,
                         memory)


@register("npair_ovo")
def npair_ovo(embeddings, labels, *, valid=None, symmetric: bool = False, l2_reg: float = 0.0,
              similarity: str = "dot", axis_name=None, block_size=None, memory=None):
  """N-pair-ovo loss of `[B, D]` embeddings with `[B]` labels, plus `l2_reg · mean_i |f_i|²` over valid rows.

  Computed, like `npair_mc`, on the `[B/2, B/2]` matrix of anchors × positives; `similarity` and the scale arguments
  as in `npair_mc`.
  """
  return _npair_registry("ovo", embeddings, labels, valid, symmetric, l2_reg, similarity, axis_name, block_size,
                         memory)


__all__ = ["npair_mc_loss", "npair_ovo_loss", "npair_mc", "npair_ovo"]

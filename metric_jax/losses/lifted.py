"""Lifted structured loss (Song et al. 2016) and its generalized per-anchor form (Hermans et al. 2017).

Both work on plain Euclidean distances `D` (`metric_jax.pairwise.euclidean`, zero gradient at `D = 0`).

Lifted structure: for every positive pair (i, j),
  J_ij = log(Σ_{k∈N(i)} exp(α − D_ik) + Σ_{l∈N(j)} exp(α − D_jl)) + D_ij,
  L = 1/(2|P|) Σ_{(i,j)∈P} [J_ij]₊².
Counting each unordered pair once (Song's P) or each ordered pair (both (i,j) and (j,i), as done here and by
pytorch-metric-learning's `LiftedStructureLoss`) gives the same value, because `J_ij = J_ji` and |P| doubles too.

Generalized lifted structure: for every anchor a,
  L_a = [log Σ_{p∈P(a)} exp(D_ap − m_pos) + log Σ_{n∈N(a)} exp(m_neg − D_an)]₊,
with the hinge `[·]₊` (as in the paper and in pytorch-metric-learning's `GeneralizedLiftedStructureLoss`, not a
softplus), averaged over the anchors that have at least one positive and one negative.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from metric_jax import _checks, mining as _mining
from metric_jax.losses import _lse, _metric, _shard
from metric_jax.losses._registry import register


def lifted_structure_loss(matrix, query_labels, key_labels=None, *, query_valid=None, key_valid=None,
                          self_offset="auto", margin: float = 1.0, axis_name=None, block_size=None):
  """Lifted structured loss (Song et al. 2016, Eq. 4) on a Euclidean distance matrix.

  `J_ij = log(Σ_{k∈N(i)} exp(α − D_ik) + Σ_{l∈N(j)} exp(α − D_lj)) + D_ij`, `L = 1/(2|P|) Σ_{(i,j)∈P} [J_ij]₊²`.
  `N(i)` are the negative keys of query i (row i); `N(j)` are the negative queries of key j (column j), which for the
  square matrix of one batch are exactly the negatives of sample j. Positive pairs with no negative on either side
  have `J = −inf` and contribute 0.

  Args:
    matrix: Euclidean distances `D`, `[B, M]`.
    query_labels: integer `[B]`.
    key_labels: integer `[M]`; None when the keys are the queries (square matrix, self pairs excluded).
    query_valid: optional boolean `[B]`; False rows are padding.
    key_valid: optional boolean `[M]`.
    self_offset: which key each query is itself (see `metric_jax.labels`).
    margin: `α`, the negative margin (paper default 1).
    axis_name, block_size: rows sharded over a `shard_map` axis / evaluated in blocks (see
      `metric_jax.losses.contrastive.contrastive_loss` and `metric_jax.losses._shard`).
      The column sums `Σ_{l∈N(j)}` run over the queries of every device and block (a first pass), then each
      positive pair's term is computed in a second pass. (The convenience form `lifted_structure` without memory,
      whose matrix is symmetric, uses the row sums as column sums and forms its gradient in the second pass:
      `_lifted_symmetric`.)

  Returns:
    Scalar loss; 0 without positive or without negative pairs.

  References:
    Song, Xiang, Jegelka, Savarese, "Deep Metric Learning via Lifted Structured Feature Embedding", CVPR 2016.
  """
  problem = _shard.from_matrix(matrix, query_labels, key_labels, query_valid, key_valid, self_offset,
                               axis_name=axis_name, block_size=block_size)
  return _lifted_structure(problem, margin)


# Positive pairs per row evaluated in the compact slot layout of `_lifted_symmetric` (PK batches up to 9 per class).
_POSITIVE_SLOTS = 8


def _lifted_structure(problem, margin):
  _checks.check_positive(margin, "margin", strict=False)
  if problem.symmetric:
    return _lifted_symmetric(problem, margin)

  def negative_sums(rows):
    neg_logits = margin - rows.matrix
    row_lse, row_has = _lse.masked_logsumexp(neg_logits, rows.negative, axis=1)   # [blk]: Σ_{k∈N(i)}
    return (row_lse, row_has), _shard.block_logsumexp(neg_logits, rows.negative, axis=0)   # column partials

  def pair_terms(rows, row_lse, row_has, col_lse, col_has):
    # log(exp(row_lse_i) + exp(col_lse_j)) for every pair, an empty side contributing 0 (exp(−inf)), on [blk, M]
    # only. `logaddexp` costs one exp and one log1p per pair; pairs with no negative on either side get 0.
    has_neg = row_has[:, None] | col_has[None, :]
    row_part = jnp.where(has_neg, jnp.where(row_has, row_lse, -jnp.inf)[:, None], 0.0)
    col_part = jnp.where(has_neg, jnp.where(col_has, col_lse, -jnp.inf)[None, :], 0.0)
    neg_lse = jnp.logaddexp(row_part, col_part)
    active = rows.positive & has_neg
    hinge = jax.nn.relu(jnp.where(active, neg_lse + rows.matrix, 0.0))
    total = jnp.sum(jnp.where(active, jnp.square(hinge), 0.0))
    return total, jnp.sum(rows.positive).astype(rows.matrix.dtype)

  if problem.single_block:   # one block: both passes on the same matrix rows
    def block(rows, extras, consts):
      (row_lse, row_has), (shift, total) = negative_sums(rows)
      col_lse, col_has = _shard.combine_logsumexp(shift[None], total[None], problem.axis_name)
      return None, pair_terms(rows, row_lse, row_has, col_lse, col_has)

    _, sums, alarm = problem.map(block)
  else:
    row_sums, (shifts, totals), alarm = problem.map(lambda rows, extras, consts: negative_sums(rows))
    columns = _shard.combine_logsumexp(shifts, totals, problem.axis_name)                # [M]: Σ_{l∈N(j)}
    _, sums, _ = problem.map(lambda rows, extras, consts: (None, pair_terms(rows, *extras, *consts)),
                             extras=row_sums, consts=columns)
  total, num_pos = problem.sum_blocks(sums)
  return total / (2.0 * jnp.maximum(num_pos, 1)) + alarm + problem.alarm


def _lifted_symmetric(problem, margin):
  """Lifted structure when the keys are the queries and `D` is symmetric (`PairProblem.symmetric`), with its gradient
  `dL/dD` formed explicitly (`PairProblem.map_linear`: blocks are not rematerialized).

  Then the column statistics equal the row statistics, `c_j = r_j = log Σ_{k∈N(j)} exp(α − D_jk)`, so one pass (no
  gradient) gives the vector `r` over the global batch, and a second pass computes every pair term and the gradient.
  With `z_ij = 2 [J_ij]₊` on the active positive pairs, `σ_ij = exp(r_i − log(e^{r_i} + e^{r_j}))` and
  `g_i = Σ_j z_ij σ_ij` (`dL/dr_i` times `2|P|`), the gradient of `Σ_P [J]₊²` is
    `C_ik = z_ik − [k∈N(i)] exp(α − D_ik) (g_i e^{−r_i} + g_k e^{−r_k})`,
  whose last term belongs to column k's statistic (`Σ_i z_ik (1 − σ_ik) = g_k` by the symmetry). Because
  `D_ik = D_ki` as functions of the embeddings, that term may be moved to the transposed entry (k, i), where it reads
  `[i∈N(k)] exp(α − D_ki) g_k e^{−r_k}`: the same form as the row term of row k. So each row needs only its own `g`:
    `C'_ik = z_ik − 2 [k∈N(i)] exp(α − D_ik − r_i) g_i`,
  which gives the same embedding gradient as `C` (not the same `dL/dD`).
  """
  def row_statistics(rows, d):
    return _lse.masked_logsumexp(margin - d, rows.negative, axis=1)   # r_i, and whether N(i) is empty

  if problem.single_block and problem.axis_name is None:
    key_stats = None   # one block holds every row: r of the keys = r of the rows, computed in the block
  else:
    (row_lse, row_has), _, _ = problem.map(
        lambda rows, extras, consts: (row_statistics(rows, jax.lax.stop_gradient(rows.matrix)),
                                      jnp.zeros((), rows.matrix.dtype)))
    key_stats = (problem.gather(jax.lax.stop_gradient(row_lse)), problem.gather(row_has))

  def block(rows):
    d = jax.lax.stop_gradient(rows.matrix)
    if key_stats is None:
      row_lse, row_has = row_statistics(rows, d)
      key_lse, key_has = row_lse, row_has
    else:
      key_lse, key_has = key_stats
      row_lse, row_has = key_lse[rows.rows], key_has[rows.rows]
    row_part = jnp.where(row_has, row_lse, -jnp.inf)[:, None]

    def pair_terms(d_pair, pair, pair_lse, pair_has):
      """`(Σ [J]₊², z, g)` over `[blk, X]` pairs (`pair` masks the positive ones) with their keys' `r`."""
      has_neg = row_has[:, None] | pair_has
      neg_lse = jnp.where(has_neg, jnp.logaddexp(row_part, jnp.where(pair_has, pair_lse, -jnp.inf)), 0.0)
      active = pair & has_neg
      hinge = jax.nn.relu(jnp.where(active, neg_lse + d_pair, 0.0))      # 0 off the active pairs
      z = 2.0 * hinge
      row_grad = jnp.sum(jnp.where(active, z * jnp.exp(row_part - neg_lse), 0.0), axis=1)   # g_i
      return jnp.sum(jnp.square(hinge)), z, row_grad

    def every_pair(d):    # the pair terms on all `[blk, M]` entries
      return pair_terms(d, rows.positive, key_lse[None, :], key_has[None, :])

    def positive_slots(d):   # only on each row's positives (PK batches): `[blk, S]` entries, then scattered
      index, valid = _mining.candidate_slots(rows.positive, _POSITIVE_SLOTS, candidates)
      total, z, row_grad = pair_terms(jnp.take_along_axis(d, index, axis=1), valid, key_lse[index], key_has[index])
      z = jnp.zeros_like(d).at[jnp.arange(d.shape[0])[:, None], index].add(jnp.where(valid, z, 0.0))
      return total, z, row_grad

    candidates = problem.label_candidates(rows, _POSITIVE_SLOTS + 1)
    if candidates is None:
      total, z, row_grad = every_pair(d)
    else:
      total, z, row_grad = jax.lax.cond(candidates.complete, positive_slots, every_pair, d)
    safe_lse = jnp.where(row_has, row_lse, 0.0)[:, None]
    neg_weight = jnp.where(rows.negative, jnp.exp(jnp.where(rows.negative, margin - d - safe_lse, -jnp.inf)), 0.0)
    coef = z - 2.0 * neg_weight * row_grad[:, None]
    return total, coef, jnp.sum(rows.positive).astype(d.dtype)

  total, counts, alarm = problem.map_linear(block)
  total, num_pos = problem.psum(total), problem.sum_blocks(counts)
  return total / (2.0 * jnp.maximum(num_pos, 1)) + alarm + problem.alarm


def generalized_lifted_structure_loss(matrix, query_labels, key_labels=None, *, query_valid=None, key_valid=None,
                                      self_offset="auto", pos_margin: float = 0.0, neg_margin: float = 1.0,
                                      axis_name=None, block_size=None):
  """Generalized lifted structure loss (Hermans et al. 2017, Sec. 2) on a Euclidean distance matrix.

  `L = mean_a [log Σ_{p∈P(a)} exp(D_ap − m_pos) + log Σ_{n∈N(a)} exp(m_neg − D_an)]₊` over the anchors (queries)
  with at least one positive and one negative key.

  Args:
    matrix: Euclidean distances `D`, `[B, M]`.
    query_labels, key_labels, query_valid, key_valid, self_offset, axis_name, block_size: as in
      `lifted_structure_loss`.
    pos_margin: `m_pos`, subtracted from positive distances (default 0, as pytorch-metric-learning).
    neg_margin: `m_neg`, the negative margin (default 1).

  Returns:
    Scalar loss; 0 when no anchor has both a positive and a negative.

  References:
    Hermans, Beyer, Leibe, "In Defense of the Triplet Loss for Person Re-Identification", arXiv:1703.07737, 2017.
    Song et al., "Deep Metric Learning via Lifted Structured Feature Embedding", CVPR 2016.
  """
  problem = _shard.from_matrix(matrix, query_labels, key_labels, query_valid, key_valid, self_offset,
                               axis_name=axis_name, block_size=block_size)
  return _generalized_lifted_structure(problem, pos_margin, neg_margin)


def _generalized_lifted_structure(problem, pos_margin, neg_margin):
  def block(rows, extras, consts):
    pos_lse, has_pos = _lse.masked_logsumexp(rows.matrix - pos_margin, rows.positive, axis=1)
    neg_lse, has_neg = _lse.masked_logsumexp(neg_margin - rows.matrix, rows.negative, axis=1)
    anchors = has_pos & has_neg
    per_anchor = jax.nn.relu(jnp.where(anchors, pos_lse + neg_lse, 0.0))
    return None, (jnp.sum(jnp.where(anchors, per_anchor, 0.0)), jnp.sum(anchors).astype(rows.matrix.dtype))

  _, sums, alarm = problem.map(block)
  total, count = problem.sum_blocks(sums)
  return jnp.where(count > 0, total / jnp.maximum(count, 1), 0.0) + alarm + problem.alarm


@register("lifted_structure")
def lifted_structure(embeddings, labels, *, valid=None, margin: float = 1.0, distance: str = "euclidean",
                     axis_name=None, block_size=None, memory=None):
  """Lifted structured loss of `[B, D]` embeddings with `[B]` labels.

  `distance`: `"euclidean"` (default, the paper's; embeddings used as given), `"squared_euclidean"` or `"cosine"`
  (`1 - cos`, embeddings L2-normalized inside). Scale arguments (`axis_name`, `block_size`, `memory`): see `metric_jax.losses.contrastive.contrastive`.
  """
  _checks.check_positive(margin, "margin", strict=False)
  problem = _shard.from_embeddings(embeddings, labels, valid, matrix_fn=_metric.distance_fn(distance),
                                   axis_name=axis_name, block_size=block_size, memory=memory)
  return _lifted_structure(problem, margin)


@register("generalized_lifted_structure")
def generalized_lifted_structure(embeddings, labels, *, valid=None, pos_margin: float = 0.0,
                                 neg_margin: float = 1.0, distance: str = "euclidean", axis_name=None,
                                 block_size=None, memory=None):
  """Generalized lifted structure loss of `[B, D]` embeddings with `[B]` labels.

  `distance`: `"euclidean"` (default, the paper's; embeddings used as given), `"squared_euclidean"` or `"cosine"`
  (`1 - cos`, embeddings L2-normalized inside). Scale arguments (`axis_name`, `block_size`, `memory`): see `metric_jax.losses.contrastive.contrastive`.
  """
  problem = _shard.from_embeddings(embeddings, labels, valid, matrix_fn=_metric.distance_fn(distance),
                                   axis_name=axis_name, block_size=block_size, memory=memory)
  return _generalized_lifted_structure(problem, pos_margin, neg_margin)


__all__ = [
    "lifted_structure_loss", "generalized_lifted_structure_loss", "lifted_structure", "generalized_lifted_structure",
]

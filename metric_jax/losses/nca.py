"""Neighbourhood components analysis (NCA) loss: the several-positives-per-class form of the N-pair family.

Each query i picks a neighbour j with probability `p_ij = softmax_j(−s·D_ij)` over all other valid keys (squared
Euclidean `D`, scale `s`); the loss is the negative log-probability of picking a neighbour of the same class,

  L = 1/|Q| Σ_{i∈Q} −log Σ_{j∈P(i)} p_ij
    = 1/|Q| Σ_{i∈Q} [logsumexp_{j≠i}(−s·D_ij) − logsumexp_{j∈P(i)}(−s·D_ij)],

averaged over the set Q of valid queries that have at least one positive (as pytorch-metric-learning's `NCALoss`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from metric_jax import _checks
from metric_jax.losses import _lse, _metric, _shard
from metric_jax.losses._registry import register


def nca_loss(matrix, query_labels, key_labels=None, *, query_valid=None, key_valid=None, self_offset="auto",
             softmax_scale: float = 1.0, axis_name=None, block_size=None):
  """NCA loss on a squared-Euclidean distance matrix.

  Args:
    matrix: squared Euclidean distances `D`, `[B, M]`.
    query_labels: integer `[B]`.
    key_labels: integer `[M]`; None when the keys are the queries (square matrix, self pairs excluded).
    query_valid: optional boolean `[B]`; False rows are padding.
    key_valid: optional boolean `[M]`.
    self_offset: which key each query is itself (see `metric_jax.labels`).
    softmax_scale: `s`, the inverse temperature of the neighbour softmax (Goldberger et al. use 1).
    axis_name, block_size: rows sharded over a `shard_map` axis / evaluated in blocks (see
      `metric_jax.losses.contrastive.contrastive_loss` and `metric_jax.losses._shard`).

  Returns:
    Scalar loss; 0 when no query has a positive, and 0 for a query whose keys are all positives.

  References:
    Goldberger, Roweis, Hinton, Salakhutdinov, "Neighbourhood Components Analysis", NeurIPS 2004.
    Sohn, "Improved Deep Metric Learning with Multi-class N-pair Loss Objective", NeurIPS 2016 (NCA as the N-pair form
    with several positives per class).
  """
  problem = _shard.from_matrix(matrix, query_labels, key_labels, query_valid, key_valid, self_offset,
                               axis_name=axis_name, block_size=block_size)
  return _nca(problem, softmax_scale)


def _nca(problem, softmax_scale):
  _checks.check_positive(softmax_scale, "softmax_scale")

  def block(rows, extras, consts):
    logits = -softmax_scale * rows.matrix
    pos_lse, has_pos = _lse.masked_logsumexp(logits, rows.positive, axis=1)
    neg_lse, has_neg = _lse.masked_logsumexp(logits, rows.negative, axis=1)
    # logsumexp_{all} − logsumexp_{pos} = softplus(logsumexp_{neg} − logsumexp_{pos}), without the cancellation.
    per_query = jnp.where(has_neg & has_pos, jax.nn.softplus(jnp.where(has_neg, neg_lse - pos_lse, 0.0)), 0.0)
    return None, (jnp.sum(per_query), jnp.sum(has_pos).astype(logits.dtype))

  _, sums, alarm = problem.map(block)
  total, count = problem.sum_blocks(sums)
  return _safe_divide(total, count) + alarm + problem.alarm


def _safe_divide(num, den):
  return jnp.where(den > 0, num / jnp.where(den > 0, den, 1.0), 0.0)


@register("nca")
def nca(embeddings, labels, *, valid=None, softmax_scale: float = 1.0, distance: str = "squared_euclidean",
        axis_name=None, block_size=None, memory=None):
  """NCA loss of `[B, D]` embeddings with `[B]` labels (see `nca_loss`).

  `distance`: `"squared_euclidean"` (default, Goldberger et al.'s; embeddings used as given), `"euclidean"` or
  `"cosine"` (`1 - cos`, embeddings L2-normalized inside; pick a larger `softmax_scale`, as the distances lie in
  `[0, 2]`). Scale arguments (`axis_name`, `block_size`, `memory`): see `metric_jax.losses.contrastive.contrastive`.
  """
  _checks.check_positive(softmax_scale, "softmax_scale")
  problem = _shard.from_embeddings(embeddings, labels, valid, matrix_fn=_metric.distance_fn(distance),
                                   axis_name=axis_name, block_size=block_size, memory=memory)
  return _nca(problem, softmax_scale)


__all__ = ["nca_loss", "nca"]

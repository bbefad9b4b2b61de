"""Binomial deviance loss (Yi et al. 2014), in the form used as a baseline by Ustinova & Lempitsky (2016).

On cosine similarities `s_ij`:

  L = Σ_{ij} w_ij log(1 + exp(−α(s_ij − β) m_ij)),

with `m_ij = 1` for positive pairs and `m_ij = −C` for negative pairs, and weights `w_ij = 1/n_pos` for positives and
`1/n_neg` for negatives (n_pos, n_neg the numbers of positive and negative pairs), i.e.

  L = 1/n_pos Σ_P softplus(−α(s − β)) + 1/n_neg Σ_N softplus(αC(s − β)).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from metric_jax import _checks
from metric_jax.losses import _metric, _shard
from metric_jax.losses._registry import register


def binomial_deviance_loss(matrix, query_labels, key_labels=None, *, query_valid=None, key_valid=None,
                           self_offset="auto", alpha: float = 2.0, beta: float = 0.5, neg_cost: float = 25.0,
                           axis_name=None, block_size=None):
  """Binomial deviance loss on a cosine similarity matrix.

  Args:
    matrix: cosine similarities `s`, `[B, M]`.
    query_labels: integer `[B]`.
    key_labels: integer `[M]`; None when the keys are the queries (square matrix, self pairs excluded).
    query_valid: optional boolean `[B]`; False rows are padding.
    key_valid: optional boolean `[M]`.
    self_offset: which key each query is itself (see `metric_jax.labels`).
    alpha: `α`, the slope (default 2).
    beta: `β`, the similarity threshold (default 0.5).
    neg_cost: `C`, the cost of negative pairs (default 25).
    axis_name, block_size: rows sharded over a `shard_map` axis / evaluated in blocks (see
      `metric_jax.losses.contrastive.contrastive_loss` and `metric_jax.losses._shard`).

  Returns:
    Scalar loss; 0 when the batch has no positive or no negative pair.

  References:
    Yi, Lei, Liao, Li, "Deep Metric Learning for Person Re-Identification", ICPR 2014.
    Ustinova, Lempitsky, "Learning Deep Embeddings with Histogram Loss", NeurIPS 2016 (defaults α = 2, β = 0.5,
    C = 25 and the 1/n_pos, 1/n_neg weights).
  """
  problem = _shard.from_matrix(matrix, query_labels, key_labels, query_valid, key_valid, self_offset,
                               axis_name=axis_name, block_size=block_size)
  return _binomial(problem, alpha, beta, neg_cost)


def _check_binomial(alpha, neg_cost):
  _checks.check_positive(alpha, "alpha")
  _checks.check_positive(neg_cost, "neg_cost")


def _binomial(problem, alpha, beta, neg_cost):
  """One block: autodiff. Several blocks (or devices): the pair counts first (masks only), then one pass that forms
  the gradient explicitly, each unordered pair once where the problem allows (`PairProblem.map_pairs_linear`):
  `dL/ds = −α σ(−α(s − β)) / n_pos` on positive pairs and `αC σ(αC(s − β)) / n_neg` on negative pairs."""
  _check_binomial(alpha, neg_cost)

  def terms(matrix):
    return jax.nn.softplus(-alpha * (matrix - beta)), jax.nn.softplus(alpha * neg_cost * (matrix - beta))

  if problem.single_block and not problem.pairs_once:
    def block(rows, extras, consts):
      pos_terms, neg_terms = terms(rows.matrix)
      dtype = rows.matrix.dtype
      return None, (jnp.sum(jnp.where(rows.positive, pos_terms, 0.0)),
                    jnp.sum(jnp.where(rows.negative, neg_terms, 0.0)),
                    jnp.sum(rows.positive).astype(dtype), jnp.sum(rows.negative).astype(dtype))

    _, sums, alarm = problem.map(block)
    pos_sum, neg_sum, num_pos, num_neg = problem.sum_blocks(sums)
    pos_part = pos_sum / jnp.maximum(num_pos, 1)
    neg_part = neg_sum / jnp.maximum(num_neg, 1)
    return jnp.where((num_pos > 0) & (num_neg > 0), pos_part + neg_part, 0.0) + alarm + problem.alarm

  counts, alarm = problem.map_pairs(problem.pair_counts)
  num_pos, num_neg = problem.sum_blocks(counts)
  active = ((num_pos > 0) & (num_neg > 0)).astype(problem.dtype)
  pos_scale, neg_scale = active / jnp.maximum(num_pos, 1), active / jnp.maximum(num_neg, 1)

  def block(rows, weight):
    pos_terms, neg_terms = terms(rows.matrix)
    pos_weight = jnp.where(rows.positive, weight * pos_scale, 0.0)
    neg_weight = jnp.where(rows.negative, weight * neg_scale, 0.0)
    value = jnp.sum(pos_weight * pos_terms) + jnp.sum(neg_weight * neg_terms)
    centered = rows.matrix - beta
    coef = (-alpha * pos_weight * jax.nn.sigmoid(-alpha * centered)
            + alpha * neg_cost * neg_weight * jax.nn.sigmoid(alpha * neg_cost * centered))
    return value, coef, None

  value, _, _ = problem.map_pairs_linear(block)
  return problem.psum(value) + alarm + problem.alarm


@register("binomial_deviance")
def binomial_deviance(embeddings, labels, *, valid=None, alpha: float = 2.0, beta: float = 0.5,
                      neg_cost: float = 25.0, similarity: str = "cosine", axis_name=None, block_size=None,
                      memory=None):
  """Binomial deviance loss of `[B, D]` embeddings with `[B]` labels.

  `similarity`: `"cosine"` (default, the paper's; embeddings L2-normalized inside) or `"dot"` (dot products of the
  embeddings as given; `beta` is then on the dot-product scale). Scale arguments (`axis_name`, `block_size`, `memory`): see `metric_jax.losses.contrastive.contrastive`.
  """
  _check_binomial(alpha, neg_cost)
  problem = _shard.from_embeddings(embeddings, labels, valid, matrix_fn=_metric.similarity_fn(similarity),
                                   axis_name=axis_name, block_size=block_size, memory=memory)
  return _binomial(problem, alpha, beta, neg_cost)


__all__ = ["binomial_deviance_loss", "binomial_deviance"]

"""Multi-similarity loss with ε-mining (Wang et al. 2019).

On cosine similarities `S`, for every anchor i with (mined) positives P_i and negatives N_i:

  L = 1/m Σ_i { 1/α log[1 + Σ_{k∈P_i} exp(−α(S_ik − λ))] + 1/β log[1 + Σ_{k∈N_i} exp(β(S_ik − λ))] },

m the number of valid anchors. ε-mining (the paper's pair mining, Eq. 5–6) keeps a positive when
`S_ik⁺ − ε < max_{k'∈N(i)} S_ik'` and a negative when `S_ik⁻ + ε > min_{k'∈P(i)} S_ik'`, computed on
stopped-gradient similarities (`metric_jax.mining.multi_similarity_pairs`); it always keeps both a positive and a
negative of an anchor, or neither.

`plus_one=False` drops the "+1" inside both logarithms (`1/α log Σ_{P_i} …`), the variant analysed by the general
pair-weighting (GPW) paper; each term is then 0 for an empty set, and the loss can be negative.

An anchor takes part only when it has at least one positive and one negative (after mining), so a batch without
positive or without negative pairs gives exactly 0. pytorch-metric-learning's `MultiSimilarityLoss` keeps the one-sided
term of an anchor that has only positives or only negatives; the two agree whenever every anchor has both, and always
with the ε-miner, which mines both or neither.
"""

from __future__ import annotations

import jax.numpy as jnp

from metric_jax import _checks, mining as mining_lib
from metric_jax.losses import _lse, _metric, _shard
from metric_jax.losses._registry import register


def _check_bool(value, name):
  if not isinstance(value, bool):
    raise TypeError(f"`{name}` must be a Python bool, got {value!r}.")
  return value


def multi_similarity_loss(matrix, query_labels, key_labels=None, *, query_valid=None, key_valid=None,
                          self_offset="auto", alpha: float = 2.0, beta: float = 50.0, base: float = 0.5,
                          mining: bool = True, epsilon: float = 0.1, plus_one: bool = True, axis_name=None,
                          block_size=None):
  """Multi-similarity loss on a cosine similarity matrix.

  Args:
    matrix: cosine similarities `S`, `[B, M]`.
    query_labels: integer `[B]`.
    key_labels: integer `[M]`; None when the keys are the queries (square matrix, self pairs excluded).
    query_valid: optional boolean `[B]`; False rows are padding.
    key_valid: optional boolean `[M]`.
    self_offset: which key each query is itself (see `metric_jax.labels`).
    alpha: `α`, scale of the positive term (paper: 2).
    beta: `β`, scale of the negative term (paper: 50).
    base: `λ`, the similarity margin (0.5 as in the authors' code and pytorch-metric-learning's `base`; the paper
      reports λ = 1 for some settings).
    mining: apply ε-mining before the loss (the paper's full method).
    epsilon: `ε` of the mining (paper: 0.1).
    plus_one: keep the "+1" inside the logarithms (the paper's loss); False gives `1/α log Σ …` (GPW form).
    axis_name, block_size: rows sharded over a `shard_map` axis / evaluated in blocks (see
      `metric_jax.losses.contrastive.contrastive_loss` and `metric_jax.losses._shard`).

  Returns:
    Scalar loss, the mean over valid queries; anchors without a positive or a negative add 0.

  References:
    Wang, Han, Huang, Dong, Scott, "Multi-Similarity Loss with General Pair Weighting for Deep Metric Learning",
    CVPR 2019.
  """
  problem = _shard.from_matrix(matrix, query_labels, key_labels, query_valid, key_valid, self_offset,
                               axis_name=axis_name, block_size=block_size)
  return _multi_similarity(problem, alpha, beta, base, mining, epsilon, plus_one)


def _check_multi_similarity(alpha, beta, mining, epsilon, plus_one):
  for value, name in ((alpha, "alpha"), (beta, "beta")):
    _checks.check_positive(value, name)
  _checks.check_positive(epsilon, "epsilon", strict=False)
  _check_bool(mining, "mining")
  _check_bool(plus_one, "plus_one")


def _multi_similarity(problem, alpha, beta, base, mining, epsilon, plus_one):
  _check_multi_similarity(alpha, beta, mining, epsilon, plus_one)

  def block(rows, extras, consts):
    matrix, positive, negative = rows.matrix, rows.positive, rows.negative
    if mining:
      positive, negative = mining_lib.multi_similarity_pairs(matrix, positive, negative, epsilon=epsilon)
    pos_lse, has_pos = _lse.masked_logsumexp(-alpha * (matrix - base), positive, axis=1, add_one=plus_one)
    neg_lse, has_neg = _lse.masked_logsumexp(beta * (matrix - base), negative, axis=1, add_one=plus_one)
    per_anchor = jnp.where(has_pos & has_neg, pos_lse / alpha + neg_lse / beta, 0.0)
    return None, jnp.sum(per_anchor)

  _, sums, alarm = problem.map(block)
  total = problem.sum_blocks(sums)
  return total / jnp.maximum(problem.num_valid_queries(), 1) + alarm + problem.alarm


@register("multi_similarity")
def multi_similarity(embeddings, labels, *, valid=None, alpha: float = 2.0, beta: float = 50.0, base: float = 0.5,
                     mining: bool = True, epsilon: float = 0.1, plus_one: bool = True, similarity: str = "cosine",
                     axis_name=None, block_size=None, memory=None):
  """Multi-similarity loss of `[B, D]` embeddings with `[B]` labels.

  `similarity`: `"cosine"` (default, the paper's; embeddings L2-normalized inside) or `"dot"` (dot products of the
  embeddings as given; `base` and `epsilon` are then on the dot-product scale). Scale arguments (`axis_name`, `block_size`, `memory`): see `metric_jax.losses.contrastive.contrastive`.
  """
  _check_multi_similarity(alpha, beta, mining, epsilon, plus_one)
  problem = _shard.from_embeddings(embeddings, labels, valid, matrix_fn=_metric.similarity_fn(similarity),
                                   axis_name=axis_name, block_size=block_size, memory=memory)
  return _multi_similarity(problem, alpha, beta, base, mining, epsilon, plus_one)


__all__ = ["multi_similarity_loss", "multi_similarity"]

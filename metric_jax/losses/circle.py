"""Circle loss (Sun et al. 2020), the pair-wise (class-label) form.

On similarities `s` (cosine in the registry form), every query i with positives `s_p ∈ P(i)` and negatives
`s_n ∈ N(i)` has

  L_i = log[1 + Σ_{n∈N(i)} exp(γ α_n (s_n − Δ_n)) · Σ_{p∈P(i)} exp(−γ α_p (s_p − Δ_p))]
      = softplus(logsumexp_n γ α_n (s_n − Δ_n) + logsumexp_p −γ α_p (s_p − Δ_p)),

with the self-paced weights `α_p = [O_p − s_p]₊`, `α_n = [s_n − O_n]₊` and `O_p = 1 + m`, `O_n = −m`, `Δ_p = 1 − m`,
`Δ_n = m`. The paper multiplies the gradient of each similarity by its α ("the gradient with respect to s_n is
multiplied with α_n"), i.e. the weights are constants in back-propagation, as in the authors' code and
pytorch-metric-learning's `CircleLoss`; `detach_weights=False` back-propagates through them as well (the plain
derivative of the formula). The loss is the mean of `L_i` over the queries that have both a positive and a negative.

Defaults m = 0.4, γ = 80: the paper's setting for fine-grained image retrieval (it uses m = 0.25 with γ = 256 for face
recognition and γ = 128 for person re-identification). Labels may be class ids `[B]` or multi-hot `[B, L]`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from metric_jax import _checks, pairwise
from metric_jax.losses import _lse, _shard
from metric_jax.losses._registry import register


def circle_loss(matrix, query_labels, key_labels=None, *, query_valid=None, key_valid=None, self_offset="auto",
                margin: float = 0.4, gamma: float = 80.0, detach_weights: bool = True, axis_name=None,
                block_size=None):
  """Circle loss on a similarity matrix.

  Args:
    matrix: similarities `s`, `[B, M]` (cosine in the paper).
    query_labels: integer `[B]` or multi-hot `[B, L]`.
    key_labels: `[M]` / `[M, L]`; None when the keys are the queries (square matrix, self pairs excluded).
    query_valid: optional boolean `[B]`; False rows are padding.
    key_valid: optional boolean `[M]`.
    self_offset: which key each query is itself (see `metric_jax.labels`).
    margin: `m`, the relaxation factor (fine-grained retrieval: 0.4).
    gamma: `γ`, the scale factor (fine-grained retrieval: 80).
    detach_weights: treat `α_p`, `α_n` as constants in the gradient (the paper's gradient); False differentiates
      through them too.
    axis_name, block_size: rows sharded over a `shard_map` axis / evaluated in blocks (see
      `metric_jax.losses.contrastive.contrastive_loss` and `metric_jax.losses._shard`).

  Returns:
    Scalar loss; 0 (with a zero gradient) when no query has both a positive and a negative.

  References:
    Sun, Cheng, Zhang, Zhang, Zheng, Wang, Wei, "Circle Loss: A Unified Perspective of Pair Similarity
    Optimization", CVPR 2020.
  """
  problem = _shard.from_matrix(matrix, query_labels, key_labels, query_valid, key_valid, self_offset,
                               axis_name=axis_name, block_size=block_size)
  return _circle(problem, margin, gamma, detach_weights)


def _check_circle(margin, gamma, detach_weights):
  _checks.check_positive(gamma, "gamma")
  _checks.check_positive(margin, "margin", strict=False)
  if not isinstance(detach_weights, bool):
    raise TypeError(f"`detach_weights` must be a Python bool, got {detach_weights!r}.")


def _circle(problem, margin, gamma, detach_weights):
  _check_circle(margin, gamma, detach_weights)

  def block(rows, extras, consts):
    s = rows.matrix
    alpha_p = jax.nn.relu(1.0 + margin - s)
    alpha_n = jax.nn.relu(s + margin)
    if detach_weights:
      alpha_p, alpha_n = jax.lax.stop_gradient(alpha_p), jax.lax.stop_gradient(alpha_n)
    pos_lse, has_pos = _lse.masked_logsumexp(-gamma * alpha_p * (s - (1.0 - margin)), rows.positive, axis=1)
    neg_lse, has_neg = _lse.masked_logsumexp(gamma * alpha_n * (s - margin), rows.negative, axis=1)
    queries = has_pos & has_neg
    per_query = jnp.where(queries, jax.nn.softplus(jnp.where(queries, pos_lse + neg_lse, 0.0)), 0.0)
    return None, (jnp.sum(per_query), jnp.sum(queries).astype(s.dtype))

  _, sums, alarm = problem.map(block)
  total, count = problem.sum_blocks(sums)
  return total / jnp.maximum(count, 1) + alarm + problem.alarm


@register("circle")
def circle(embeddings, labels, *, valid=None, margin: float = 0.4, gamma: float = 80.0, detach_weights: bool = True,
           axis_name=None, block_size=None, memory=None):
  """Circle loss of `[B, D]` embeddings with `[B]` or multi-hot `[B, L]` labels on cosine similarities.

  Scale arguments (`axis_name`, `block_size`, `memory`): see `metric_jax.losses.contrastive.contrastive`."""
  _check_circle(margin, gamma, detach_weights)
  problem = _shard.from_embeddings(embeddings, labels, valid, matrix_fn=pairwise.cosine_similarity,
                                   axis_name=axis_name, block_size=block_size, memory=memory)
  return _circle(problem, margin, gamma, detach_weights)


__all__ = ["circle_loss", "circle"]

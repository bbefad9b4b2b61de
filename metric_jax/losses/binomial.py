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

from metric_jax import _checks, labels
from metric_jax.losses import _finite, _metric
from metric_jax.losses._registry import register


def binomial_deviance_loss(matrix, query_labels, key_labels=None, *, query_valid=None, key_valid=None,
                           self_offset="auto", alpha: float = 2.0, beta: float = 0.5, neg_cost: float = 25.0):
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

  Returns:
    Scalar loss; 0 when the batch has no positive or no negative pair.

  References:
    Yi, Lei, Liao, Li, "Deep Metric Learning for Person Re-Identification", ICPR 2014.
    Ustinova, Lempitsky, "Learning Deep Embeddings with Histogram Loss", NeurIPS 2016 (defaults α = 2, β = 0.5,
    C = 25 and the 1/n_pos, 1/n_neg weights).
  """
  _checks.check_positive(alpha, "alpha")
  _checks.check_positive(neg_cost, "neg_cost")
  matrix, masks = labels.check_matrix_inputs(matrix, query_labels, key_labels, query_valid, key_valid, self_offset)
  matrix, alarm = _finite.sanitize(matrix, masks.valid)
  num_pos = jnp.sum(masks.positive)
  num_neg = jnp.sum(masks.negative)
  pos_terms = jax.nn.softplus(-alpha * (matrix - beta))
  neg_terms = jax.nn.softplus(alpha * neg_cost * (matrix - beta))
  pos_part = jnp.sum(jnp.where(masks.positive, pos_terms, 0.0)) / jnp.maximum(num_pos, 1)
  neg_part = jnp.sum(jnp.where(masks.negative, neg_terms, 0.0)) / jnp.maximum(num_neg, 1)
  return jnp.where((num_pos > 0) & (num_neg > 0), pos_part + neg_part, 0.0) + alarm


@register("binomial_deviance")
def binomial_deviance(embeddings, labels, *, valid=None, alpha: float = 2.0, beta: float = 0.5,
                      neg_cost: float = 25.0, similarity: str = "cosine"):
  """Binomial deviance loss of `[B, D]` embeddings with `[B]` labels.

  `similarity`: `"cosine"` (default, the paper's; embeddings L2-normalized inside) or `"dot"` (dot products of the
  embeddings as given; `beta` is then on the dot-product scale).
  """
  embeddings, labels_, valid, alarm = _finite.embedding_inputs(embeddings, labels, valid)
  return binomial_deviance_loss(_metric.similarity_matrix(embeddings, similarity), labels_, query_valid=valid,
                                alpha=alpha, beta=beta, neg_cost=neg_cost) + alarm


__all__ = ["binomial_deviance_loss", "binomial_deviance"]

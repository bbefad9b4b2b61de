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

from metric_jax import _checks, labels
from metric_jax.losses import _finite, _lse, _metric
from metric_jax.losses._registry import register


def nca_loss(matrix, query_labels, key_labels=None, *, query_valid=None, key_valid=None, self_offset="auto",
             softmax_scale: float = 1.0):
  """NCA loss on a squared-Euclidean distance matrix.

  Args:
    matrix: squared Euclidean distances `D`, `[B, M]`.
    query_labels: integer `[B]`.
    key_labels: integer `[M]`; None when the keys are the queries (square matrix, self pairs excluded).
    query_valid: optional boolean `[B]`; False rows are padding.
    key_valid: optional boolean `[M]`.
    self_offset: which key each query is itself (see `metric_jax.labels`).
    softmax_scale: `s`, the inverse temperature of the neighbour softmax (Goldberger et al. use 1).

  Returns:
    Scalar loss; 0 when no query has a positive, and 0 for a query whose keys are all positives.

  References:
    Goldberger, Roweis, Hinton, Salakhutdinov, "Neighbourhood Components Analysis", NeurIPS 2004.
    Sohn, "Improved Deep Metric Learning with Multi-class N-pair Loss Objective", NeurIPS 2016 (NCA as the N-pair form
    with several positives per class).
  """
  _checks.check_positive(softmax_scale, "softmax_scale")
  matrix, masks = labels.check_matrix_inputs(matrix, query_labels, key_labels, query_valid, key_valid, self_offset)
  matrix, alarm = _finite.sanitize(matrix, masks.valid)
  logits = -softmax_scale * matrix
  pos_lse, has_pos = _lse.masked_logsumexp(logits, masks.positive, axis=1)
  neg_lse, has_neg = _lse.masked_logsumexp(logits, masks.negative, axis=1)
  # logsumexp_{all} − logsumexp_{pos} = softplus(logsumexp_{neg} − logsumexp_{pos}), without the cancellation.
  per_query = jnp.where(has_neg, jax.nn.softplus(jnp.where(has_neg, neg_lse - pos_lse, 0.0)), 0.0)
  return _lse.safe_mean(per_query, has_pos) + alarm


@register("nca")
def nca(embeddings, labels, *, valid=None, softmax_scale: float = 1.0, distance: str = "squared_euclidean"):
  """NCA loss of `[B, D]` embeddings with `[B]` labels (see `nca_loss`).

  `distance`: `"squared_euclidean"` (default, Goldberger et al.'s; embeddings used as given), `"euclidean"` or
  `"cosine"` (`1 - cos`, embeddings L2-normalized inside; pick a larger `softmax_scale`, as the distances lie in
  `[0, 2]`).
  """
  embeddings, labels_, valid, alarm = _finite.embedding_inputs(embeddings, labels, valid)
  return nca_loss(_metric.distance_matrix(embeddings, distance), labels_, query_valid=valid,
                  softmax_scale=softmax_scale) + alarm


__all__ = ["nca_loss", "nca"]

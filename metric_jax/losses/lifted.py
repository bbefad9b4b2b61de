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

from metric_jax import _checks, labels
from metric_jax.losses import _finite, _lse, _metric
from metric_jax.losses._registry import register


def lifted_structure_loss(matrix, query_labels, key_labels=None, *, query_valid=None, key_valid=None,
                          self_offset="auto", margin: float = 1.0):
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

  Returns:
    Scalar loss; 0 without positive or without negative pairs.

  References:
    Song, Xiang, Jegelka, Savarese, "Deep Metric Learning via Lifted Structured Feature Embedding", CVPR 2016.
  """
  _checks.check_positive(margin, "margin", strict=False)
  matrix, masks = labels.check_matrix_inputs(matrix, query_labels, key_labels, query_valid, key_valid, self_offset)
  matrix, alarm = _finite.sanitize(matrix, masks.valid)
  neg_logits = margin - matrix
  row_lse, row_has = _lse.masked_logsumexp(neg_logits, masks.negative, axis=1)  # [B]: Σ_{k∈N(i)}
  col_lse, col_has = _lse.masked_logsumexp(neg_logits, masks.negative, axis=0)  # [M]: Σ_{l∈N(j)}
  # log(exp(row_lse_i) + exp(col_lse_j)) for every pair, an empty side contributing 0 (exp(−inf)), on [B, M] only.
  # `logaddexp` costs one exp and one log1p per pair; pairs with no negative on either side get 0 (masked below).
  has_neg = row_has[:, None] | col_has[None, :]
  row_part = jnp.where(has_neg, jnp.where(row_has, row_lse, -jnp.inf)[:, None], 0.0)
  col_part = jnp.where(has_neg, jnp.where(col_has, col_lse, -jnp.inf)[None, :], 0.0)
  neg_lse = jnp.logaddexp(row_part, col_part)
  active = masks.positive & has_neg
  hinge = jax.nn.relu(jnp.where(active, neg_lse + matrix, 0.0))
  num_pos = jnp.sum(masks.positive)
  total = jnp.sum(jnp.where(active, jnp.square(hinge), 0.0))
  return total / (2.0 * jnp.maximum(num_pos, 1)) + alarm


def generalized_lifted_structure_loss(matrix, query_labels, key_labels=None, *, query_valid=None, key_valid=None,
                                      self_offset="auto", pos_margin: float = 0.0, neg_margin: float = 1.0):
  """Generalized lifted structure loss (Hermans et al. 2017, Sec. 2) on a Euclidean distance matrix.

  `L = mean_a [log Σ_{p∈P(a)} exp(D_ap − m_pos) + log Σ_{n∈N(a)} exp(m_neg − D_an)]₊` over the anchors (queries)
  with at least one positive and one negative key.

  Args:
    matrix: Euclidean distances `D`, `[B, M]`.
    query_labels, key_labels, query_valid, key_valid, self_offset: as in `lifted_structure_loss`.
    pos_margin: `m_pos`, subtracted from positive distances (default 0, as pytorch-metric-learning).
    neg_margin: `m_neg`, the negative margin (default 1).

  Returns:
    Scalar loss; 0 when no anchor has both a positive and a negative.

  References:
    Hermans, Beyer, Leibe, "In Defense of the Triplet Loss for Person Re-Identification", arXiv:1703.07737, 2017.
    Song et al., "Deep Metric Learning via Lifted Structured Feature Embedding", CVPR 2016.
  """
  matrix, masks = labels.check_matrix_inputs(matrix, query_labels, key_labels, query_valid, key_valid, self_offset)
  matrix, alarm = _finite.sanitize(matrix, masks.valid)
  pos_lse, has_pos = _lse.masked_logsumexp(matrix - pos_margin, masks.positive, axis=1)
  neg_lse, has_neg = _lse.masked_logsumexp(neg_margin - matrix, masks.negative, axis=1)
  anchors = has_pos & has_neg
  per_anchor = jax.nn.relu(jnp.where(anchors, pos_lse + neg_lse, 0.0))
  return _lse.safe_mean(per_anchor, anchors) + alarm


@register("lifted_structure")
def lifted_structure(embeddings, labels, *, valid=None, margin: float = 1.0, distance: str = "euclidean"):
  """Lifted structured loss of `[B, D]` embeddings with `[B]` labels.

  `distance`: `"euclidean"` (default, the paper's; embeddings used as given), `"squared_euclidean"` or `"cosine"`
  (`1 - cos`, embeddings L2-normalized inside).
  """
  embeddings, labels_, valid, alarm = _finite.embedding_inputs(embeddings, labels, valid)
  return lifted_structure_loss(_metric.distance_matrix(embeddings, distance), labels_, query_valid=valid,
                               margin=margin) + alarm


@register("generalized_lifted_structure")
def generalized_lifted_structure(embeddings, labels, *, valid=None, pos_margin: float = 0.0,
                                 neg_margin: float = 1.0, distance: str = "euclidean"):
  """Generalized lifted structure loss of `[B, D]` embeddings with `[B]` labels.

  `distance`: `"euclidean"` (default, the paper's; embeddings used as given), `"squared_euclidean"` or `"cosine"`
  (`1 - cos`, embeddings L2-normalized inside).
  """
  embeddings, labels_, valid, alarm = _finite.embedding_inputs(embeddings, labels, valid)
  return generalized_lifted_structure_loss(_metric.distance_matrix(embeddings, distance), labels_, query_valid=valid,
                                           pos_margin=pos_margin, neg_margin=neg_margin) + alarm


__all__ = [
    "lifted_structure_loss", "generalized_lifted_structure_loss", "lifted_structure", "generalized_lifted_structure",
]

"""Contrastive softmax losses: supervised contrastive (SupCon, Khosla et al. 2020) and NT-Xent / InfoNCE (Chen et al.
2020, the SimCLR loss).

Both work on a similarity matrix `S` (cosine similarities of L2-normalized embeddings in the registry form) divided by a
temperature τ. For a query i, `P(i)` are its positive keys, `N(i)` its negative keys and `A(i) = P(i) ∪ N(i)` every
valid key except itself.

SupCon (the paper's L^sup_out, Eq. 2: the mean over positives outside the log):

  L = 1/|I| Σ_{i∈I} −1/|P(i)| Σ_{p∈P(i)} log[ exp(S_ip/τ) / Σ_{a∈A(i)} exp(S_ia/τ) ],

over the queries I that have a positive. A query whose keys are all positives still has a term (≥ log |P(i)|), as in
the paper and the authors' code.

NT-Xent, one term per positive pair (i, p), the other positives of i left out of its denominator:

  L = 1/|P| Σ_{(i,p)∈P} −log[ exp(S_ip/τ) / (exp(S_ip/τ) + Σ_{n∈N(i)} exp(S_in/τ)) ].

With the two views of SimCLR (`metric_jax.labels.view_labels`), P(i) is the one other view and the denominator is
SimCLR's `Σ_{k≠i}`; with more views per sample or class labels every positive pair gets its own softmax (as in
pytorch-metric-learning's `NTXentLoss`).

A batch without a positive pair gives 0 with a zero gradient for both (optax's `ntxent` returns NaN there); a query
without negatives adds 0 to NT-Xent. Labels may be class ids `[B]` or multi-hot `[B, L]`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from metric_jax import _checks, pairwise
from metric_jax.losses import _lse, _shard
from metric_jax.losses._registry import register


def supcon_loss(matrix, query_labels, key_labels=None, *, query_valid=None, key_valid=None, self_offset="auto",
                temperature: float = 0.1, axis_name=None, block_size=None):
  """Supervised contrastive loss (L^sup_out) on a similarity matrix.

  Per query i with a positive: `logsumexp_{a∈A(i)}(S_ia/τ) − mean_{p∈P(i)} S_ip/τ`; the loss is the sum of these
  terms divided by the number of such queries.

  Args:
    matrix: similarities `S`, `[B, M]` (cosine in the paper).
    query_labels: integer `[B]` or multi-hot `[B, L]`.
    key_labels: `[M]` / `[M, L]`; None when the keys are the queries (square matrix, self pairs excluded).
    query_valid: optional boolean `[B]`; False rows are padding.
    key_valid: optional boolean `[M]`.
    self_offset: which key each query is itself (see `metric_jax.labels`).
    temperature: `τ` (paper: 0.1).
    axis_name, block_size: rows sharded over a `shard_map` axis / evaluated in blocks (see
      `metric_jax.losses.contrastive.contrastive_loss` and `metric_jax.losses._shard`).

  Returns:
    Scalar loss; 0 (with a zero gradient) when no query has a positive.

  References:
    Khosla, Teterwak, Wang, Sarna, Tian, Isola, Maschinot, Liu, Krishnan, "Supervised Contrastive Learning",
    NeurIPS 2020.
  """
  problem = _shard.from_matrix(matrix, query_labels, key_labels, query_valid, key_valid, self_offset,
                               axis_name=axis_name, block_size=block_size)
  return _supcon(problem, temperature)


def _supcon(problem, temperature):
  _checks.check_positive(temperature, "temperature")

  def block(rows, extras, consts):
    logits = rows.matrix / temperature
    all_lse, _ = _lse.masked_logsumexp(logits, rows.valid, axis=1)
    num_pos = jnp.sum(rows.positive, axis=1)
    pos_mean = jnp.sum(jnp.where(rows.positive, logits, 0.0), axis=1) / jnp.maximum(num_pos, 1)
    has_pos = num_pos > 0
    per_query = jnp.where(has_pos, all_lse - pos_mean, 0.0)
    return None, (jnp.sum(per_query), jnp.sum(has_pos).astype(logits.dtype))

  _, sums, alarm = problem.map(block)
  total, count = problem.sum_blocks(sums)
  return total / jnp.maximum(count, 1) + alarm + problem.alarm


def ntxent_loss(matrix, query_labels, key_labels=None, *, query_valid=None, key_valid=None, self_offset="auto",
                temperature: float = 0.1, axis_name=None, block_size=None):
  """NT-Xent (InfoNCE) loss on a similarity matrix.

  Per positive pair (i, p): `softplus(logsumexp_{n∈N(i)}(S_in/τ) − S_ip/τ)`, 0 when i has no negative; the loss is
  the sum over positive pairs divided by their number.

  Args:
    matrix: similarities `S`, `[B, M]` (cosine in the paper).
    query_labels: integer `[B]` or multi-hot `[B, L]` (`metric_jax.labels.view_labels` for a self-supervised batch).
    key_labels: `[M]` / `[M, L]`; None when the keys are the queries (square matrix, self pairs excluded).
    query_valid: optional boolean `[B]`; False rows are padding.
    key_valid: optional boolean `[M]`.
    self_offset: which key each query is itself (see `metric_jax.labels`).
    temperature: `τ` (0.1, SimCLR's ImageNet setting and its code's default; optax and pytorch-metric-learning
      default to 0.07).
    axis_name, block_size: rows sharded over a `shard_map` axis / evaluated in blocks (see
      `metric_jax.losses.contrastive.contrastive_loss` and `metric_jax.losses._shard`).

  Returns:
    Scalar loss; 0 (with a zero gradient) without positive pairs.

  References:
    Chen, Kornblith, Norouzi, Hinton, "A Simple Framework for Contrastive Learning of Visual Representations",
    ICML 2020.
    van den Oord, Li, Vinyals, "Representation Learning with Contrastive Predictive Coding", arXiv:1807.03748, 2018
    (InfoNCE).
  """
  problem = _shard.from_matrix(matrix, query_labels, key_labels, query_valid, key_valid, self_offset,
                               axis_name=axis_name, block_size=block_size)
  return _ntxent(problem, temperature)


def _ntxent(problem, temperature):
  _checks.check_positive(temperature, "temperature")

  def block(rows, extras, consts):
    logits = rows.matrix / temperature
    neg_lse, has_neg = _lse.masked_logsumexp(logits, rows.negative, axis=1)
    terms = rows.positive & has_neg[:, None]
    per_pair = jnp.where(terms, jax.nn.softplus(jnp.where(terms, neg_lse[:, None] - logits, 0.0)), 0.0)
    return None, (jnp.sum(per_pair), jnp.sum(rows.positive).astype(logits.dtype))

  _, sums, alarm = problem.map(block)
  total, count = problem.sum_blocks(sums)
  return total / jnp.maximum(count, 1) + alarm + problem.alarm


@register("supcon")
def supcon(embeddings, labels, *, valid=None, temperature: float = 0.1, axis_name=None, block_size=None, memory=None):
  """SupCon loss of `[B, D]` embeddings with `[B]` or multi-hot `[B, L]` labels on cosine similarities.

  Scale arguments (`axis_name`, `block_size`, `memory`): see `metric_jax.losses.contrastive.contrastive`."""
  _checks.check_positive(temperature, "temperature")
  problem = _shard.from_embeddings(embeddings, labels, valid, matrix_fn=pairwise.cosine_similarity,
                                   axis_name=axis_name, block_size=block_size, memory=memory)
  return _supcon(problem, temperature)


@register("ntxent")
def ntxent(embeddings, labels, *, valid=None, temperature: float = 0.1, axis_name=None, block_size=None, memory=None):
  """NT-Xent loss of `[B, D]` embeddings with `[B]` or multi-hot `[B, L]` labels on cosine similarities; for a
  SimCLR batch `concatenate([view_1, view_2])` pass `labels=metric_jax.labels.view_labels(N)`.

  Scale arguments (`axis_name`, `block_size`, `memory`): see `metric_jax.losses.contrastive.contrastive`."""
  _checks.check_positive(temperature, "temperature")
  problem = _shard.from_embeddings(embeddings, labels, valid, matrix_fn=pairwise.cosine_similarity,
                                   axis_name=axis_name, block_size=block_size, memory=memory)
  return _ntxent(problem, temperature)


__all__ = ["supcon_loss", "ntxent_loss", "supcon", "ntxent"]

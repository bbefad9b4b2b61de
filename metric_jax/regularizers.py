"""Regularizers added to a metric loss: density adaptivity (S2), global orthogonal (GOR), embedding L2 (S3).

As the losses (`metric_jax.losses._finite`): rows where `valid` is False may hold anything (NaN, inf, huge values) and
change neither the value nor the valid rows' gradients (they are set to 0 before any arithmetic, and get an exact 0
gradient); a NaN or inf in a valid row makes the value NaN.

Scale, as the losses (`metric_jax.losses._shard`): every regularizer takes `axis_name`: inside `jax.shard_map` each
device passes its local rows and gets the regularizer of the global batch (per-class sums, pair sums and counts are
combined over the axis; value and gradient equal the unsharded ones). The pairwise ones (`global_orthogonal`,
`entropy`) also take `block_size` (query rows in blocks, `O(block_size x G)` memory).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from metric_jax import _checks, pairwise
from metric_jax.losses import _finite, _shard


def _check_inputs(embeddings, labels, valid, name: str = "embeddings", axis_name=None):
  """`(embeddings with invalid rows zeroed, labels, valid, alarm)`; see the module docstring. The alarm covers the
  valid rows of every device of `axis_name`."""
  _shard.check_axis_name(axis_name)
  embeddings = _checks.check_embeddings(embeddings, name)
  labels = _checks.check_labels(labels, embeddings.shape[0], "labels")
  valid = _checks.check_valid(valid, embeddings.shape[0], "valid")
  embeddings, alarm = _finite.sanitize(embeddings, valid[:, None])
  return embeddings, labels, valid, _shard.psum(alarm, axis_name)


def _safe_divide(num, den):
  return jnp.where(den > 0, num / jnp.where(den > 0, den, 1.0), 0.0)


def class_densities(features, labels, num_classes: int, *, valid=None, axis_name=None):
  """Per-class density `D(S_c) = mean_{i in c} |x_i - mu_c|^2` (mean squared distance to the class centroid).

  Use it on pre-embedding features to measure DML-DA's original densities `D0` (S2), or on embeddings.

  Args:
    features: `[N, F]` floating-point features.
    labels: integer `[N]` in `[0, num_classes)`.
    num_classes: `C`.
    valid: optional boolean `[N]`.
    axis_name: inside `shard_map`, the axis over which the rows are sharded: the per-class sums (counts, centroid
      sums, squared distances to the global centroids) are combined over it.

  Returns:
    `(densities [C], counts [C])`; density 0 for a class with no (valid) sample.
  """
  features, labels, valid, _ = _check_inputs(features, labels, valid, "features", axis_name)
  # A non-finite valid row makes its class's density NaN by itself; padded rows are zero and have weight 0.
  weight = valid.astype(features.dtype)
  counts, sums = _shard.psum((jax.ops.segment_sum(weight, labels, num_segments=num_classes),
                              jax.ops.segment_sum(features * weight[:, None], labels, num_segments=num_classes)),
                             axis_name)
  centroids = sums / jnp.maximum(counts, 1.0)[:, None]
  sq = jnp.sum(jnp.square(features - centroids[labels]), axis=1) * weight
  sq_sums = _shard.psum(jax.ops.segment_sum(sq, labels, num_segments=num_classes), axis_name)
  return _safe_divide(sq_sums, counts), counts


def density_adaptivity(embeddings, labels, alpha, d0, *, eta: float = 0.5, valid=None, axis_name=None):
  """DML-DA density-adaptivity regularizer (S2, Eq. 8) over the classes present in the batch.

      L_DA = 1/C sum_c (D_avg(S_c) - alpha_c)^2 - 1/C sum_c alpha_c
             + 1/C^2 sum_{ci, cj} (D0_cj^eta alpha_ci - D0_ci^eta alpha_cj)^2

  `D_avg(S_c)`: mean squared distance of class c's valid embeddings in the batch to their centroid; the sums run over
  the `C` classes with at least one valid sample in the batch. The first term pulls each class's density to its
  learnable target `alpha_c`, the second rewards larger targets (spread), the third keeps the targets proportional to
  the classes' original densities `D0` measured on pre-embedding features (`class_densities`). The paper trains
  `alpha` (init 0.5) with the network and weights the regularizer by lambda = 10.

  Args:
    embeddings: `[B, D]`.
    labels: integer `[B]` in `[0, K)`, indexing `alpha` and `d0`.
    alpha: `[K]` per-class target densities (differentiable).
    d0: `[K]` non-negative original densities (treated as constants).
    eta: exponent of `D0` (paper: 0.5).
    valid: optional boolean `[B]`.
    axis_name: rows sharded over a `shard_map` axis (the class statistics are those of the global batch).

  Returns:
    Scalar; 0 when no class is present.

  References:
    Li, et al., "Deep metric learning with density adaptivity", IEEE TMM 2019 (Eq. 8).
  """
  embeddings, labels, valid, alarm = _check_inputs(embeddings, labels, valid, axis_name=axis_name)
  alpha = _checks.check_float_array(alpha, "alpha", 1)
  d0 = _checks.check_float_array(d0, "d0", 1)
  num_classes = alpha.shape[0]
  if d0.shape[0] != num_classes:
    raise ValueError(f"`d0` has {d0.shape[0]} classes but `alpha` has {num_classes}.")
  _checks.check_positive(eta, "eta", strict=False)
  density, counts = class_densities(embeddings, labels, num_classes, valid=valid, axis_name=axis_name)
  present = counts > 0
  num_present = jnp.sum(present)
  d0 = jax.lax.stop_gradient(d0)
  d0_eta = jnp.where(d0 > 0, jnp.power(jnp.where(d0 > 0, d0, 1.0), eta), 0.0 if eta > 0 else 1.0)
  fit = jnp.sum(jnp.where(present, jnp.square(density - alpha), 0.0))
  spread = jnp.sum(jnp.where(present, alpha, 0.0))
  cross = d0_eta[None, :] * alpha[:, None] - d0_eta[:, None] * alpha[None, :]
  both = present[:, None] & present[None, :]
  ratio = jnp.sum(jnp.where(both, jnp.square(cross), 0.0))
  return _safe_divide(fit - spread, num_present) + _safe_divide(ratio, jnp.square(num_present)) + alarm


def global_orthogonal(embeddings, labels, *, valid=None, alpha: float = 1.0, axis_name=None, block_size=None):
  """Global orthogonal regularization (GOR) over the negative pairs of L2-normalized embeddings.

      M1 = mean_{neg (i,j)} p_i . p_j,   M2 = mean_{neg (i,j)} (p_i . p_j)^2,
      L_gor = alpha * (M1^2 + max(0, M2 - 1/d))

  It pushes non-matching descriptors to be spread like uniform points on the sphere (mean 0, second moment 1/d).
  Ordered pairs are averaged (each unordered pair counts twice, which leaves the means unchanged).

  Args:
    embeddings: `[B, d]` (normalized inside).
    labels: integer `[B]`.
    valid: optional boolean `[B]`.
    alpha: weight (the paper's alpha, default 1).
    axis_name: rows sharded over a `shard_map` axis (the means run over the negative pairs of the global batch);
      block_size: query rows in blocks.

  Returns:
    Scalar; 0 when there is no negative pair.

  References:
    Zhang, Yu, Kumar, Chang, "Learning spread-out local feature descriptors", ICCV 2017.
  """
  _checks.check_labels(labels, _checks.check_embeddings(embeddings).shape[0], "labels")
  _checks.check_positive(alpha, "alpha", strict=False)
  problem = _shard.from_embeddings(embeddings, labels, valid, matrix_fn=pairwise.cosine_similarity,
                                   axis_name=axis_name, block_size=block_size)

  def block(rows, extras, consts):
    sim = rows.matrix
    return None, (jnp.sum(jnp.where(rows.negative, sim, 0.0)), jnp.sum(jnp.where(rows.negative, jnp.square(sim), 0.0)),
                  jnp.sum(rows.negative).astype(sim.dtype))

  _, sums, _ = problem.map(block)
  sim_sum, sq_sum, count = problem.sum_blocks(sums)
  m1 = _safe_divide(sim_sum, count)
  m2 = _safe_divide(sq_sum, count)
  dim = embeddings.shape[1]
  value = jnp.square(m1) + jnp.maximum(m2 - 1.0 / dim, 0.0)
  return alpha * jnp.where(count > 0, value, 0.0) + problem.alarm


def embedding_l2(embeddings, valid=None, *, axis_name=None):
  """Mean squared L2 norm of the valid embeddings, `1/B sum_i |f_i|^2` (N-pair's embedding regularizer, S3).

  Args:
    embeddings: `[B, D]`. valid: optional boolean `[B]`.
    axis_name: rows sharded over a `shard_map` axis (the mean runs over the valid rows of every device).

  Returns:
    Scalar; 0 when no row is valid.

  References:
    Sohn, "Improved deep metric learning with multi-class N-pair loss objective", NIPS 2016.
  """
  _shard.check_axis_name(axis_name)
  embeddings = _checks.check_embeddings(embeddings, "embeddings")
  valid = _checks.check_valid(valid, embeddings.shape[0], "valid")
  embeddings, alarm = _finite.sanitize(embeddings, valid[:, None])
  sq = jnp.where(valid, jnp.sum(jnp.square(embeddings), axis=1), 0.0)
  total, count, alarm = _shard.psum((jnp.sum(sq), jnp.sum(valid).astype(sq.dtype), alarm), axis_name)
  return _safe_divide(total, count) + alarm


def entropy(embeddings, labels, *, valid=None, temperature: float = 1.0, axis_name=None, block_size=None):
  """Entropy regularizer: minus the mean entropy of each anchor's softmax over its negatives' cosine similarities.

      H_i = -sum_{n in N(i)} q_in log q_in,  q_in = softmax_n(S_in / temperature),   L = -mean_i H_i

  Minimizing it maximizes the entropy of each anchor's similarity distribution over negatives, i.e. spreads the
  negatives evenly (no few dominating confusers). This is our formulation of the "entropy regularizer" baseline that S2
  compares against; the comparison paper gives no closed form we could follow exactly.

  Args:
    embeddings: `[B, D]`; labels: integer `[B]`; valid: optional boolean `[B]`.
    temperature: softmax temperature (default 1).
    axis_name: rows sharded over a `shard_map` axis (anchors of every device, negatives from the global batch);
      block_size: anchors in blocks.

  Returns:
    Scalar; 0 when no anchor has a negative.
  """
  _checks.check_labels(labels, _checks.check_embeddings(embeddings).shape[0], "labels")
  _checks.check_positive(temperature, "temperature")
  problem = _shard.from_embeddings(embeddings, labels, valid, matrix_fn=pairwise.cosine_similarity,
                                   axis_name=axis_name, block_size=block_size)

  def block(rows, extras, consts):
    sim, neg = rows.matrix / temperature, rows.negative
    has = jnp.any(neg, axis=1)
    peak = jax.lax.stop_gradient(jnp.max(jnp.where(neg, sim, -jnp.inf), axis=1, keepdims=True))
    shifted = jnp.where(neg, sim - jnp.where(has[:, None], peak, 0.0), 0.0)
    e = jnp.where(neg, jnp.exp(shifted), 0.0)
    total = jnp.sum(e, axis=1, keepdims=True)
    logp = jnp.where(neg, shifted - jnp.log(jnp.where(has[:, None], total, 1.0)), 0.0)
    ent = -jnp.sum(jnp.where(neg, jnp.exp(logp) * logp, 0.0), axis=1)
    return None, (jnp.sum(jnp.where(has, ent, 0.0)), jnp.sum(has).astype(sim.dtype))

  _, sums, _ = problem.map(block)
  total, count = problem.sum_blocks(sums)
  return -_safe_divide(total, count) + problem.alarm


__all__ = ["class_densities", "density_adaptivity", "global_orthogonal", "embedding_l2", "entropy"]

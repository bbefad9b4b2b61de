"""Normalized softmax classifiers with and without angular margins: NormalizedSoftmax (Zhai & Wu 2019), CosFace
(Wang et al. 2018), ArcFace (Deng et al. 2019) and Sub-center ArcFace (Deng et al. 2020).

Each class c has a learnable weight vector `w_c`; `params = {"weights": [C, D]}` (`[C * K, D]` with K sub-centres;
pytorch-metric-learning stores the transpose `[D, C]`). With `cos θ_ic` the cosine between embedding i and `w_c` (both
L2-normalized), every loss is the softmax cross-entropy of one row of logits against the row's class y:

  L = 1/|B| Σ_i −log[ exp(z_{i,y_i}) / Σ_c exp(z_ic) ],

  NormalizedSoftmax: z_ic = cos θ_ic / T;
  CosFace:           z_ic = s·(cos θ_ic − m·[c = y_i]);
  ArcFace:           z_ic = s·cos θ_ic for c ≠ y_i and z_{i,y_i} = s·ψ(θ_{i,y_i}), ψ(θ) = cos(θ + m) while
                     θ + m ≤ π, else cos θ − m·sin m (the authors' code and pytorch-metric-learning's extension that
                     keeps the target logit decreasing in θ past π − m);
  Sub-center ArcFace: ArcFace on cos θ_ic = max_k cos(x_i, w_{c,k}) over the class's K sub-centres.

ψ is computed without `arccos`: cos(θ + m) = cos θ·cos m − sin θ·sin m with sin θ = √(1 − cos²θ), whose gradient is
kept finite at |cos θ| = 1 (where the exact derivative is unbounded). These losses have one target class per sample, so
they take integer class ids only (multi-hot labels are an error).
"""

from __future__ import annotations

import math

import jax.numpy as jnp

from metric_jax import _checks, pairwise
from metric_jax.losses import _classes
from metric_jax.losses._registry import register

_ONE_TARGET = "its softmax cross-entropy has one target class per sample."


def _check_margin(margin, name="margin"):
  if isinstance(margin, (int, float)) and not 0.0 <= margin < math.pi:
    raise ValueError(f"`{name}` must be an angle in [0, π) radians, got {margin}.")
  return margin


def _check_count(value, name):
  if not isinstance(value, int) or isinstance(value, bool) or value < 1:
    raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
  return value


def _matrix_problem(matrix, labels, query_valid, loss, axis_name, block_size, columns_per_class=1):
  return _classes.from_class_matrix(matrix, labels, query_valid, loss=loss, num_columns_per_class=columns_per_class,
                                    multi_hot_reason=_ONE_TARGET, axis_name=axis_name, block_size=block_size)


def arcface_target_cosine(cosine, margin: float):
  """ψ: `cos(θ + m)` where `θ + m ≤ π`, else `cos θ − m·sin m`, from `cos θ` (clipped to [−1, 1])."""
  cosine = jnp.clip(cosine, -1.0, 1.0)
  sine = pairwise.safe_sqrt(jnp.maximum((1.0 - cosine) * (1.0 + cosine), 0.0))
  shifted = cosine * math.cos(margin) - sine * math.sin(margin)
  return jnp.where(cosine >= -math.cos(margin), shifted, cosine - margin * math.sin(margin))


def normalized_softmax_loss(matrix, labels, *, query_valid=None, temperature: float = 0.05, axis_name=None,
                            block_size=None):
  """Normalized softmax loss on `[B, C]` cosine similarities of embeddings to class weights: `CE(cos θ / T, y)`.

  Args:
    matrix: cosine similarities `cos θ`, `[B, C]`.
    labels: integer class ids `[B]` in `0 ... C − 1`.
    query_valid: optional boolean `[B]`; False rows are padding.
    temperature: `T` (paper: 0.05).
    axis_name, block_size: rows sharded over a `shard_map` axis (this device's rows; the mean runs over every
      device's valid rows) / evaluated in blocks; see `metric_jax.losses._classes`.

  Returns:
    Scalar loss, the mean over valid rows (0 without valid rows).

  References:
    Zhai, Wu, "Classification is a Strong Baseline for Deep Metric Learning", BMVC 2019.
  """
  _checks.check_positive(temperature, "temperature")
  problem = _matrix_problem(matrix, labels, query_valid, "normalized_softmax", axis_name, block_size)
  return _normalized_softmax(problem, temperature)


def _normalized_softmax(problem, temperature):
  return problem.mean_over_rows(lambda rows, consts: _classes.softmax_cross_entropy(rows.matrix / temperature,
                                                                                    rows.target))


def cosface_loss(matrix, labels, *, query_valid=None, margin: float = 0.35, scale: float = 64.0, axis_name=None,
                 block_size=None):
  """CosFace (large margin cosine) loss on `[B, C]` cosine similarities: `CE(s·(cos θ − m·onehot(y)), y)`.

  Args:
    matrix: cosine similarities `cos θ`, `[B, C]`.
    labels: integer class ids `[B]` in `0 ... C − 1`.
    query_valid: optional boolean `[B]`; False rows are padding.
    margin: `m`, subtracted from the target cosine (paper: 0.35).
    scale: `s` (paper: 64).
    axis_name, block_size: rows sharded over a `shard_map` axis (this device's rows; the mean runs over every
      device's valid rows) / evaluated in blocks; see `metric_jax.losses._classes`.

  Returns:
    Scalar loss, the mean over valid rows.

  References:
    Wang, Wang, Zhou, Ji, Gong, Zhou, Li, Liu, "CosFace: Large Margin Cosine Loss for Deep Face Recognition",
    CVPR 2018.
  """
  _check_cosface(margin, scale)
  problem = _matrix_problem(matrix, labels, query_valid, "cosface", axis_name, block_size)
  return _cosface(problem, margin, scale)


def _check_cosface(margin, scale):
  _checks.check_positive(scale, "scale")
  _checks.check_positive(margin, "margin", strict=False)


def _cosface(problem, margin, scale):
  return problem.mean_over_rows(lambda rows, consts: _classes.softmax_cross_entropy(
      scale * (rows.matrix - margin * rows.target), rows.target))


def _arcface_rows(cosine, target, margin, scale):
  # ψ only for the B target cosines (not the whole [B, C] matrix); a row without a target (padding, or a label out of
  # range) gets a harmless placeholder and is masked by the caller.
  target_cosine = jnp.sum(jnp.where(target, cosine, 0.0), axis=1)
  target_logit = scale * arcface_target_cosine(target_cosine, margin)
  logits = jnp.where(target, target_logit[:, None], scale * cosine)
  return _classes.softmax_cross_entropy(logits, target)


def arcface_loss(matrix, labels, *, query_valid=None, margin: float = 0.5, scale: float = 64.0, axis_name=None,
                 block_size=None):
  """ArcFace (additive angular margin) loss on `[B, C]` cosine similarities: the target logit is `s·ψ(θ_y)`.

  Args:
    matrix: cosine similarities `cos θ`, `[B, C]`.
    labels: integer class ids `[B]` in `0 ... C − 1`.
    query_valid: optional boolean `[B]`; False rows are padding.
    margin: `m` in radians, added to the target angle (paper: 0.5; pytorch-metric-learning takes degrees, 28.6).
    scale: `s` (paper: 64).
    axis_name, block_size: rows sharded over a `shard_map` axis (this device's rows; the mean runs over every
      device's valid rows) / evaluated in blocks; see `metric_jax.losses._classes`.

  Returns:
    Scalar loss, the mean over valid rows.

  References:
    Deng, Guo, Xue, Zafeiriou, "ArcFace: Additive Angular Margin Loss for Deep Face Recognition", CVPR 2019.
  """
  _check_arcface(margin, scale)
  problem = _matrix_problem(matrix, labels, query_valid, "arcface", axis_name, block_size)
  return _arcface(problem, margin, scale)


def _check_arcface(margin, scale):
  _checks.check_positive(scale, "scale")
  _check_margin(margin)


def _arcface(problem, margin, scale):
  return problem.mean_over_rows(lambda rows, consts: _arcface_rows(rows.matrix, rows.target, margin, scale))


def subcenter_arcface_loss(matrix, labels, *, query_valid=None, sub_centers: int = 3, margin: float = 0.5,
                           scale: float = 64.0, axis_name=None, block_size=None):
  """Sub-center ArcFace loss on `[B, C * K]` cosine similarities to K sub-centres per class.

  `cos θ_ic = max_k cos(x_i, w_{c,k})` (class c's sub-centres are columns `c * K ... c * K + K − 1`), then ArcFace.

  Args:
    matrix: cosine similarities to the sub-centres, `[B, C * K]`.
    labels: integer class ids `[B]` in `0 ... C − 1`.
    query_valid: optional boolean `[B]`; False rows are padding.
    sub_centers: `K` (paper: 3).
    margin: `m` in radians (paper: 0.5).
    scale: `s` (paper: 64).
    axis_name, block_size: rows sharded over a `shard_map` axis (this device's rows; the mean runs over every
      device's valid rows) / evaluated in blocks; see `metric_jax.losses._classes`.

  Returns:
    Scalar loss, the mean over valid rows. (The paper's second stage, dropping samples far from their class's dominant
    sub-centre, is a data-cleaning step outside the loss.)

  References:
    Deng, Guo, Liu, Yang, Kotsia, Zafeiriou, "Sub-center ArcFace: Boosting Face Recognition by Large-Scale Noisy
    Web Faces", ECCV 2020.
  """
  _check_subcenter(sub_centers, margin, scale)
  problem = _matrix_problem(matrix, labels, query_valid, "subcenter_arcface", axis_name, block_size, sub_centers)
  return _subcenter_arcface(problem, sub_centers, margin, scale, layout="class")


def _check_subcenter(sub_centers, margin, scale):
  _check_count(sub_centers, "sub_centers")
  _check_arcface(margin, scale)


def _subcenter_arcface(problem, sub_centers, margin, scale, layout):
  def per_row(rows, consts):
    cosine = jnp.max(_classes.per_center(rows.matrix, sub_centers, layout), axis=1)
    return _arcface_rows(cosine, rows.target, margin, scale)

  return problem.mean_over_rows(per_row)


def _init_weights(key, *, num_classes, embedding_dim, dtype, rows_per_class=1):
  """Standard normal class weights (pytorch-metric-learning's default; only their directions are used)."""
  return {"weights": _classes.normal_init(key, (num_classes * rows_per_class, embedding_dim), dtype, 1.0)}


def _init_one_per_class(key, *, num_classes, embedding_dim, dtype, **_):
  return _init_weights(key, num_classes=num_classes, embedding_dim=embedding_dim, dtype=dtype)


def _init_sub_centers(key, *, num_classes, embedding_dim, dtype, sub_centers, **_):
  _check_count(sub_centers, "sub_centers")
  return _init_weights(key, num_classes=num_classes, embedding_dim=embedding_dim, dtype=dtype,
                       rows_per_class=sub_centers)


def _class_problem(embeddings, labels, valid, params, loss, axis_name, block_size, memory, rows_per_class=1,
                   rows_per_class_name=""):
  """The registry forms' `ClassProblem` of cosines to the class weights; with several rows per class the columns are
  centre-major."""
  prepare = None if rows_per_class == 1 else (lambda w: _classes.center_major(w, rows_per_class))
  return _classes.from_class_embeddings(
      embeddings, labels, valid, params, "weights", loss, matrix_fn=_classes.cosine_to_classes, prepare=prepare,
      rows_per_class=rows_per_class, rows_per_class_name=rows_per_class_name, multi_hot_reason=_ONE_TARGET,
      axis_name=axis_name, block_size=block_size, memory=memory)


@register("normalized_softmax", init=_init_one_per_class, multi_hot=False)
def normalized_softmax(embeddings, labels, *, params=None, valid=None, temperature: float = 0.05, axis_name=None,
                       block_size=None, memory=None):
  """NormalizedSoftmax loss of `[B, D]` embeddings with class ids `[B]` and `params = {"weights": [C, D]}`.

  Scale: `axis_name` (local rows inside `shard_map`, parameters replicated; global-batch loss), `block_size` (rows in
  blocks); `memory` is refused (the keys are the class weights). See `metric_jax.losses._classes`.
  """
  _checks.check_positive(temperature, "temperature")
  problem = _class_problem(embeddings, labels, valid, params, "normalized_softmax", axis_name, block_size, memory)
  return _normalized_softmax(problem, temperature)


@register("cosface", init=_init_one_per_class, multi_hot=False)
def cosface(embeddings, labels, *, params=None, valid=None, margin: float = 0.35, scale: float = 64.0, axis_name=None,
            block_size=None, memory=None):
  """CosFace loss of `[B, D]` embeddings with class ids `[B]` and `params = {"weights": [C, D]}`; scale arguments as in
  `normalized_softmax`."""
  _check_cosface(margin, scale)
  problem = _class_problem(embeddings, labels, valid, params, "cosface", axis_name, block_size, memory)
  return _cosface(problem, margin, scale)


@register("arcface", init=_init_one_per_class, multi_hot=False)
def arcface(embeddings, labels, *, params=None, valid=None, margin: float = 0.5, scale: float = 64.0, axis_name=None,
            block_size=None, memory=None):
  """ArcFace loss of `[B, D]` embeddings with class ids `[B]` and `params = {"weights": [C, D]}`; scale arguments as in
  `normalized_softmax`."""
  _check_arcface(margin, scale)
  problem = _class_problem(embeddings, labels, valid, params, "arcface", axis_name, block_size, memory)
  return _arcface(problem, margin, scale)


@register("subcenter_arcface", init=_init_sub_centers, multi_hot=False)
def subcenter_arcface(embeddings, labels, *, params=None, valid=None, sub_centers: int = 3, margin: float = 0.5,
                      scale: float = 64.0, axis_name=None, block_size=None, memory=None):
  """Sub-center ArcFace loss of `[B, D]` embeddings with class ids `[B]` and `params = {"weights": [C * K, D]}`; scale arguments as in
  `normalized_softmax`."""
  _check_subcenter(sub_centers, margin, scale)
  problem = _class_problem(embeddings, labels, valid, params, "subcenter_arcface", axis_name, block_size, memory,
                           rows_per_class=sub_centers, rows_per_class_name="sub_centers")
  return _subcenter_arcface(problem, sub_centers, margin, scale, layout="center")


__all__ = ["normalized_softmax_loss", "cosface_loss", "arcface_loss", "subcenter_arcface_loss",
           "arcface_target_cosine", "normalized_softmax", "cosface", "arcface", "subcenter_arcface"]

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


def _targets(matrix, labels, query_valid, loss, columns_per_class=1):
  matrix, labels, valid, num_classes, alarm = _classes.check_class_matrix(matrix, labels, query_valid,
                                                                          num_columns_per_class=columns_per_class)
  target, in_range = _classes.class_targets(labels, valid, num_classes, loss=loss, multi_hot_reason=_ONE_TARGET)
  return matrix, target, valid, in_range, alarm


def arcface_target_cosine(cosine, margin: float):
  """ψ: `cos(θ + m)` where `θ + m ≤ π`, else `cos θ − m·sin m`, from `cos θ` (clipped to [−1, 1])."""
  cosine = jnp.clip(cosine, -1.0, 1.0)
  sine = pairwise.safe_sqrt(jnp.maximum((1.0 - cosine) * (1.0 + cosine), 0.0))
  shifted = cosine * math.cos(margin) - sine * math.sin(margin)
  return jnp.where(cosine >= -math.cos(margin), shifted, cosine - margin * math.sin(margin))


def normalized_softmax_loss(matrix, labels, *, query_valid=None, temperature: float = 0.05):
  """Normalized softmax loss on `[B, C]` cosine similarities of embeddings to class weights: `CE(cos θ / T, y)`.

  Args:
    matrix: cosine similarities `cos θ`, `[B, C]`.
    labels: integer class ids `[B]` in `0 ... C − 1`.
    query_valid: optional boolean `[B]`; False rows are padding.
    temperature: `T` (paper: 0.05).

  Returns:
    Scalar loss, the mean over valid rows (0 without valid rows).

  References:
    Zhai, Wu, "Classification is a Strong Baseline for Deep Metric Learning", BMVC 2019.
  """
  _checks.check_positive(temperature, "temperature")
  matrix, target, valid, in_range, alarm = _targets(matrix, labels, query_valid, "normalized_softmax")
  per_row = _classes.softmax_cross_entropy(matrix / temperature, target)
  return _classes.mean_over_rows(per_row, valid, in_range) + alarm


def cosface_loss(matrix, labels, *, query_valid=None, margin: float = 0.35, scale: float = 64.0):
  """CosFace (large margin cosine) loss on `[B, C]` cosine similarities: `CE(s·(cos θ − m·onehot(y)), y)`.

  Args:
    matrix: cosine similarities `cos θ`, `[B, C]`.
    labels: integer class ids `[B]` in `0 ... C − 1`.
    query_valid: optional boolean `[B]`; False rows are padding.
    margin: `m`, subtracted from the target cosine (paper: 0.35).
    scale: `s` (paper: 64).

  Returns:
    Scalar loss, the mean over valid rows.

  References:
    Wang, Wang, Zhou, Ji, Gong, Zhou, Li, Liu, "CosFace: Large Margin Cosine Loss for Deep Face Recognition",
    CVPR 2018.
  """
  _checks.check_positive(scale, "scale")
  _checks.check_positive(margin, "margin", strict=False)
  matrix, target, valid, in_range, alarm = _targets(matrix, labels, query_valid, "cosface")
  per_row = _classes.softmax_cross_entropy(scale * (matrix - margin * target), target)
  return _classes.mean_over_rows(per_row, valid, in_range) + alarm


def _arcface_rows(cosine, target, margin, scale):
  # ψ only for the B target cosines (not the whole [B, C] matrix); a row without a target (padding, or a label out of
  # range) gets a harmless placeholder and is masked by the caller.
  target_cosine = jnp.sum(jnp.where(target, cosine, 0.0), axis=1)
  target_logit = scale * arcface_target_cosine(target_cosine, margin)
  logits = jnp.where(target, target_logit[:, None], scale * cosine)
  return _classes.softmax_cross_entropy(logits, target)


def arcface_loss(matrix, labels, *, query_valid=None, margin: float = 0.5, scale: float = 64.0):
  """ArcFace (additive angular margin) loss on `[B, C]` cosine similarities: the target logit is `s·ψ(θ_y)`.

  Args:
    matrix: cosine similarities `cos θ`, `[B, C]`.
    labels: integer class ids `[B]` in `0 ... C − 1`.
    query_valid: optional boolean `[B]`; False rows are padding.
    margin: `m` in radians, added to the target angle (paper: 0.5; pytorch-metric-learning takes degrees, 28.6).
    scale: `s` (paper: 64).

  Returns:
    Scalar loss, the mean over valid rows.

  References:
    Deng, Guo, Xue, Zafeiriou, "ArcFace: Additive Angular Margin Loss for Deep Face Recognition", CVPR 2019.
  """
  _checks.check_positive(scale, "scale")
  _check_margin(margin)
  matrix, target, valid, in_range, alarm = _targets(matrix, labels, query_valid, "arcface")
  return _classes.mean_over_rows(_arcface_rows(matrix, target, margin, scale), valid, in_range) + alarm


def subcenter_arcface_loss(matrix, labels, *, query_valid=None, sub_centers: int = 3, margin: float = 0.5,
                           scale: float = 64.0):
  """Sub-center ArcFace loss on `[B, C * K]` cosine similarities to K sub-centres per class.

  `cos θ_ic = max_k cos(x_i, w_{c,k})` (class c's sub-centres are columns `c * K ... c * K + K − 1`), then ArcFace.

  Args:
    matrix: cosine similarities to the sub-centres, `[B, C * K]`.
    labels: integer class ids `[B]` in `0 ... C − 1`.
    query_valid: optional boolean `[B]`; False rows are padding.
    sub_centers: `K` (paper: 3).
    margin: `m` in radians (paper: 0.5).
    scale: `s` (paper: 64).

  Returns:
    Scalar loss, the mean over valid rows. (The paper's second stage, dropping samples far from their class's dominant
    sub-centre, is a data-cleaning step outside the loss.)

  References:
    Deng, Guo, Liu, Yang, Kotsia, Zafeiriou, "Sub-center ArcFace: Boosting Face Recognition by Large-Scale Noisy
    Web Faces", ECCV 2020.
  """
  return _subcenter_arcface_loss(matrix, labels, query_valid, sub_centers, margin, scale, layout="class")


def _subcenter_arcface_loss(matrix, labels, query_valid, sub_centers, margin, scale, layout):
  _check_count(sub_centers, "sub_centers")
  _checks.check_positive(scale, "scale")
  _check_margin(margin)
  matrix, target, valid, in_range, alarm = _targets(matrix, labels, query_valid, "subcenter_arcface", sub_centers)
  cosine = jnp.max(_classes.per_center(matrix, sub_centers, layout), axis=1)
  return _classes.mean_over_rows(_arcface_rows(cosine, target, margin, scale), valid, in_range) + alarm


def _init_weights(key, *, num_classes, embedding_dim, dtype, rows_per_class=1):
  """Standard normal class weights (pytorch-metric-learning's default; only their directions are used)."""
  return {"weights": _classes.normal_init(key, (num_classes * rows_per_class, embedding_dim), dtype, 1.0)}


def _init_one_per_class(key, *, num_classes, embedding_dim, dtype, **_):
  return _init_weights(key, num_classes=num_classes, embedding_dim=embedding_dim, dtype=dtype)


def _init_sub_centers(key, *, num_classes, embedding_dim, dtype, sub_centers, **_):
  _check_count(sub_centers, "sub_centers")
  return _init_weights(key, num_classes=num_classes, embedding_dim=embedding_dim, dtype=dtype,
                       rows_per_class=sub_centers)


def _class_cosine(embeddings, labels, valid, params, loss, rows_per_class=1, rows_per_class_name=""):
  """`(cosines [B, R], labels, valid, alarm)`; with several rows per class the columns are centre-major."""
  embeddings, labels_, valid, weights, alarm = _classes.embedding_inputs(
      embeddings, labels, valid, params, "weights", loss, rows_per_class=rows_per_class,
      rows_per_class_name=rows_per_class_name)
  if rows_per_class > 1:
    weights = _classes.center_major(weights, rows_per_class)
  return _classes.cosine_to_classes(embeddings, weights), labels_, valid, alarm


@register("normalized_softmax", init=_init_one_per_class, multi_hot=False)
def normalized_softmax(embeddings, labels, *, params=None, valid=None, temperature: float = 0.05):
  """NormalizedSoftmax loss of `[B, D]` embeddings with class ids `[B]` and `params = {"weights": [C, D]}`."""
  matrix, labels_, valid, alarm = _class_cosine(embeddings, labels, valid, params, "normalized_softmax")
  return normalized_softmax_loss(matrix, labels_, query_valid=valid, temperature=temperature) + alarm


@register("cosface", init=_init_one_per_class, multi_hot=False)
def cosface(embeddings, labels, *, params=None, valid=None, margin: float = 0.35, scale: float = 64.0):
  """CosFace loss of `[B, D]` embeddings with class ids `[B]` and `params = {"weights": [C, D]}`."""
  matrix, labels_, valid, alarm = _class_cosine(embeddings, labels, valid, params, "cosface")
  return cosface_loss(matrix, labels_, query_valid=valid, margin=margin, scale=scale) + alarm


@register("arcface", init=_init_one_per_class, multi_hot=False)
def arcface(embeddings, labels, *, params=None, valid=None, margin: float = 0.5, scale: float = 64.0):
  """ArcFace loss of `[B, D]` embeddings with class ids `[B]` and `params = {"weights": [C, D]}`."""
  matrix, labels_, valid, alarm = _class_cosine(embeddings, labels, valid, params, "arcface")
  return arcface_loss(matrix, labels_, query_valid=valid, margin=margin, scale=scale) + alarm


@register("subcenter_arcface", init=_init_sub_centers, multi_hot=False)
def subcenter_arcface(embeddings, labels, *, params=None, valid=None, sub_centers: int = 3, margin: float = 0.5,
                      scale: float = 64.0):
  """Sub-center ArcFace loss of `[B, D]` embeddings with class ids `[B]` and `params = {"weights": [C * K, D]}`."""
  _check_count(sub_centers, "sub_centers")
  matrix, labels_, valid, alarm = _class_cosine(embeddings, labels, valid, params, "subcenter_arcface",
                                                rows_per_class=sub_centers, rows_per_class_name="sub_centers")
  return _subcenter_arcface_loss(matrix, labels_, valid, sub_centers, margin, scale, layout="center") + alarm


__all__ = ["normalized_softmax_loss", "cosface_loss", "arcface_loss", "subcenter_arcface_loss",
           "arcface_target_cosine", "normalized_softmax", "cosface", "arcface", "subcenter_arcface"]

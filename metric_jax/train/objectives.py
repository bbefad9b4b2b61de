"""Training objectives: what the SPMD step minimises over the global batch.

An objective is `objective(model, outputs, labels, valid, loss_params, loss_consts, *, axis_name=None, memory=None) ->
(loss scalar, metrics dict)`, where `outputs` is the model's dict of per-example arrays, `labels`, `valid` (False rows are
padding), `loss_params` the learnable loss parameters (a dict, trained with the model) and `loss_consts` fixed loss
constants (a dict, e.g. S2's D0). The model is passed so that objectives can apply layers of their own (S0's classifiers
W1, W2).

With `axis_name` (the `Trainer`'s step, inside `shard_map`), `outputs`, `labels` and `valid` are this device's LOCAL rows
`[b, ...]` and the objective returns the loss of the GLOBAL batch (the losses and regularizers gather what they need and
combine their statistics over the axis, `metric_jax.losses._shard`); without it, they are the whole batch. `memory`:
the cross-batch memory `(embeddings [K, D], labels [K], valid [K])`, passed to the base loss as extra keys; an objective
says whether it can use one with its attribute `takes_memory` (the `Trainer` refuses `memory_size` > 0 otherwise).

Metric objectives (`metric_objective`): any registry loss on `outputs["embedding"]` plus optional regularizers:

  L = loss(E, y) + w_DA * L_DA(E, y; alpha, D0, eta) + w_GOR * L_GOR(E, y) + w_L2 * L_L2(E) + w_H * L_H(E, y)

S0 pair objectives (`pair_objective`), on the pair batch `concat(first [P], second [P])` with pair label Y_i = +1 when the
two images of pair i share a class, -1 otherwise, and D_i^2 = |f_i - f'_i|^2 the squared distance of their layer-k
features:

  PLoss_i  = max(0, b - Y_i (m - D_i^2))                   (0 < b < m; contrastive is b = m, margin 2m on D^2)
  CLoss_i  = softmax cross-entropy of W1 f(x_i), CLoss'_i of W2 f(x'_i)
  siamese   = mean_i PLoss_i with b = m        (contrastive only)
  pairloss  = mean_i PLoss_i                   (PLoss only)
  pair_soft = pairnet = mean_i [CLoss_i + CLoss'_i + lambda PLoss_i]   (pair-soft differs only in the test-time classifier:
                                                                        kNN/SVM on features instead of the softmax)
  singlenet = mean over all 2P images of the softmax cross-entropy with W1 (softmax only)

References:
  R. Hadsell, S. Chopra, Y. LeCun. Dimensionality reduction by learning an invariant mapping. CVPR 2006.
  (S0) PairNet: classification + local distribution constraint. (S2) DML-DA density adaptivity, eta = 0.5, lambda = 10.
  (S1) GOR: X. Zhang et al. Learning spread-out local feature descriptors. ICCV 2017.
"""

from __future__ import annotations

import inspect
from typing import Callable, Dict, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np
import optax

from metric_jax import _checks
from metric_jax.losses import _shard

PAIR_KINDS = ("siamese", "pairloss", "pair_soft", "pairnet", "singlenet")


def takes_keyword(fn: Callable, name: str) -> bool:
  """Whether `fn` takes the keyword argument `name` (or any keyword)."""
  try:
    parameters = inspect.signature(fn).parameters.values()
  except (TypeError, ValueError):
    return False
  return any(p.name == name or p.kind is p.VAR_KEYWORD for p in parameters)


def metric_objective(loss: Union[str, Callable] = "multi_similarity", *, loss_hparams: Optional[dict] = None,
                     density_adaptivity_weight: float = 0.0, density_adaptivity_eta: float = 0.5,
                     global_orthogonal_weight: float = 0.0, embedding_l2_weight: float = 0.0,
                     entropy_weight: float = 0.0) -> Callable:
  """A registry loss (name, or any `fn(embeddings, labels, *, valid, **hparams)`) plus weighted regularizers.

  With `density_adaptivity_weight > 0` the objective reads `loss_params["alpha"] [C]` (learnable; see
  `init_loss_params`) and `loss_consts["d0"] [C]` (see `class_densities`); labels must then be the training class indices
  0..C-1. A loss with learnable parameters of its own (proxies, class weights; `metric_jax.losses.init_params`) reads
  them from `loss_params["base"]`, passed as `params=`.

  A registry loss (and any `loss` that takes `axis_name`) is called on the local rows with `axis_name`; a plain
  `fn(embeddings, labels, *, valid)` is called on the batch gathered over the axis (every device computes it whole).
  """
  hparams = dict(loss_hparams or {})
  for name, w in (("density_adaptivity_weight", density_adaptivity_weight),
                  ("global_orthogonal_weight", global_orthogonal_weight), ("embedding_l2_weight", embedding_l2_weight),
                  ("entropy_weight", entropy_weight)):
    _checks.check_positive(w, name, strict=False)
  from metric_jax import losses as _losses
  loss_fn = _losses.get(loss) if isinstance(loss, str) else loss

  loss_takes_axis = takes_keyword(loss_fn, "axis_name")
  # A registry loss with class parameters takes `memory=` only to refuse it (its keys are the class parameters).
  loss_takes_memory = takes_keyword(loss_fn, "memory") and not (isinstance(loss, str) and _losses.has_params(loss))

  def objective(model, outputs, labels, valid, loss_params, loss_consts, *, axis_name=None, memory=None):
    del model
    emb = outputs["embedding"]
    extra = {"params": loss_params["base"]} if "base" in loss_params else {}
    if memory is not None:
      if not loss_takes_memory:
        raise ValueError("cross-batch memory needs a loss that takes `memory=`; this loss does not.")
      extra["memory"] = memory
    if axis_name is None or loss_takes_axis:
      scale = {} if axis_name is None else {"axis_name": axis_name}
      base = loss_fn(emb, labels, valid=valid, **scale, **extra, **hparams)
    else:   # a plain loss: the whole gathered batch on every device
      g_emb, g_labels, g_valid = (_shard.gather(x, axis_name) for x in (emb, labels, valid))
      base = loss_fn(g_emb, g_labels, valid=g_valid, **extra, **hparams)
    metrics = {"base_loss": base}
    total = base
    if density_adaptivity_weight or global_orthogonal_weight or embedding_l2_weight or entropy_weight:
      from metric_jax import regularizers
    if density_adaptivity_weight:
      reg = regularizers.density_adaptivity(emb, labels, loss_params["alpha"], loss_consts["d0"],
                                            eta=density_adaptivity_eta, valid=valid, axis_name=axis_name)
      metrics["density_adaptivity"] = reg
      total = total + density_adaptivity_weight * reg
    if global_orthogonal_weight:
      reg = regularizers.global_orthogonal(emb, labels, valid=valid, axis_name=axis_name)
      metrics["global_orthogonal"] = reg
      total = total + global_orthogonal_weight * reg
    if embedding_l2_weight:
      reg = regularizers.embedding_l2(emb, valid=valid, axis_name=axis_name)
      metrics["embedding_l2"] = reg
      total = total + embedding_l2_weight * reg
    if entropy_weight:
      reg = regularizers.entropy(emb, labels, valid=valid, axis_name=axis_name)
      metrics["entropy"] = reg
      total = total + entropy_weight * reg
    return total, metrics

  objective.takes_memory = loss_takes_memory
  return objective


def pair_objective(kind: str = "pairnet", *, margin: float = 1.0, b: float = 0.5, lam: float = 1.0) -> Callable:
  """An S0 objective (`siamese`, `pairloss`, `pair_soft`, `pairnet`, `singlenet`) for a `TwoChannelNet`.

  Args:
    margin: m; b: the band half-width b, 0 < b <= m (siamese forces b = m); lam: lambda, the PLoss weight in pairnet.
  """
  _checks.check_choice(kind, "kind", PAIR_KINDS)
  _checks.check_positive(margin, "margin")
  _checks.check_positive(lam, "lam", strict=False)
  if kind == "siamese":
    b = margin
  if not 0 <= b <= margin:
    raise ValueError(f"`b` must lie in [0, margin={margin}], got {b}.")

  def objective(model, outputs, labels, valid, loss_params, loss_consts, *, axis_name=None, memory=None):
    del loss_params, loss_consts
    if memory is not None:
      raise ValueError("the S0 pair objectives do not use a cross-batch memory (`memory_size` must be 0).")
    feats, cls_in = outputs["features"], outputs["classifier_inputs"]
    rows = feats.shape[0]
    size = _shard.axis_size(axis_name) * rows
    if size % 2:
      raise ValueError(f"a pair batch must have an even size (first + second halves), got {size}.")
    p = size // 2
    # Pair i is (row i, row i + P) of the global batch; with `axis_name` the two halves live on different devices, so
    # the partner's features, label and mask are read from the gathered (small) `[G, F]` features. Each pair is
    # counted on the device of its first row; sums and counts are combined over the axis.
    index = _shard.axis_index(axis_name) * rows + jnp.arange(rows)
    first = index < p
    partner = jnp.where(first, index + p, index - p)
    partner_feats = jnp.take(_shard.gather(feats, axis_name), partner, axis=0)
    partner_labels = jnp.take(_shard.gather(labels, axis_name), partner, axis=0)
    pair_valid = valid & jnp.take(_shard.gather(valid, axis_name), partner, axis=0)
    counted = first & pair_valid
    y = jnp.where(labels == partner_labels, 1.0, -1.0)
    d2 = jnp.sum(jnp.square(feats - partner_feats), axis=-1)
    ploss = _global_mean(jnp.maximum(0.0, b - y * (margin - d2)), counted, axis_name)
    if kind == "singlenet":
      ce = optax.softmax_cross_entropy_with_integer_labels(model.logits(cls_in, 0), labels)
      closs = _global_mean(ce, valid, axis_name)
      return closs, {"closs": closs}
    # CLoss_i + CLoss'_i: W1 on the first halves, W2 on the second, averaged over the valid pairs.
    ce1 = optax.softmax_cross_entropy_with_integer_labels(model.logits(cls_in, 0), labels)
    ce2 = optax.softmax_cross_entropy_with_integer_labels(model.logits(cls_in, 1), labels)
    ce = jnp.where(first, ce1, ce2)
    total, count = _shard.psum((jnp.sum(jnp.where(pair_valid, ce, 0.0)),
                                jnp.sum(counted).astype(ce.dtype)), axis_name)
    closs = total / jnp.maximum(count, 1.0)
    if kind in ("siamese", "pairloss"):
      return ploss, {"ploss": ploss, "closs": closs}
    return closs + lam * ploss, {"ploss": ploss, "closs": closs}

  objective.takes_memory = False   # S0 pairs have no keys to extend
  return objective


def _global_mean(values, mask, axis_name):
  """`Σ_mask values / #mask` over the rows of every device of `axis_name` (0 for an empty mask)."""
  total, count = _shard.psum((jnp.sum(jnp.where(mask, values, 0.0)), jnp.sum(mask).astype(values.dtype)), axis_name)
  return total / jnp.maximum(count, 1.0)


def init_loss_params(num_classes: int, *, density_adaptivity: bool, alpha_init: float = 0.5) -> Dict[str, jax.Array]:
  """Learnable loss parameters: S2's per-class target densities `alpha [C]` (init 0.5) when `density_adaptivity`."""
  if density_adaptivity:
    if num_classes < 1:
      raise ValueError(f"`num_classes` must be positive, got {num_classes}.")
    return {"alpha": jnp.full((num_classes,), alpha_init, jnp.float32)}
  return {}


def class_densities(features, labels, num_classes: int, *, normalize: bool = True) -> np.ndarray:
  """S2's original class densities D0 `[C]`, measured once on pre-embedding features `[N, F]`.

  `metric_jax.regularizers.class_densities` (mean squared distance to the class centroid) of the features, L2-normalized
  first when `normalize` (so D0 lies on the scale of normalized embeddings). A class without examples gets the mean
  density of the others.
  """
  from metric_jax import regularizers
  x = np.asarray(features, np.float32).reshape(len(features), -1)
  if normalize:
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
  densities, counts = regularizers.class_densities(x, np.asarray(labels, np.int32), num_classes)
  densities, counts = np.array(densities, np.float32), np.asarray(counts)
  if not np.any(counts > 0):
    raise ValueError("`labels` hold no example of any class in 0..num_classes-1.")
  densities[counts == 0] = densities[counts > 0].mean()
  return densities

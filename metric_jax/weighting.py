"""Pair and triplet weights of the general pair-based weighting (GPW) loss, all under `jax.lax.stop_gradient`.

Every weighting is a function of a *violation* `x` (how far a pair or triplet is on the wrong side of its margin):

    positive pair  x = D_ij - m1          negative pair  x = m2 - D_ij          triplet  x = D_ij - D_ik + m

    constant      w = 1
    power         w = [x]_+^p             (GPW's (D - m1)^p, (m2 - D)^q, (D_ij - D_ik + m)^p)
    exponential   w = exp(alpha * x)      (GPW's exp(alpha (D - m1)), exp(beta (m2 - D)), exp(alpha (D_ij - D_ik + m)))

The weights carry no gradient: the GPW loss `sum w * [x]_+` then has gradient `w` with respect to each mined distance
(up to sign), which is the point of the paper. `normalize` divides the weights of the selected items by their sum,
either per anchor (row of the `[B, M]` matrix: how lifted structure, multi-similarity and N-pair normalize) or over
the whole batch, with an optional `offset` added to the denominator (`offset=1` is multi-similarity's and N-pair's "1 +"
inside the log, i.e. a virtual item of violation 0). Exponential weights are normalized in log space and stay finite
for any violation.

References:
  Liu, Cheng, et al., "A general pair-based weighting loss for deep metric learning", arXiv:1905.12837 (Eq. 18, 21).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from metric_jax import _checks

WEIGHTINGS = ("constant", "power", "exponential")
# Unnormalized exponential weights use exp(min(scale * x, MAX_EXPONENT)): finite in float32 (exp(80) ~ 5.5e34, leaving
# room for the sums they enter); the cap only acts where the exact weight would overflow.
MAX_EXPONENT = 80.0
NORMALIZATIONS = ("none", "anchor", "batch")


def constant(violation):
  """`w = 1` (contrastive, triplet)."""
  return jnp.ones_like(violation)


def power(violation, p: float = 1.0):
  """`w = [x]_+^p` under stop-gradient (`0^0 = 1`). `p` is the GPW paper's p (positives/triplets) or q (negatives)."""
  _checks.check_positive(p, "p", strict=False)
  x = jnp.maximum(jax.lax.stop_gradient(violation), 0.0)
  return jax.lax.stop_gradient(jnp.power(x, p))


def exponential(violation, scale: float = 1.0):
  """`w = exp(scale * x)` under stop-gradient. `scale`: the paper's alpha (positives/triplets) or beta (negatives).

  The exponent is capped at `MAX_EXPONENT` so that the weight stays finite (the exact weight would overflow there); use
  `normalized_exponential` for weights that stay exact at any violation.
  """
  _checks.check_positive(scale, "scale")
  z = jnp.minimum(scale * jax.lax.stop_gradient(violation), MAX_EXPONENT)
  return jax.lax.stop_gradient(jnp.exp(z))


def weights(kind: str, violation, *, exponent: float = 1.0, scale: float = 1.0):
  """Weighting by name (`WEIGHTINGS`): `exponent` is p for `power`, `scale` is alpha for `exponential`."""
  _checks.check_choice(kind, "weighting", WEIGHTINGS)
  if kind == "constant":
    return constant(violation)
  if kind == "power":
    return power(violation, exponent)
  return exponential(violation, scale)


def normalize(w, mask, *, over: str = "anchor", offset: float = 0.0):
  """`w / (offset + sum of w over mask)`, per row (`over="anchor"`) or over the whole matrix (`over="batch"`).

  Entries outside `mask` get weight 0; a row (or batch) with nothing selected and `offset = 0` gets 0, not NaN.

  Args:
    w: `[B, M]` non-negative weights.
    mask: `[B, M]` boolean selection.
    over: `"anchor"` or `"batch"`.
    offset: non-negative constant added to the denominator.

  Returns:
    `[B, M]` normalized weights, under stop-gradient.
  """
  _checks.check_choice(over, "over", NORMALIZATIONS[1:])
  _checks.check_positive(offset, "offset", strict=False)
  w = jnp.where(mask, jax.lax.stop_gradient(w), 0.0)
  if over == "anchor":
    total = jnp.sum(w, axis=1, keepdims=True)
  else:
    total = jnp.sum(w)
  denom = offset + total
  return jax.lax.stop_gradient(jnp.where(denom > 0, w / jnp.where(denom > 0, denom, 1.0), 0.0))


def normalized_exponential(violation, mask, *, scale: float = 1.0, over: str = "anchor", offset: float = 0.0):
  """`exp(scale x) / (offset + sum_mask exp(scale x))`, computed in log space (a softmax with an extra `offset` term).

  Args:
    violation: `[B, M]`.
    mask: `[B, M]` boolean selection.
    scale: alpha (or beta).
    over: `"anchor"` or `"batch"`.
    offset: non-negative constant in the denominator (multi-similarity's "1 +").

  Returns:
    `[B, M]` weights under stop-gradient; 0 outside `mask`.
  """
  _checks.check_choice(over, "over", NORMALIZATIONS[1:])
  _checks.check_positive(scale, "scale")
  _checks.check_positive(offset, "offset", strict=False)
  z = jnp.where(mask, scale * jax.lax.stop_gradient(violation), -jnp.inf)
  axis = 1 if over == "anchor" else None
  peak = jnp.max(z, axis=axis, keepdims=True)
  if offset > 0:
    peak = jnp.maximum(peak, 0.0)
  peak = jnp.where(jnp.isfinite(peak), peak, 0.0)
  e = jnp.where(mask, jnp.exp(z - peak), 0.0)
  denom = offset * jnp.exp(-peak) + jnp.sum(e, axis=axis, keepdims=True)
  return jax.lax.stop_gradient(jnp.where(denom > 0, e / jnp.where(denom > 0, denom, 1.0), 0.0))


def normalized_power(violation, mask, *, p: float = 1.0, over: str = "anchor", offset: float = 0.0):
  """`[x]_+^p / (offset + sum_mask [x]_+^(p+1))^(p/(p+1))`: power weights over the (p+1)-norm of the violations.

  This is the normalization of power weights that is a gradient (of `(offset + sum [x]_+^(p+1))^(1/(p+1))`), used by the
  GPW losses; plain `normalize(power(x, p), ...)` is not the gradient of any function.
  """
  _checks.check_choice(over, "over", NORMALIZATIONS[1:])
  _checks.check_positive(p, "p", strict=False)
  _checks.check_positive(offset, "offset", strict=False)
  x = jnp.where(mask, jnp.maximum(jax.lax.stop_gradient(violation), 0.0), 0.0)
  axis = 1 if over == "anchor" else None
  total = offset + jnp.sum(jnp.power(x, p + 1.0), axis=axis, keepdims=True)
  w = jnp.where(mask, jnp.power(x, p), 0.0)
  scale = jnp.where(total > 0, jnp.power(jnp.where(total > 0, total, 1.0), -p / (p + 1.0)), 0.0)
  return jax.lax.stop_gradient(w * scale)


def pair_weights(kind: str, violation, mask, *, exponent: float = 1.0, scale: float = 1.0, normalization="none",
                 offset: float = 0.0):
  """Weights of the selected pairs as the GPW losses use them: `weights(kind, ...)`, then for `normalization` in
  {"anchor", "batch"}: `normalize` (constant), `normalized_exponential`, `normalized_power`.

  Returns `[B, M]` stop-gradient weights, 0 outside `mask`.
  """
  _checks.check_choice(normalization, "normalize", NORMALIZATIONS)
  if kind == "exponential" and normalization != "none":
    return normalized_exponential(violation, mask, scale=scale, over=normalization, offset=offset)
  if kind == "power" and normalization != "none":
    return normalized_power(violation, mask, p=exponent, over=normalization, offset=offset)
  _checks.check_choice(kind, "weighting", WEIGHTINGS)
  w = jnp.where(mask, weights(kind, jnp.where(mask, violation, 0.0), exponent=exponent, scale=scale), 0.0)
  if normalization == "none":
    return jax.lax.stop_gradient(w)
  return normalize(w, mask, over=normalization, offset=offset)


__all__ = [
    "WEIGHTINGS", "NORMALIZATIONS", "constant", "power", "exponential", "weights", "normalize",
    "normalized_exponential", "normalized_power", "pair_weights",
]

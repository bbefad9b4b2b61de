"""Masked log-sum-exp whose value and gradient stay finite for empty masks and huge inputs.

Shared by the softmax-style losses (N-pair, NCA, lifted structure, multi-similarity). Masked entries are replaced by
`-inf` *before* `exp` (the "double where" trick), so they contribute `exp(-inf) = 0` with a zero gradient instead of the
`0 * inf = NaN` that masking after the exponential gives. An empty row returns 0 together with a `False` flag; callers
decide what an empty set means for their loss.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def masked_logsumexp(x, mask, axis: int = -1, *, add_one: bool = False):
  """`log(Σ_{mask} exp(x))` (or `log(1 + Σ_{mask} exp(x))` with `add_one`) along `axis`.

  Args:
    x: float array.
    mask: boolean array broadcastable to `x`; False entries are left out of the sum.
    axis: the reduced axis.
    add_one: include a constant term `exp(0) = 1` (the "+1" of `log(1 + Σ ...)`).

  Returns:
    `(lse, nonempty)`: `lse` has `x`'s shape without `axis`; where the mask is empty it is 0 (and `log 1 = 0` with
    `add_one`, which is also the exact value); `nonempty` says whether any entry was kept.
  """
  mask = jnp.broadcast_to(mask, x.shape)
  masked = jnp.where(mask, x, -jnp.inf)
  shift = jnp.max(masked, axis=axis, keepdims=True)
  if add_one:
    shift = jnp.maximum(shift, 0.0)
  shift = jax.lax.stop_gradient(jnp.where(jnp.isfinite(shift), shift, 0.0))
  total = jnp.sum(jnp.exp(masked - shift), axis=axis)
  shift = jnp.squeeze(shift, axis=axis)
  if add_one:
    total = total + jnp.exp(-shift)
  nonempty = jnp.any(mask, axis=axis)
  safe_total = jnp.where(nonempty | add_one, total, 1.0)
  lse = jnp.log(safe_total) + shift
  return jnp.where(nonempty | add_one, lse, 0.0), nonempty


def safe_mean(values, mask):
  """Mean of `values` over `mask` (0 when the mask is empty), with finite gradients."""
  count = jnp.sum(mask)
  total = jnp.sum(jnp.where(mask, values, 0.0))
  return jnp.where(count > 0, total / jnp.maximum(count, 1), 0.0)

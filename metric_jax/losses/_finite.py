"""Non-finite values never hide; padded rows never leak (DESIGN.md, "The loss contract").

Two failure modes this module removes, for every loss and regularizer:

- *hiding*: a NaN or inf in a valid row reaches the gradient but not the value, because the value passes through a
  hinge, a `where`, a `max` or a count that drops it (`[NaN]_+` may come out as 0, `NaN > 0` is False), so a training
  log shows a finite loss while the parameters are already NaN;
- *leaking*: a NaN / inf / huge value in a padded row (`valid=False`) or in a matrix entry of a pair that is not valid
  is masked in the forward pass but reaches the valid rows' gradients in the backward pass (`0 * NaN = NaN` in the
  transpose of a matmul or of a masked nonlinearity).

`sanitize(x, valid)` returns `x` with its invalid entries replaced by 0 (a `jnp.where`, whose transpose *selects*
instead of multiplying, so the invalid entries get an exact 0 gradient and send nothing on) together with an *alarm*:
a scalar that is exactly 0.0 when every valid entry of `x` is finite and NaN otherwise. Losses add the alarm to their
value: finite inputs change neither value nor gradient (`+ 0.0`, and the alarm has no gradient), and a non-finite valid
entry makes the value NaN whatever the loss does with that entry. The matrix forms sanitize their matrix over the valid
pairs before any nonlinearity; the convenience forms (`embedding_inputs`) sanitize the embeddings over the valid rows
before the matmul, so the padded rows' gradient is exactly 0.

The convenience forms' alarm is `row_alarm`: one sum of the squared entries of the valid rows, which is non-finite
exactly when a valid entry is NaN or inf, or when the squared norms overflow (and only then can a matrix built from
the rows, `|q|^2 + |k|^2 - 2 q.k`, `q.k` or a cosine, hold a non-finite entry). It replaces a pass over the `[B, M]`
matrix by a pass over the `[B, D]` rows. The matrix forms check their matrix entries with `alarm`.
"""

from __future__ import annotations

import jax.numpy as jnp

from metric_jax.losses._registry import check_embedding_inputs


def alarm(x, valid):
  """Scalar of `x`'s dtype: 0.0 when every entry of `x` where `valid` holds is finite, NaN otherwise (no gradient).

  Args:
    x: float array.
    valid: boolean array broadcastable to `x`.
  """
  ok = jnp.all(jnp.isfinite(x) | ~jnp.asarray(valid))
  return jnp.where(ok, jnp.zeros((), x.dtype), jnp.full((), jnp.nan, x.dtype))


def sanitize(x, valid):
  """`(where(valid, x, 0), alarm(x, valid))`: invalid entries set to 0 with a zero gradient, and the alarm scalar.

  Args:
    x: float array (a `[B, M]` pairwise matrix, or `[B, D]` embeddings).
    valid: boolean array broadcastable to `x` (`PairMasks.valid`, or `valid[:, None]` for embeddings).

  Returns:
    `(clean x, alarm)`; add the alarm to the loss value.
  """
  return jnp.where(valid, x, jnp.zeros((), x.dtype)), alarm(x, valid)


def row_alarm(x, valid):
  """Scalar of `x`'s dtype: 0.0 when `sum_{valid rows} |x_i|^2` is finite, NaN otherwise (no gradient).

  Non-finite exactly when a valid row holds a NaN or inf, or when the squared norms overflow (computed in at least
  float32). `x` is `[B, D]`, `valid` `[B]`.
  """
  wide = x.astype(jnp.promote_types(x.dtype, jnp.float32))
  total = jnp.sum(jnp.where(valid[:, None], jnp.square(wide), 0.0))
  return jnp.where(jnp.isfinite(total), jnp.zeros((), x.dtype), jnp.full((), jnp.nan, x.dtype))


def sanitize_rows(x, valid):
  """`(where(valid[:, None], x, 0), row_alarm(x, valid))` for `[B, D]` rows and a `[B]` mask."""
  return jnp.where(valid[:, None], x, jnp.zeros((), x.dtype)), row_alarm(x, valid)


def embedding_inputs(embeddings, labels, valid=None):
  """Validates the convenience form's arguments and sanitizes the padded rows.

  Returns:
    `(embeddings, labels, valid, alarm)`: `embeddings [B, D]` with the rows where `valid` is False set to 0 (they then
    get an exact 0 gradient and cannot reach the valid rows' gradients through the matmul), `valid` filled in (all True
    for None), and the alarm scalar of the valid rows (0.0, or NaN when a valid row holds a NaN or inf).
  """
  embeddings, labels, valid = check_embedding_inputs(embeddings, labels, valid)
  embeddings, flag = sanitize_rows(embeddings, valid)
  return embeddings, labels, valid, flag


__all__ = ["alarm", "row_alarm", "sanitize", "sanitize_rows", "embedding_inputs", "check_embedding_inputs"]

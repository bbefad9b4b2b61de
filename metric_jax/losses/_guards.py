"""Non-finite values never hide; padded rows never leak (DESIGN.md, "The loss contract") — for the issue-12 losses.

`sanitize(x, valid)` returns `x` with its invalid entries replaced by 0 (a `jnp.where`, whose transpose *selects*
instead of multiplying, so invalid entries get an exact 0 gradient and send nothing on, even when they hold NaN or inf)
together with an *alarm*: a scalar that is exactly 0.0 when every valid entry of `x` is finite and NaN otherwise. The
losses add the alarm to their value: finite inputs change neither value nor gradient, and a non-finite valid entry
makes the value NaN whatever the loss does with that entry (a hinge, a mask or a count could otherwise drop it).

The same contract as `metric_jax.losses._finite` (written at the same time for the other losses); once that module is
in the repository the two can be merged.
"""

from __future__ import annotations

import jax.numpy as jnp

from metric_jax.losses._registry import check_embedding_inputs


def alarm(x, valid):
  """Scalar of `x`'s dtype: 0.0 when every entry of `x` where `valid` holds is finite, NaN otherwise (no gradient).

  Args:
    x: float array.
    valid: boolean array broadcastable to `x` (or a Python bool).
  """
  ok = jnp.all(jnp.isfinite(x) | ~jnp.asarray(valid))
  return jnp.where(ok, jnp.zeros((), x.dtype), jnp.full((), jnp.nan, x.dtype))


def sanitize(x, valid):
  """`(where(valid, x, 0), alarm(x, valid))`: invalid entries set to 0 with a zero gradient, and the alarm scalar."""
  return jnp.where(valid, x, jnp.zeros((), x.dtype)), alarm(x, valid)


def embedding_inputs(embeddings, labels, valid=None):
  """The convenience form's checks plus `sanitize` of the padded rows.

  Returns:
    `(embeddings with the rows where valid is False set to 0, labels, valid filled in, alarm of the valid rows)`.
  """
  embeddings, labels, valid = check_embedding_inputs(embeddings, labels, valid)
  embeddings, flag = sanitize(embeddings, valid[:, None])
  return embeddings, labels, valid, flag


__all__ = ["alarm", "sanitize", "embedding_inputs"]

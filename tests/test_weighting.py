"""GPW weightings: formulas, stop-gradient, normalization (per anchor / batch, with offset), log-space stability."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metric_jax import weighting

X = np.array([[-0.5, 0.0, 0.3, 1.2], [2.0, -1.0, 0.7, 0.1]])
MASK = np.array([[True, True, True, False], [True, False, True, True]])


def test_formulas():
  np.testing.assert_allclose(weighting.constant(jnp.asarray(X)), np.ones_like(X))
  np.testing.assert_allclose(weighting.power(jnp.asarray(X), 2.0), np.maximum(X, 0) ** 2)
  np.testing.assert_allclose(weighting.power(jnp.asarray(X), 0.0), np.ones_like(X))   # [x]_+^0 = 1 (0^0 = 1)
  np.testing.assert_allclose(weighting.exponential(jnp.asarray(X), 1.5), np.exp(1.5 * X), rtol=1e-6)
  np.testing.assert_allclose(weighting.weights("power", jnp.asarray(X), exponent=3.0), np.maximum(X, 0) ** 3)


def test_weights_carry_no_gradient():
  for fn in (lambda x: weighting.power(x, 2.0), lambda x: weighting.exponential(x, 2.0),
             lambda x: weighting.normalized_exponential(x, jnp.asarray(MASK), scale=2.0),
             lambda x: weighting.normalize(jnp.exp(x), jnp.asarray(MASK)),
             lambda x: weighting.normalized_power(x, jnp.asarray(MASK), p=2.0)):
    grad = jax.grad(lambda x: jnp.sum(fn(x) * 3.0))(jnp.asarray(X))
    np.testing.assert_array_equal(np.asarray(grad), np.zeros_like(X))


@pytest.mark.parametrize("over,offset", [("anchor", 0.0), ("anchor", 1.0), ("batch", 0.0), ("batch", 2.0)])
def test_normalization_by_hand(over, offset):
  w = np.exp(X)
  masked = np.where(MASK, w, 0.0)
  total = masked.sum(axis=1, keepdims=True) if over == "anchor" else masked.sum()
  expected = masked / (offset + total)
  np.testing.assert_allclose(weighting.normalize(jnp.asarray(w), jnp.asarray(MASK), over=over, offset=offset),
                             expected, rtol=1e-6)
  np.testing.assert_allclose(
      weighting.normalized_exponential(jnp.asarray(X), jnp.asarray(MASK), scale=1.0, over=over, offset=offset),
      expected, rtol=1e-6)


def test_normalized_exponential_is_finite_for_huge_violations():
  x = jnp.asarray(X * 1e4, jnp.float32)
  w = weighting.normalized_exponential(x, jnp.asarray(MASK), scale=50.0, offset=1.0)
  assert np.isfinite(np.asarray(w)).all()
  # Each row is dominated by its largest selected violation.
  np.testing.assert_allclose(np.asarray(w), [[0, 0, 1, 0], [1, 0, 0, 0]], atol=1e-6)
  assert np.isfinite(np.asarray(weighting.exponential(x, 50.0))).all()   # capped exponent


def test_normalized_power_is_the_gradient_of_the_p_plus_1_norm():
  p, c = 2.0, 0.5
  x = jnp.asarray(X)
  potential = lambda v: jnp.sum(jnp.power(c + jnp.sum(jnp.where(MASK, jnp.maximum(v, 0.0) ** (p + 1), 0.0), axis=1),
                                          1.0 / (p + 1)))
  np.testing.assert_allclose(np.asarray(jax.grad(potential)(x)),
                             np.asarray(weighting.normalized_power(x, jnp.asarray(MASK), p=p, offset=c)), rtol=1e-6)


def test_empty_selection_gives_zero_weights_not_nan():
  empty = jnp.zeros_like(jnp.asarray(MASK))
  for w in (weighting.normalize(jnp.ones(X.shape), empty), weighting.normalized_exponential(jnp.asarray(X), empty),
            weighting.normalized_power(jnp.asarray(X), empty)):
    np.testing.assert_array_equal(np.asarray(w), np.zeros_like(X))


def test_bad_arguments_name_the_argument():
  with pytest.raises(ValueError, match="weighting"):
    weighting.weights("linear", jnp.asarray(X))
  with pytest.raises(ValueError, match="scale"):
    weighting.exponential(jnp.asarray(X), 0.0)
  with pytest.raises(ValueError, match="`p`"):
    weighting.power(jnp.asarray(X), -1.0)
  with pytest.raises(ValueError, match="over"):
    weighting.normalize(jnp.asarray(X), jnp.asarray(MASK), over="row")
  with pytest.raises(ValueError, match="normalize"):
    weighting.pair_weights("constant", jnp.asarray(X), jnp.asarray(MASK), normalization="row")

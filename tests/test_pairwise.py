"""Pairwise matrices against numpy, square and rectangular; finite zero-distance gradients; argument errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metric_jax import pairwise

RNG = np.random.default_rng(0)
Q = RNG.normal(size=(5, 3))
K = RNG.normal(size=(7, 3))


@pytest.mark.parametrize("keys", [None, K])
def test_matrices_match_numpy(keys):
  k = Q if keys is None else keys
  with jax.enable_x64(True):
    kj = None if keys is None else jnp.asarray(keys)
    sq = pairwise.squared_euclidean(jnp.asarray(Q), kj)
    eu = pairwise.euclidean(jnp.asarray(Q), kj)
    cos = pairwise.cosine_similarity(jnp.asarray(Q), kj)
    dot = pairwise.dot_product(jnp.asarray(Q), kj)
  expected_sq = ((Q[:, None] - k[None]) ** 2).sum(-1)
  np.testing.assert_allclose(np.asarray(sq), expected_sq, atol=1e-12)
  np.testing.assert_allclose(np.asarray(eu), np.sqrt(expected_sq), atol=1e-7)
  qn = Q / np.linalg.norm(Q, axis=1, keepdims=True)
  kn = k / np.linalg.norm(k, axis=1, keepdims=True)
  np.testing.assert_allclose(np.asarray(cos), qn @ kn.T, atol=1e-12)
  np.testing.assert_allclose(np.asarray(dot), Q @ k.T, atol=1e-12)
  assert sq.shape == (5, k.shape[0])


def test_zero_distance_and_zero_vectors_have_finite_gradients():
  emb = jnp.array([[1.0, 2.0], [1.0, 2.0], [0.0, 0.0]])
  for fn in (pairwise.euclidean, pairwise.squared_euclidean, pairwise.cosine_similarity):
    grad = jax.grad(lambda e: jnp.sum(fn(e)))(emb)
    assert np.isfinite(np.asarray(grad)).all()
  # The derivative of |q - k| is (q - k)/|q - k| away from 0, and 0 at 0.
  g = jax.grad(lambda e: pairwise.euclidean(e)[0, 1])(jnp.array([[0.0, 0.0], [3.0, 4.0]]))
  np.testing.assert_allclose(np.asarray(g), [[-0.6, -0.8], [0.6, 0.8]], rtol=1e-6)
  np.testing.assert_allclose(np.asarray(pairwise.cosine_similarity(emb))[2], 0.0)


def test_distances_are_never_negative_after_cancellation():
  big = jnp.asarray(np.full((4, 8), 1e4) + RNG.normal(size=(4, 8)) * 1e-3, jnp.float32)
  assert float(jnp.min(pairwise.squared_euclidean(big))) >= 0.0
  assert float(jnp.min(pairwise.euclidean(big))) >= 0.0


def test_l2_normalize_and_get():
  x = jnp.array([[3.0, 4.0], [0.0, 0.0]])
  np.testing.assert_allclose(np.asarray(pairwise.l2_normalize(x)), [[0.6, 0.8], [0.0, 0.0]], rtol=1e-6)
  assert pairwise.get("cosine") is pairwise.cosine_similarity
  with pytest.raises(ValueError, match="metric"):
    pairwise.get("manhattan")


def test_bad_arguments_name_the_argument():
  with pytest.raises(ValueError, match="queries"):
    pairwise.euclidean(jnp.ones((3,)))
  with pytest.raises(TypeError, match="queries"):
    pairwise.dot_product(jnp.ones((3, 2), jnp.int32))
  with pytest.raises(ValueError, match="keys"):
    pairwise.squared_euclidean(jnp.ones((3, 2)), jnp.ones((3, 4)))

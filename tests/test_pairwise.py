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


# ------------------------------------------------------------------ identical rows: exactly 0 in every execution mode
def _with_duplicates(dim, seed=0, rows=48):
  """Rows of very different norms, every row duplicated once; returns `(x, keys, same [rows, rows])`."""
  rng = np.random.default_rng(seed)
  x = (rng.normal(size=(rows, dim)) * rng.uniform(0.01, 100.0, size=(rows, 1))).astype(np.float32)
  x[1::2] = x[0::2]
  keys = x[rng.permutation(rows)]                          # a rectangular-style key set holding the same rows
  return x, keys


def _modes(fn, *args):
  """`fn(*args)` eagerly, under jit and under vmap (batch of 2), as numpy arrays."""
  stacked = [np.stack([a, a]) for a in args]
  return {"eager": np.asarray(fn(*map(jnp.asarray, args))), "jit": np.asarray(jax.jit(fn)(*args)),
          "vmap": np.asarray(jax.vmap(fn)(*stacked)[1])}


@pytest.mark.parametrize("dim", [1, 3, 16, 128, 512])
def test_identical_rows_are_exactly_zero_apart_in_every_mode(dim):
  x, keys = _with_duplicates(dim)
  same_square = (x[:, None, :] == x[None, :, :]).all(-1)
  same_rect = (x[:, None, :] == keys[None, :, :]).all(-1)
  for name in ("squared_euclidean", "euclidean", "cosine_distance"):
    fn = pairwise.get(name)
    for mode, out in _modes(lambda q: fn(q), x).items():
      np.testing.assert_array_equal(out[same_square], 0.0, err_msg=f"{name} square {mode}")
      assert (out >= 0).all()
    for mode, out in _modes(lambda q, k: fn(q, k), x, keys).items():
      np.testing.assert_array_equal(out[same_rect], 0.0, err_msg=f"{name} rectangular {mode}")
  for mode, out in _modes(lambda q: pairwise.cosine_similarity(q), x).items():
    np.testing.assert_array_equal(out[same_square], 1.0, err_msg=f"cosine {mode}")
    assert (np.abs(out) <= 1.0).all()
  for mode, out in _modes(lambda q: pairwise.cosine_similarity(q, -q), x).items():
    np.testing.assert_array_equal(out[same_square], -1.0, err_msg=f"cosine of opposite rows {mode}")


def test_clamp_keeps_distances_the_formula_resolves():
  # Rows 1e-2 apart (relative): far above the tolerance (~ (4 + 2 sqrt(8)) eps, i.e. distances ~ 1e-3 |q|).
  rng = np.random.default_rng(1)
  q = rng.normal(size=(6, 8))
  k = q + 1e-2 * rng.normal(size=(6, 8)) * np.linalg.norm(q, axis=1, keepdims=True) / np.sqrt(8)
  expected = ((q[:, None] - k[None]) ** 2).sum(-1)
  got = np.asarray(pairwise.squared_euclidean(jnp.asarray(q, jnp.float32), jnp.asarray(k, jnp.float32)))
  assert (got > 0).all()
  np.testing.assert_allclose(got, expected, rtol=2e-2, atol=0)
  assert pairwise.cancellation_tolerance(jnp.float32, 16) == pytest.approx(12 * float(np.finfo(np.float32).eps))


def test_gradients_stay_finite_and_zero_at_identical_rows():
  x, _ = _with_duplicates(16, rows=8)
  for name in ("squared_euclidean", "euclidean", "cosine_distance"):
    grad = jax.grad(lambda e: jnp.sum(pairwise.get(name)(e)))(jnp.asarray(x))
    assert np.isfinite(np.asarray(grad)).all(), name
  # d|q0 - q1| / dq0 is 0 where the two rows are identical (the other rows' pulls are what remains).
  g = jax.grad(lambda e: pairwise.euclidean(e)[0, 1])(jnp.asarray(x))
  np.testing.assert_array_equal(np.asarray(g), 0.0)


def test_16_bit_inputs_are_computed_in_float32():
  x, _ = _with_duplicates(64, rows=8)
  for dtype in (jnp.bfloat16, jnp.float16):
    xs = jnp.asarray(x / 100.0, dtype)
    for name in ("squared_euclidean", "cosine_distance"):
      out = pairwise.get(name)(xs)
      assert out.dtype == dtype
      np.testing.assert_array_equal(np.asarray(out, np.float32)[0, 1], 0.0)
    # Float32's tolerance, not a 16-bit one: two rows 5% apart keep their distance.
    pair = jnp.asarray([[1.0, 0.0], [1.0, 0.05]], dtype)
    assert float(pairwise.euclidean(pair)[0, 1]) == pytest.approx(0.05, rel=0.02)


def test_nonfinite_rows_give_nonfinite_entries():
  """The clamps and `safe_sqrt` keep NaN as NaN: a non-finite row must not turn into distance 0."""
  x = np.array([[1.0, 2.0], [np.nan, 0.0], [np.inf, 1.0]], np.float32)
  for name in ("squared_euclidean", "euclidean", "cosine_distance", "cosine"):
    out = np.asarray(jax.jit(pairwise.get(name))(x))
    assert not np.isfinite(out[1]).any() and not np.isfinite(out[:, 1]).any(), name
    assert not np.isfinite(out[0, 2]), name
  assert np.isnan(float(pairwise.safe_sqrt(jnp.float32(np.nan))))
  assert float(jax.grad(pairwise.safe_sqrt)(0.0)) == 0.0

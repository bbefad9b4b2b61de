"""Regularizers against numpy reimplementations of their formulas; gradients, padding, degenerate inputs."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import test_util as jtu

from metric_jax import regularizers


def _np_density_adaptivity(emb, labels, alpha, d0, eta):
  classes = np.unique(labels)
  c = len(classes)
  dens = np.array([((emb[labels == k] - emb[labels == k].mean(0)) ** 2).sum(1).mean() for k in classes])
  a = alpha[classes]
  r = d0[classes] ** eta
  cross = sum((r[j] * a[i] - r[i] * a[j]) ** 2 for i in range(c) for j in range(c))
  return ((dens - a) ** 2).sum() / c - a.sum() / c + cross / c ** 2


def _data(seed=0):
  rng = np.random.default_rng(seed)
  emb = rng.normal(size=(10, 4))
  labels = np.array([0, 0, 0, 2, 2, 4, 4, 4, 4, 1])   # class 3 absent, class 1 a singleton
  alpha = rng.uniform(0.2, 1.0, size=5)
  d0 = rng.uniform(0.5, 2.0, size=5)
  return emb, labels, alpha, d0


def test_density_adaptivity_matches_equation_8():
  emb, labels, alpha, d0 = _data()
  with jax.enable_x64(True):
    got = regularizers.density_adaptivity(jnp.asarray(emb), jnp.asarray(labels), jnp.asarray(alpha), jnp.asarray(d0),
                                          eta=0.5)
  np.testing.assert_allclose(float(got), _np_density_adaptivity(emb, labels, alpha, d0, 0.5), rtol=1e-10)


def test_density_adaptivity_hand_value():
  # Class 0: points (0,0), (2,0): centroid (1,0), D_avg = 1.  Class 1: (0,0), (0,4): D_avg = 4.  alpha = (1, 2),
  # D0 = (1, 4), eta = 0.5: fit = ((1-1)^2 + (4-2)^2)/2 = 2; spread = 3/2; cross: (2*1 - 1*2)^2 = 0 both ways -> 0.
  emb = jnp.array([[0.0, 0.0], [2.0, 0.0], [0.0, 0.0], [0.0, 4.0]])
  got = regularizers.density_adaptivity(emb, jnp.array([0, 0, 1, 1]), jnp.array([1.0, 2.0]), jnp.array([1.0, 4.0]))
  assert float(got) == pytest.approx(2.0 - 1.5)


def test_density_adaptivity_gradients_in_embeddings_and_alpha_and_padding():
  emb, labels, alpha, d0 = _data(1)
  with jax.enable_x64(True):
    fn = lambda e, a: regularizers.density_adaptivity(e, jnp.asarray(labels), a, jnp.asarray(d0))
    jtu.check_grads(fn, (jnp.asarray(emb), jnp.asarray(alpha)), order=1, modes=("fwd", "rev"))
    assert np.abs(np.asarray(jax.grad(fn, argnums=1)(jnp.asarray(emb), jnp.asarray(alpha)))).sum() > 0
    padded = np.concatenate([emb, 1e3 * np.ones((2, 4))])
    plabels = np.concatenate([labels, [3, 0]])
    valid = np.arange(12) < 10
    got = regularizers.density_adaptivity(jnp.asarray(padded), jnp.asarray(plabels), jnp.asarray(alpha),
                                          jnp.asarray(d0), valid=jnp.asarray(valid))
    np.testing.assert_allclose(float(got), float(fn(jnp.asarray(emb), jnp.asarray(alpha))), rtol=1e-12)


def test_class_densities_measure_d0_from_features():
  rng = np.random.default_rng(2)
  feats = rng.normal(size=(9, 6))
  labels = np.array([0, 1, 1, 0, 2, 2, 2, 0, 1])
  dens, counts = regularizers.class_densities(jnp.asarray(feats), jnp.asarray(labels), 4)
  for k in range(3):
    f = feats[labels == k]
    np.testing.assert_allclose(float(dens[k]), ((f - f.mean(0)) ** 2).sum(1).mean(), rtol=1e-5)
  assert float(dens[3]) == 0.0 and float(counts[3]) == 0.0


def test_global_orthogonal_matches_numpy():
  emb, labels, _, _ = _data(3)
  p = emb / np.linalg.norm(emb, axis=1, keepdims=True)
  s = p @ p.T
  neg = labels[:, None] != labels[None]
  m1, m2 = s[neg].mean(), (s[neg] ** 2).mean()
  expected = 0.7 * (m1 ** 2 + max(0.0, m2 - 1 / emb.shape[1]))
  with jax.enable_x64(True):
    got = regularizers.global_orthogonal(jnp.asarray(emb), jnp.asarray(labels), alpha=0.7)
    gor = jax.jit(lambda e: regularizers.global_orthogonal(e, jnp.asarray(labels)))
    jtu.check_grads(gor, (jnp.asarray(emb),), order=1,
                    modes=("fwd", "rev"))
  np.testing.assert_allclose(float(got), expected, rtol=1e-10)


def test_embedding_l2_and_entropy_match_numpy():
  emb, labels, _, _ = _data(4)
  valid = np.arange(10) < 8
  with jax.enable_x64(True):
    got = regularizers.embedding_l2(jnp.asarray(emb), jnp.asarray(valid))
    ent = regularizers.entropy(jnp.asarray(emb), jnp.asarray(labels), temperature=0.5)
    jtu.check_grads(jax.jit(lambda e: regularizers.entropy(e, jnp.asarray(labels))), (jnp.asarray(emb),), order=1,
                    modes=("fwd", "rev"))
  np.testing.assert_allclose(float(got), (emb[:8] ** 2).sum(1).mean(), rtol=1e-12)
  p = emb / np.linalg.norm(emb, axis=1, keepdims=True)
  s = p @ p.T / 0.5
  hs = []
  for i in range(10):
    n = labels != labels[i]
    q = np.exp(s[i, n] - s[i, n].max())
    q /= q.sum()
    hs.append(-(q * np.log(q)).sum())
  np.testing.assert_allclose(float(ent), -np.mean(hs), rtol=1e-10)


def test_degenerate_inputs_are_finite_with_finite_gradients():
  labels = jnp.array([0, 0, 1, 1])
  alpha, d0 = jnp.full((2,), 0.5), jnp.array([0.0, 1.0])
  for emb in (jnp.zeros((4, 3)), jnp.ones((4, 3)) * 1e4):
    for fn in (lambda e: regularizers.density_adaptivity(e, labels, alpha, d0),
               lambda e: regularizers.global_orthogonal(e, labels), lambda e: regularizers.embedding_l2(e),
               lambda e: regularizers.entropy(e, labels)):
      value, grad = jax.value_and_grad(fn)(emb)
      assert np.isfinite(float(value)) and np.isfinite(np.asarray(grad)).all()
  one_class = jnp.zeros((4,), jnp.int32)
  assert float(regularizers.global_orthogonal(jnp.ones((4, 3)), one_class)) == 0.0
  assert float(regularizers.entropy(jnp.ones((4, 3)), one_class)) == 0.0


def test_bad_arguments_name_the_argument():
  emb = jnp.ones((4, 3))
  labels = jnp.array([0, 0, 1, 1])
  with pytest.raises(ValueError, match="d0"):
    regularizers.density_adaptivity(emb, labels, jnp.ones(2), jnp.ones(3))
  with pytest.raises(TypeError, match="alpha"):
    regularizers.density_adaptivity(emb, labels, jnp.ones(2, jnp.int32), jnp.ones(2))
  with pytest.raises(ValueError, match="labels"):
    regularizers.global_orthogonal(emb, jnp.array([0, 1]))
  with pytest.raises(TypeError, match="embeddings"):
    regularizers.embedding_l2(jnp.ones((4, 3), jnp.int32))

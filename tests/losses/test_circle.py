"""Tests of the circle loss (Sun et al. 2020).

Reference values come from hand computation on a written-out similarity matrix and from pytorch-metric-learning's
`CircleLoss(m, gamma)` (cosine similarity, as here). Conventions: both treat the weights α_p, α_n as constants in the
gradient (`.detach()` there, `detach_weights=True` here) and average over the queries that have both a positive and a
negative (PML's `AvgNonZeroReducer`: such a query's softplus term is > 0, the others are 0).
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import test_util as jtu
from pytorch_metric_learning import losses as pml_losses

from metric_jax import losses
from metric_jax.losses import circle
from tests.losses import _pml

e, log = math.exp, math.log

# Labels (0, 0, 1, 1, 2): every query but 4 has a positive; query 4 has only negatives and no term.
S = np.array([[1.0, 0.7, 0.2, -0.3, 0.5],
              [0.7, 1.0, 0.65, 0.1, -0.5],
              [0.2, 0.65, 1.0, 0.35, 0.0],
              [-0.3, 0.1, 0.35, 1.0, 0.8],
              [0.5, -0.5, 0.0, 0.8, 1.0]], np.float32)
Y = np.array([0, 0, 1, 1, 2], np.int32)


def _hand(m, gamma):
  terms = []
  for i in range(5):
    pos = [S[i, j] for j in range(5) if j != i and Y[j] == Y[i]]
    neg = [S[i, j] for j in range(5) if Y[j] != Y[i]]
    if not pos or not neg:
      continue
    sum_p = sum(e(-gamma * max(1 + m - s, 0) * (s - (1 - m))) for s in pos)
    sum_n = sum(e(gamma * max(s + m, 0) * (s - m)) for s in neg)
    terms.append(log(1 + sum_n * sum_p))
  return sum(terms) / len(terms)


@pytest.mark.parametrize("m,gamma", [(0.4, 80.0), (0.25, 256.0), (0.25, 2.0)])
def test_hand_computed(m, gamma):
  np.testing.assert_allclose(circle.circle_loss(S, Y, margin=m, gamma=gamma), _hand(m, gamma), rtol=1e-5)


def test_negative_below_minus_m_has_zero_weight():
  """α_n = [s_n + m]₊ = 0 for s_n ≤ −m: such a negative adds exp(0) = 1 whatever its similarity."""
  s1 = np.array([[1.0, 0.9, -0.5], [0.9, 1.0, -0.7], [-0.5, -0.7, 1.0]], np.float32)
  s2 = s1.copy()
  s2[0, 2] = s2[2, 0] = -0.9
  y = np.array([0, 0, 1], np.int32)
  np.testing.assert_allclose(circle.circle_loss(s1, y), circle.circle_loss(s2, y), rtol=1e-6)


def _pml_case(seed, size=16, num_classes=5):
  rng = np.random.default_rng(seed)
  labels = rng.permutation(np.arange(size) % num_classes).astype(np.int32)
  return rng.normal(size=(size, 6)), labels


@pytest.mark.parametrize("m,gamma", [(0.4, 80.0), (0.25, 32.0)])
def test_matches_pytorch_metric_learning(m, gamma):
  embeddings, labels = _pml_case(int(gamma))
  expected_value, expected_grad = _pml.pair_loss(pml_losses.CircleLoss(m=m, gamma=gamma), embeddings, labels)
  with jax.enable_x64(True):
    value, grad = jax.value_and_grad(lambda x: losses.get("circle")(x, jnp.asarray(labels), margin=m, gamma=gamma))(
        jnp.asarray(embeddings))
  np.testing.assert_allclose(value, expected_value, rtol=1e-4)
  np.testing.assert_allclose(grad, expected_grad, rtol=1e-4, atol=1e-10)


def _matrix_case():
  rng = np.random.default_rng(5)
  matrix = jnp.asarray(rng.uniform(-1.0, 1.0, size=(5, 7)))
  query_labels = np.array([0, 1, 2, 0, 3], np.int32)
  key_labels = np.array([1, 0, 2, 3, 0, 2, 1], np.int32)
  query_valid = np.array([True, True, False, True, True])
  key_valid = np.array([True, True, True, True, False, True, True])
  return matrix, dict(query_labels=query_labels, key_labels=key_labels, query_valid=query_valid, key_valid=key_valid)


def test_matrix_form_gradients_match_finite_differences_without_detached_weights():
  with jax.enable_x64(True):
    matrix, kwargs = _matrix_case()
    loss = lambda x: circle.circle_loss(x, gamma=4.0, detach_weights=False, **kwargs)
    jtu.check_grads(jax.jit(loss), (matrix,), order=1, modes=("fwd", "rev"), eps=1e-6, atol=1e-6, rtol=1e-5)


def test_detached_weights_forward_and_reverse_modes_agree_and_differ_from_the_full_derivative():
  with jax.enable_x64(True):
    matrix, kwargs = _matrix_case()
    tangent = jnp.asarray(np.random.default_rng(0).normal(size=matrix.shape))
    loss = lambda x: circle.circle_loss(x, gamma=4.0, **kwargs)
    _, jvp_out = jax.jvp(loss, (matrix,), (tangent,))
    grad = jax.grad(loss)(matrix)
    np.testing.assert_allclose(jnp.vdot(grad, tangent), jvp_out, rtol=1e-10)
    full = jax.grad(lambda x: circle.circle_loss(x, gamma=4.0, detach_weights=False, **kwargs))(matrix)
    assert float(jnp.max(jnp.abs(full - grad))) > 1e-3
    np.testing.assert_allclose(loss(matrix), circle.circle_loss(matrix, gamma=4.0, detach_weights=False, **kwargs))


@pytest.mark.parametrize("hparams,argument,error", [
    ({"gamma": 0.0}, "gamma", ValueError),
    ({"margin": -0.1}, "margin", ValueError),
    ({"detach_weights": 1}, "detach_weights", TypeError),
])
def test_bad_hyperparameters_name_the_argument(hparams, argument, error):
  with pytest.raises(error, match=argument):
    losses.get("circle")(np.eye(3, dtype=np.float32), np.array([0, 0, 1], np.int32), **hparams)


def test_nan_padding_changes_nothing_and_a_nan_valid_row_shows():
  rng = np.random.default_rng(4)
  x = rng.normal(size=(8, 3)).astype(np.float32)
  y = np.array([0, 1, 0, 1, 2, 2, 0, 3], np.int32)
  valid = np.arange(8) != 5
  fn = jax.jit(jax.value_and_grad(lambda x_, v: losses.get("circle")(x_, y, valid=v)))
  benign_value, benign_grad = fn(x, valid)
  garbage = x.copy()
  garbage[5] = [np.nan, np.inf, -np.inf]
  value, grad = fn(garbage, valid)
  assert float(value) == float(benign_value)
  np.testing.assert_array_equal(np.asarray(grad), np.asarray(benign_grad))
  assert not np.asarray(grad)[5].any()
  assert np.isnan(float(fn(garbage, np.ones(8, bool))[0]))
  assert np.isnan(float(fn(garbage, np.isin(np.arange(8), [5, 7]))[0]))   # rows 5 and 7 form no pair with a term

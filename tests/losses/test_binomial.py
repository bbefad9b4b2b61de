"""Tests of the binomial deviance loss (Yi et al. 2014, with the weights of Ustinova & Lempitsky 2016).

pytorch-metric-learning has no binomial deviance loss, so the references are hand computations on written-out similarity
matrices and on 2-D embeddings whose cosines are exact.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import test_util as jtu

from metric_jax import losses
from metric_jax.losses import binomial


def _softplus(x):
  return math.log1p(math.exp(x))


# Labels (0, 0, 1): one positive pair (0.8) and two negative pairs (0.1, −0.2), each counted in both orders.
HAND_SIMILARITY = np.array([[1.0, 0.8, 0.1],
                            [0.8, 1.0, -0.2],
                            [0.1, -0.2, 1.0]], np.float32)
HAND_LABELS = np.array([0, 0, 1], np.int32)


@pytest.mark.parametrize("alpha,beta,neg_cost", [(2.0, 0.5, 25.0), (10.0, 0.3, 1.0)])
def test_hand_computed_matrix_form(alpha, beta, neg_cost):
  pos = _softplus(-alpha * (0.8 - beta))                                   # 2 ordered positives / n_pos = 2
  neg = (_softplus(alpha * neg_cost * (0.1 - beta)) + _softplus(alpha * neg_cost * (-0.2 - beta))) / 2  # 4 / n_neg = 4
  value = binomial.binomial_deviance_loss(HAND_SIMILARITY, HAND_LABELS, alpha=alpha, beta=beta, neg_cost=neg_cost)
  np.testing.assert_allclose(value, pos + neg, rtol=1e-5)


def test_hand_computed_from_embeddings():
  # cos(e0, e1) = 0.6 (positive), cos(e0, e2) = 0, cos(e1, e2) = 0.8 (negatives); α = 2, β = 0.5, C = 25.
  embeddings = np.array([[1.0, 0.0], [0.6, 0.8], [0.0, 2.0]], np.float32)
  expected = _softplus(-2 * 0.1) + (_softplus(50 * -0.5) + _softplus(50 * 0.3)) / 2
  np.testing.assert_allclose(losses.get("binomial_deviance")(embeddings, HAND_LABELS), expected, rtol=1e-5)


def test_weights_are_one_over_the_pair_counts():
  """Five negative pairs: their terms are averaged (weight 1/n_neg), the single positive has weight 1."""
  s = np.array([[1.0, 0.7, 0.2, 0.2],
                [0.7, 1.0, -0.1, -0.1],
                [0.2, -0.1, 1.0, 1.0],
                [0.2, -0.1, 1.0, 1.0]], np.float32)
  # Labels (0, 0, 1, 2): one positive pair (0, 1); rows 2 and 3 are negatives of rows 0, 1 and of each other.
  labels = np.array([0, 0, 1, 2], np.int32)
  neg_values = [0.2, -0.1, 0.2, -0.1, 1.0]  # unordered negative pairs (each appears twice, ordered)
  expected = _softplus(-2 * 0.2) + sum(_softplus(50 * (v - 0.5)) for v in neg_values) / len(neg_values)
  np.testing.assert_allclose(binomial.binomial_deviance_loss(s, labels), expected, rtol=1e-5)


def test_no_positive_pair_gives_zero():
  value, grad = jax.value_and_grad(losses.get("binomial_deviance"))(np.eye(3, dtype=np.float32),
                                                                    np.arange(3, dtype=np.int32))
  assert float(value) == 0.0 and not np.asarray(grad).any()


def test_matrix_form_gradients_match_finite_differences():
  """check_grads (order 1, fwd and rev, float64) on a rectangular similarity matrix with padded queries and keys."""
  rng = np.random.default_rng(6)
  with jax.enable_x64(True):
    matrix = jnp.asarray(rng.uniform(-0.5, 1.0, size=(5, 7)))
    query_labels = np.array([0, 1, 2, 0, 3], np.int32)
    key_labels = np.array([1, 0, 2, 3, 0, 2, 1], np.int32)
    query_valid = np.array([True, True, False, True, True])
    key_valid = np.array([True, True, True, True, False, True, True])
    loss = lambda m: binomial.binomial_deviance_loss(m, query_labels, key_labels, query_valid=query_valid,
                                                     key_valid=key_valid, neg_cost=5.0)
    jtu.check_grads(loss, (matrix,), order=1, modes=("fwd", "rev"), eps=1e-6, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("argument", ["alpha", "neg_cost"])
def test_bad_hyperparameters_name_the_argument(argument):
  with pytest.raises(ValueError, match=argument):
    losses.get("binomial_deviance")(np.eye(3, dtype=np.float32), HAND_LABELS, **{argument: 0.0})

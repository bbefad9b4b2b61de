"""Tests of SupCon (Khosla et al. 2020) and NT-Xent (Chen et al. 2020), and of the two-view labels helper.

Reference values come from hand computation on a written-out similarity matrix (matrix form) and on 2-D embeddings at
written-out angles, from pytorch-metric-learning's `SupConLoss(temperature)` and `NTXentLoss(temperature)` (cosine
similarity, as here) and from optax's `ntxent`. Conventions: PML's `SupConLoss` averages over the anchors with a
non-zero loss (`AvgNonZeroReducer`), metric_jax over the anchors that have a positive; they agree whenever each such
anchor also has a negative or several positives (its term is then > 0), as in the batches below. PML returns 0 for a
batch without any negative pair; metric_jax follows the paper there (each anchor's term is ≥ log |P(i)|). NT-Xent:
PML, optax and metric_jax all give each positive pair (i, p) the denominator `exp(S_ip/τ) + Σ_{n∈N(i)} exp(S_in/τ)`
and average over positive pairs; optax returns NaN for a batch without positive pairs, metric_jax 0.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax import test_util as jtu
from pytorch_metric_learning import losses as pml_losses

from metric_jax import labels as labels_lib
from metric_jax import losses
from metric_jax.losses import supcon
from tests.losses import _pml

e, log = math.exp, math.log

# Labels (0, 0, 0, 1, 2): query 0 has positives 1, 2; queries 3 and 4 have none.
S = np.array([[1.0, 0.8, 0.3, 0.5, -0.2],
              [0.8, 1.0, 0.6, 0.1, 0.0],
              [0.3, 0.6, 1.0, -0.4, 0.9],
              [0.5, 0.1, -0.4, 1.0, 0.2],
              [-0.2, 0.0, 0.9, 0.2, 1.0]], np.float32)
Y = np.array([0, 0, 0, 1, 2], np.int32)


def _supcon_hand(tau):
  terms = []
  for i in range(5):
    positives = [j for j in range(5) if j != i and Y[j] == Y[i]]
    if not positives:
      continue
    denominator = sum(e(S[i, a] / tau) for a in range(5) if a != i)
    terms.append(-sum(log(e(S[i, p] / tau) / denominator) for p in positives) / len(positives))
  return sum(terms) / len(terms)


def _ntxent_hand(tau):
  terms = []
  for i in range(5):
    negatives = [e(S[i, n] / tau) for n in range(5) if Y[n] != Y[i]]
    for p in range(5):
      if p != i and Y[p] == Y[i]:
        terms.append(-log(e(S[i, p] / tau) / (e(S[i, p] / tau) + sum(negatives))))
  return sum(terms) / len(terms)


@pytest.mark.parametrize("tau", [0.1, 0.5, 1.0])
def test_matrix_forms_hand_computed(tau):
  np.testing.assert_allclose(supcon.supcon_loss(S, Y, temperature=tau), _supcon_hand(tau), rtol=1e-5)
  np.testing.assert_allclose(supcon.ntxent_loss(S, Y, temperature=tau), _ntxent_hand(tau), rtol=1e-5)


def test_registry_forms_hand_computed_on_cosines():
  """Two views of two samples at 0 / 20 and 90 / 150 degrees (norms differ): cosines of the angle differences."""
  angles, norms = [0.0, 90.0, 20.0, 150.0], [1.0, 3.0, 0.5, 2.0]
  x = np.array([[n * math.cos(math.radians(a)), n * math.sin(math.radians(a))] for a, n in zip(angles, norms)],
               np.float32)
  y = labels_lib.view_labels(2)                          # [0, 1, 0, 1]
  cos = lambda i, j: math.cos(math.radians(angles[i] - angles[j]))
  tau = 0.5
  ntxent_terms, supcon_terms = [], []
  for i in range(4):
    p = (i + 2) % 4
    others = [e(cos(i, k) / tau) for k in range(4) if k != i]
    ntxent_terms.append(-log(e(cos(i, p) / tau) / sum(others)))   # two views: SimCLR's sum over k != i
    supcon_terms.append(-log(e(cos(i, p) / tau) / sum(others)))   # one positive: SupCon is the same
  np.testing.assert_allclose(losses.get("ntxent")(x, y, temperature=tau), sum(ntxent_terms) / 4, rtol=1e-5)
  np.testing.assert_allclose(losses.get("supcon")(x, y, temperature=tau), sum(supcon_terms) / 4, rtol=1e-5)


def test_supcon_query_whose_keys_are_all_positives_follows_the_paper():
  """One class of 3: each term is −mean_p log softmax_p ≥ log 2, equal to log 2 when the similarities are equal."""
  s = np.full((3, 3), 0.4, np.float32)
  np.testing.assert_allclose(supcon.supcon_loss(s, np.zeros(3, np.int32)), math.log(2), rtol=1e-6)


@pytest.mark.parametrize("name", ["supcon", "ntxent"])
def test_batch_without_positive_pair_is_zero_where_optax_gives_nan(name):
  rng = np.random.default_rng(0)
  x = rng.normal(size=(6, 4)).astype(np.float32)
  y = np.arange(6, dtype=np.int32)
  value, grad = jax.jit(jax.value_and_grad(lambda x_: losses.get(name)(x_, y)))(x)
  assert float(value) == 0.0 and not np.asarray(grad).any()
  assert np.isnan(jax.jit(optax.losses.ntxent)(jnp.asarray(x), jnp.asarray(y)))


def test_ntxent_matches_optax_on_a_simclr_batch():
  rng = np.random.default_rng(1)
  x = rng.normal(size=(8, 5))
  y = labels_lib.view_labels(4)
  with jax.enable_x64(True):
    ours = jax.jit(jax.value_and_grad(lambda x_: losses.get("ntxent")(x_, y, temperature=0.07)))(jnp.asarray(x))
    reference = jax.jit(jax.value_and_grad(lambda x_: optax.losses.ntxent(x_, y, temperature=0.07)))(jnp.asarray(x))
  np.testing.assert_allclose(ours[0], reference[0], rtol=1e-6)
  np.testing.assert_allclose(ours[1], reference[1], rtol=1e-5, atol=1e-9)


def _pml_case(seed, size=16, num_classes=5):
  rng = np.random.default_rng(seed)
  labels = rng.permutation(np.arange(size) % num_classes).astype(np.int32)
  return rng.normal(size=(size, 6)), labels


@pytest.mark.parametrize("name,module", [
    ("supcon", lambda t: pml_losses.SupConLoss(temperature=t)),
    ("ntxent", lambda t: pml_losses.NTXentLoss(temperature=t)),
])
@pytest.mark.parametrize("temperature", [0.07, 0.1, 0.5])
def test_matches_pytorch_metric_learning(name, module, temperature):
  embeddings, labels = _pml_case(int(temperature * 100))
  expected_value, expected_grad = _pml.pair_loss(module(temperature), embeddings, labels)
  with jax.enable_x64(True):
    value, grad = jax.value_and_grad(lambda x: losses.get(name)(x, jnp.asarray(labels), temperature=temperature))(
        jnp.asarray(embeddings))
  np.testing.assert_allclose(value, expected_value, rtol=1e-4)
  np.testing.assert_allclose(grad, expected_grad, rtol=1e-4, atol=1e-10)


@pytest.mark.parametrize("fn", [supcon.supcon_loss, supcon.ntxent_loss])
def test_matrix_form_gradients_match_finite_differences(fn):
  """check_grads (order 1, fwd and rev, float64) on a rectangular matrix with padded queries and keys."""
  rng = np.random.default_rng(5)
  with jax.enable_x64(True):
    matrix = jnp.asarray(rng.uniform(-1.0, 1.0, size=(5, 7)))
    query_labels = np.array([0, 1, 2, 0, 3], np.int32)
    key_labels = np.array([1, 0, 2, 3, 0, 2, 1], np.int32)
    query_valid = np.array([True, True, False, True, True])
    key_valid = np.array([True, True, True, True, False, True, True])
    loss = lambda m: fn(m, query_labels, key_labels, query_valid=query_valid, key_valid=key_valid, temperature=0.5)
    jtu.check_grads(jax.jit(loss), (matrix,), order=1, modes=("fwd", "rev"), eps=1e-6, atol=1e-6, rtol=1e-5)


def test_memory_bank_keys_with_offset_self_pairs():
  """Local queries as a slice of the global keys (`self_offset`) recombine into the square loss: sum of the terms
  over the global count of queries with a positive (the form a row-sharded loss uses)."""
  rng = np.random.default_rng(2)
  x = rng.normal(size=(8, 3)).astype(np.float32)
  y = np.array([0, 1, 0, 1, 2, 2, 3, 0], np.int32)           # row 6 (label 3) has no positive
  unit = x / np.linalg.norm(x, axis=1, keepdims=True)
  cos = unit @ unit.T
  full = supcon.supcon_loss(cos, y)
  with_pos = [(y == y[i]).sum() > 1 for i in range(8)]
  counts = [sum(with_pos[:4]), sum(with_pos[4:])]             # 4 and 3
  halves = [supcon.supcon_loss(cos[4 * d:4 * d + 4], y[4 * d:4 * d + 4], y, self_offset=4 * d) for d in range(2)]
  np.testing.assert_allclose(sum(h * c for h, c in zip(halves, counts)) / sum(counts), full, rtol=1e-5)


@pytest.mark.parametrize("name", ["supcon", "ntxent"])
def test_bad_temperature_names_the_argument(name):
  with pytest.raises(ValueError, match="temperature"):
    losses.get(name)(np.eye(3, dtype=np.float32), np.zeros(3, np.int32), temperature=0.0)


@pytest.mark.parametrize("name", ["supcon", "ntxent"])
def test_nan_padding_changes_nothing_and_a_nan_valid_row_shows(name):
  rng = np.random.default_rng(4)
  x = rng.normal(size=(8, 3)).astype(np.float32)
  y = np.array([0, 1, 0, 1, 2, 2, 0, 3], np.int32)
  valid = np.arange(8) != 5
  fn = jax.jit(jax.value_and_grad(lambda x_, v: losses.get(name)(x_, y, valid=v)))
  benign_value, benign_grad = fn(x, valid)
  garbage = x.copy()
  garbage[5] = [np.nan, np.inf, -np.inf]
  value, grad = fn(garbage, valid)
  assert float(value) == float(benign_value)
  np.testing.assert_array_equal(np.asarray(grad), np.asarray(benign_grad))
  assert not np.asarray(grad)[5].any()
  assert np.isnan(float(fn(garbage, np.ones(8, bool))[0]))
  lone = np.arange(8) == 5                      # a single valid row: no pair, and still a NaN value
  assert np.isnan(float(fn(garbage, lone)[0]))

"""Tests of the N-pair losses (`npair_mc`, `npair_ovo`; Sohn 2016).

Reference values come from hand computation on 1-D embeddings (dot products are plain products), from a loop-based numpy
reimplementation of the (N+1)-tuple definition, and from pytorch-metric-learning's `NPairsLoss`.

Convention differences with pytorch-metric-learning, and how the cross-check is configured:
- PML's default `DotProductSimilarity` L2-normalizes the embeddings; the paper (and metric_jax) does not, so the reference
  gets `DotProductSimilarity(normalize_embeddings=False)`.
- Pair selection is the same: per class, the first sample is the anchor and the second its positive; other samples of
  the class and single-sample classes take no part. PML has no `symmetric`, `l2_reg` or ovo form; those are checked by
  hand and against the numpy reference.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from jax import test_util as jtu
from pytorch_metric_learning import distances as pml_distances
from pytorch_metric_learning import losses as pml_losses

from metric_jax import losses
from metric_jax.losses import npair

# 1-D embeddings: anchors a = (1, -1, 0.5), positives p = (2, -1, 1); S_ij = a_i p_j.
HAND_EMBEDDINGS = np.array([[1.0], [2.0], [-1.0], [-1.0], [0.5], [1.0]], np.float32)
HAND_LABELS = np.array([0, 0, 1, 1, 2, 2], np.int32)


def _softplus(x):
  return math.log1p(math.exp(x))


def _reference(embeddings, labels, mode, symmetric=False):
  """Loop-based (N+1)-tuple loss: first two samples of each class are (anchor, positive)."""
  anchors, positives = [], []
  for c in dict.fromkeys(labels.tolist()):
    idx = np.flatnonzero(labels == c)
    if len(idx) >= 2:
      anchors.append(embeddings[idx[0]])
      positives.append(embeddings[idx[1]])
  n = len(anchors)
  if n == 0:
    return 0.0
  sim = np.array([[float(np.dot(a, p)) for p in positives] for a in anchors])

  def tuple_loss(sims_to_negatives, sim_to_positive):
    diffs = [s - sim_to_positive for s in sims_to_negatives]
    if mode == "mc":
      return math.log(1.0 + sum(math.exp(d) for d in diffs))
    return sum(_softplus(d) for d in diffs)

  rows = [tuple_loss([sim[i, j] for j in range(n) if j != i], sim[i, i]) for i in range(n)]
  loss = sum(rows) / n
  if symmetric:  # f_c⁺ as the anchor: negatives are the other classes' anchors.
    cols = [tuple_loss([sim[j, i] for j in range(n) if j != i], sim[i, i]) for i in range(n)]
    loss = 0.5 * (loss + sum(cols) / n)
  return loss


def test_npair_mc_hand_computed():
  e = math.exp
  expected = (math.log(1 + e(-3) + e(-1)) + math.log(1 + e(-3) + e(-2)) + math.log(1 + e(0.5) + e(-1))) / 3
  value = losses.get("npair_mc")(HAND_EMBEDDINGS, HAND_LABELS)
  np.testing.assert_allclose(value, expected, rtol=1e-6)


def test_npair_mc_symmetric_hand_computed():
  # Columns of S = a pᵀ: p_0 = 2 against anchors (1, -1, 0.5) -> sims (2, -2, 1), target 2;
  # p_1 = -1 -> (-1, 1, -0.5), target 1; p_2 = 1 -> (1, -1, 0.5), target 0.5.
  e = math.exp
  rows = (math.log(1 + e(-3) + e(-1)) + math.log(1 + e(-3) + e(-2)) + math.log(1 + e(0.5) + e(-1))) / 3
  cols = (math.log(1 + e(-4) + e(-1)) + math.log(1 + e(-2) + e(-1.5)) + math.log(1 + e(0.5) + e(-1.5))) / 3
  value = losses.get("npair_mc")(HAND_EMBEDDINGS, HAND_LABELS, symmetric=True)
  np.testing.assert_allclose(value, 0.5 * (rows + cols), rtol=1e-6)


def test_npair_ovo_hand_computed():
  sp = _softplus
  expected = ((sp(-3) + sp(-1)) + (sp(-3) + sp(-2)) + (sp(0.5) + sp(-1))) / 3
  np.testing.assert_allclose(losses.get("npair_ovo")(HAND_EMBEDDINGS, HAND_LABELS), expected, rtol=1e-6)
  sym_cols = ((sp(-4) + sp(-1)) + (sp(-2) + sp(-1.5)) + (sp(0.5) + sp(-1.5))) / 3
  np.testing.assert_allclose(losses.get("npair_ovo")(HAND_EMBEDDINGS, HAND_LABELS, symmetric=True),
                             0.5 * (expected + sym_cols), rtol=1e-6)


def test_l2_reg_adds_the_mean_squared_norm():
  mean_sq_norm = (1 + 4 + 1 + 1 + 0.25 + 1) / 6
  for name in ("npair_mc", "npair_ovo"):
    base = losses.get(name)(HAND_EMBEDDINGS, HAND_LABELS)
    value = losses.get(name)(HAND_EMBEDDINGS, HAND_LABELS, l2_reg=0.1)
    np.testing.assert_allclose(value - base, 0.1 * mean_sq_norm, rtol=1e-5)


def test_two_samples_of_one_class_give_log_one_and_zero_gradient():
  """A single pair has no negative: log(1 + 0) = 0 (mc) and an empty sum (ovo)."""
  embeddings = np.array([[1.0, 2.0], [3.0, -1.0]], np.float32)
  for name in ("npair_mc", "npair_ovo"):
    value, grad = jax.value_and_grad(losses.get(name))(embeddings, np.array([4, 4], np.int32))
    assert float(value) == 0.0 and not np.asarray(grad).any()


@pytest.mark.parametrize("mode", ["mc", "ovo"])
@pytest.mark.parametrize("symmetric", [False, True])
def test_matches_numpy_reference_with_extra_samples_and_singletons(mode, symmetric):
  rng = np.random.default_rng(0)
  labels = np.array([5, 1, 5, 1, 5, 7, 3, 3, 9, 1], np.int32)  # class 5 and 1 have extra samples; 7, 9 singletons
  embeddings = rng.normal(size=(10, 3)).astype(np.float32)
  value = losses.get(f"npair_{mode}")(embeddings, labels, symmetric=symmetric)
  np.testing.assert_allclose(value, _reference(embeddings, labels, mode, symmetric), rtol=1e-5)


def test_rectangular_matrix_form_pairs_each_query_with_its_first_positive_key():
  """Queries and keys from different sets: anchor = first query of a class, positive = first key of that class."""
  rng = np.random.default_rng(1)
  queries, keys = rng.normal(size=(5, 3)), rng.normal(size=(6, 3))
  query_labels = np.array([2, 0, 2, 1, 8], np.int32)    # class 8 has no key: not an anchor
  key_labels = np.array([1, 0, 0, 2, 5, 2], np.int32)
  anchors, positives = [], []
  for i, c in enumerate(query_labels):
    if c in key_labels and c not in [query_labels[a] for a in anchors]:
      anchors.append(i)
      positives.append(int(np.flatnonzero(key_labels == c)[0]))
  sim = queries[anchors] @ keys[positives].T
  n = len(anchors)
  expected = np.mean([math.log(sum(math.exp(sim[i, j]) for j in range(n))) - sim[i, i] for i in range(n)])
  value = npair.npair_mc_loss(jnp.asarray(queries @ keys.T, jnp.float32), query_labels, key_labels, self_offset=None)
  np.testing.assert_allclose(value, expected, rtol=1e-5)


@pytest.mark.parametrize("mode", ["mc", "ovo"])
@pytest.mark.parametrize("symmetric", [False, True])
def test_registry_form_on_the_compact_matrix_equals_the_full_matrix_form(mode, symmetric):
  """The registry form works on anchors × positives only; the matrix form on all of `E Eᵀ` must agree, with padding."""
  rng = np.random.default_rng(3)
  labels = np.array([3, 1, 3, 0, 1, 3, 2, 0, 4, 4, 1], np.int32)
  valid = np.array([True, True, False, True, True, True, True, True, True, False, True])
  embeddings = rng.normal(size=(labels.size, 4)).astype(np.float32)
  fn = lambda e: losses.get(f"npair_{mode}")(e, labels, valid=valid, symmetric=symmetric)
  full = lambda e: getattr(npair, f"npair_{mode}_loss")(e @ e.T, labels, query_valid=valid, symmetric=symmetric)
  value, grad = jax.value_and_grad(fn)(jnp.asarray(embeddings))
  expected_value, expected_grad = jax.value_and_grad(full)(jnp.asarray(embeddings))
  np.testing.assert_allclose(value, expected_value, rtol=1e-5)
  np.testing.assert_allclose(grad, expected_grad, rtol=1e-5, atol=1e-6)


def _pml_value_and_grad(embeddings, labels):
  e = torch.tensor(embeddings, dtype=torch.float64, requires_grad=True)
  loss_fn = pml_losses.NPairsLoss(distance=pml_distances.DotProductSimilarity(normalize_embeddings=False))
  loss = loss_fn(e, torch.tensor(labels, dtype=torch.long))
  loss.backward()
  return loss.item(), e.grad.numpy()


@pytest.mark.parametrize("seed", [0, 1])
def test_npair_mc_matches_pytorch_metric_learning(seed):
  rng = np.random.default_rng(seed)
  labels = rng.permutation(np.array([0, 0, 0, 1, 1, 2, 2, 3, 4, 4, 4, 4, 5, 6, 6], np.int32))
  embeddings = rng.normal(size=(labels.size, 6))
  expected_value, expected_grad = _pml_value_and_grad(embeddings, labels)
  with jax.enable_x64(True):
    value, grad = jax.value_and_grad(losses.get("npair_mc"))(jnp.asarray(embeddings), jnp.asarray(labels))
  np.testing.assert_allclose(value, expected_value, rtol=1e-4)
  np.testing.assert_allclose(grad, expected_grad, rtol=1e-4, atol=1e-10)


@pytest.mark.parametrize("name", ["npair_mc", "npair_ovo"])
def test_matrix_form_gradients_match_finite_differences(name):
  """check_grads (order 1, fwd and rev, float64) on a rectangular matrix with padded queries and keys."""
  rng = np.random.default_rng(2)
  with jax.enable_x64(True):
    matrix = jnp.asarray(rng.normal(size=(6, 7)))
    query_labels = np.array([0, 1, 2, 0, 3, 1], np.int32)
    key_labels = np.array([1, 0, 2, 3, 0, 2, 1], np.int32)
    query_valid = np.array([True, True, True, True, True, False])
    key_valid = np.array([True, True, True, False, True, True, True])
    fn = getattr(npair, f"{name}_loss")
    loss = lambda m: fn(m, query_labels, key_labels, query_valid=query_valid, key_valid=key_valid, self_offset=None,
                        symmetric=True)
    jtu.check_grads(loss, (matrix,), order=1, modes=("fwd", "rev"), eps=1e-6, atol=1e-6, rtol=1e-5)


def test_bad_hyperparameters_name_the_argument():
  with pytest.raises(TypeError, match="symmetric"):
    losses.get("npair_mc")(HAND_EMBEDDINGS, HAND_LABELS, symmetric="yes")
  with pytest.raises(ValueError, match="l2_reg"):
    losses.get("npair_ovo")(HAND_EMBEDDINGS, HAND_LABELS, l2_reg=-1.0)
  with pytest.raises(ValueError, match="key_labels"):
    npair.npair_mc_loss(jnp.zeros((3, 4)), np.zeros(3, np.int32))

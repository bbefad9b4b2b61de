"""Tests of NormalizedSoftmax (Zhai & Wu 2019), CosFace (Wang et al. 2018), ArcFace (Deng et al. 2019) and Sub-center
ArcFace (Deng et al. 2020).

Reference values come from hand computation with 2-D embeddings and class weights at written-out angles (the target
angle taken with `acos`, an independent path from the losses' `√(1 − cos²)`), and from pytorch-metric-learning's
`NormalizedSoftmaxLoss`, `CosFaceLoss`, `ArcFaceLoss` and `SubCenterArcFaceLoss` with the same weights copied into the
module. Convention differences: PML stores the weights as `[D, C]` (`[D, C * K]`, class-major columns, for sub-centres),
metric_jax as `[C, D]` (`[C * K, D]`), so the copies are transposed; PML's ArcFace margin is in degrees (28.6 ≈ 0.5
rad), metric_jax's in radians.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import test_util as jtu
from pytorch_metric_learning import losses as pml_losses

from metric_jax import losses
from metric_jax.losses import margins
from tests.losses import _pml

e, log = math.exp, math.log


def _unit(degrees, norm=1.0):
  return [norm * math.cos(math.radians(degrees)), norm * math.sin(math.radians(degrees))]


# Class weights at 0, 90 and 180 degrees (norms differ: only directions count). Embeddings at 30 degrees (class 0),
# 120 degrees (class 2) and 170 degrees (class 0: its angle to the class, 170 degrees, plus m = 0.5 rad exceeds 180).
WEIGHT_ANGLES = [0.0, 90.0, 180.0]
WEIGHTS = np.array([_unit(a, n) for a, n in zip(WEIGHT_ANGLES, [1.0, 2.0, 0.3])], np.float32)
EMBEDDING_ANGLES = [30.0, 120.0, 170.0]
EMBEDDINGS = np.array([_unit(a, n) for a, n in zip(EMBEDDING_ANGLES, [1.0, 5.0, 0.2])], np.float32)
LABELS = np.array([0, 2, 0], np.int32)


def _cross_entropy(logits, y):
  return log(sum(e(z) for z in logits)) - logits[y]


def _hand(target_logit, other_logit, weight_angles=WEIGHT_ANGLES):
  """Mean over the rows of the cross-entropy; logits from the angles theta (radians) between row and class."""
  total = 0.0
  for angle, y in zip(EMBEDDING_ANGLES, LABELS):
    thetas = [math.acos(math.cos(math.radians(angle - w))) for w in weight_angles]
    logits = [target_logit(t) if c == y else other_logit(t) for c, t in enumerate(thetas)]
    total += _cross_entropy(logits, y)
  return total / len(LABELS)


@pytest.mark.parametrize("temperature", [0.05, 0.5])
def test_normalized_softmax_hand_computed(temperature):
  expected = _hand(lambda t: math.cos(t) / temperature, lambda t: math.cos(t) / temperature)
  value = losses.get("normalized_softmax")(EMBEDDINGS, LABELS, params={"weights": WEIGHTS}, temperature=temperature)
  np.testing.assert_allclose(value, expected, rtol=1e-5)


@pytest.mark.parametrize("margin,scale", [(0.35, 64.0), (0.2, 4.0)])
def test_cosface_hand_computed(margin, scale):
  expected = _hand(lambda t: scale * (math.cos(t) - margin), lambda t: scale * math.cos(t))
  value = losses.get("cosface")(EMBEDDINGS, LABELS, params={"weights": WEIGHTS}, margin=margin, scale=scale)
  np.testing.assert_allclose(value, expected, rtol=1e-5)


def _psi(theta, m):
  return math.cos(theta + m) if theta + m <= math.pi else math.cos(theta) - m * math.sin(m)


@pytest.mark.parametrize("margin,scale", [(0.5, 64.0), (0.3, 4.0)])
def test_arcface_hand_computed(margin, scale):
  expected = _hand(lambda t: scale * _psi(t, margin), lambda t: scale * math.cos(t))
  value = losses.get("arcface")(EMBEDDINGS, LABELS, params={"weights": WEIGHTS}, margin=margin, scale=scale)
  np.testing.assert_allclose(value, expected, rtol=1e-5)


def test_subcenter_arcface_hand_computed():
  """Two sub-centres per class: class c's cosine is the larger of its two; then ArcFace."""
  sub_angles = [[0.0, 40.0], [90.0, 200.0], [180.0, 260.0]]
  weights = np.array([_unit(a) for pair in sub_angles for a in pair], np.float32)   # rows c * 2 + k
  total = 0.0
  for angle, y in zip(EMBEDDING_ANGLES, LABELS):
    thetas = [min(math.acos(math.cos(math.radians(angle - a))) for a in pair) for pair in sub_angles]
    logits = [4.0 * (_psi(t, 0.5) if c == y else math.cos(t)) for c, t in enumerate(thetas)]
    total += _cross_entropy(logits, y)
  value = losses.get("subcenter_arcface")(EMBEDDINGS, LABELS, params={"weights": weights}, sub_centers=2, scale=4.0)
  np.testing.assert_allclose(value, total / 3, rtol=1e-5)


def test_arcface_target_cosine_is_finite_with_finite_gradient_at_the_ends():
  cosine = jnp.array([-1.0, -0.999, 0.0, 0.999, 1.0, 1.0000001])
  value, grad = jax.vmap(jax.value_and_grad(lambda c: margins.arcface_target_cosine(c, 0.5)))(cosine)
  assert np.isfinite(np.asarray(value)).all() and np.isfinite(np.asarray(grad)).all()
  np.testing.assert_allclose(value[4], math.cos(0.5), rtol=1e-6)
  np.testing.assert_allclose(value[0], -1.0 - 0.5 * math.sin(0.5), rtol=1e-6)


def _random_case(seed, num_classes=5, dim=6, size=16, rows_per_class=1):
  rng = np.random.default_rng(seed)
  labels = rng.permutation(np.arange(size) % (num_classes - 1)).astype(np.int32)
  weights = rng.normal(size=(num_classes * rows_per_class, dim))
  embeddings = rng.normal(size=(size, dim))
  # Rows 0-3 point away from their class (angle > pi - m): ArcFace's extension branch is exercised too.
  class_rows = weights.reshape(num_classes, rows_per_class, dim).mean(axis=1)
  embeddings[:4] = -class_rows[labels[:4]] + 0.05 * rng.normal(size=(4, dim))
  return embeddings, labels, weights


def _ours(name, embeddings, labels, weights, **hparams):
  with jax.enable_x64(True):
    fn = lambda x, w: losses.get(name)(x, jnp.asarray(labels), params={"weights": w}, **hparams)
    value, (grad_x, grad_w) = jax.value_and_grad(fn, argnums=(0, 1))(jnp.asarray(embeddings), jnp.asarray(weights))
  return float(value), np.asarray(grad_x), np.asarray(grad_w)


def _assert_agree(ours, reference):
  for a, b, what in zip(ours, reference, ("value", "embedding gradient", "weight gradient")):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-10, err_msg=what)


@pytest.mark.parametrize("temperature", [0.05, 0.3])
def test_normalized_softmax_matches_pytorch_metric_learning(temperature):
  embeddings, labels, weights = _random_case(1)
  module = pml_losses.NormalizedSoftmaxLoss(num_classes=5, embedding_size=6, temperature=temperature)
  reference = _pml.class_loss(module, "W", weights, embeddings, labels, transposed=True)
  _assert_agree(_ours("normalized_softmax", embeddings, labels, weights, temperature=temperature), reference)


@pytest.mark.parametrize("margin,scale", [(0.35, 64.0), (0.1, 10.0)])
def test_cosface_matches_pytorch_metric_learning(margin, scale):
  embeddings, labels, weights = _random_case(2)
  module = pml_losses.CosFaceLoss(num_classes=5, embedding_size=6, margin=margin, scale=scale)
  reference = _pml.class_loss(module, "W", weights, embeddings, labels, transposed=True)
  _assert_agree(_ours("cosface", embeddings, labels, weights, margin=margin, scale=scale), reference)


@pytest.mark.parametrize("margin,scale", [(0.5, 64.0), (0.2, 10.0)])
def test_arcface_matches_pytorch_metric_learning(margin, scale):
  embeddings, labels, weights = _random_case(3)
  module = pml_losses.ArcFaceLoss(num_classes=5, embedding_size=6, margin=math.degrees(margin), scale=scale)
  reference = _pml.class_loss(module, "W", weights, embeddings, labels, transposed=True)
  _assert_agree(_ours("arcface", embeddings, labels, weights, margin=margin, scale=scale), reference)


@pytest.mark.parametrize("sub_centers,margin,scale", [(3, 0.5, 64.0), (2, 0.3, 10.0)])
def test_subcenter_arcface_matches_pytorch_metric_learning(sub_centers, margin, scale):
  embeddings, labels, weights = _random_case(4, rows_per_class=sub_centers)
  module = pml_losses.SubCenterArcFaceLoss(num_classes=5, embedding_size=6, margin=math.degrees(margin), scale=scale,
                                           sub_centers=sub_centers)
  reference = _pml.class_loss(module, "W", weights, embeddings, labels, transposed=True)
  _assert_agree(_ours("subcenter_arcface", embeddings, labels, weights, sub_centers=sub_centers, margin=margin,
                      scale=scale), reference)


@pytest.mark.parametrize("fn,hparams,columns", [
    (margins.normalized_softmax_loss, {"temperature": 0.5}, 4),
    (margins.cosface_loss, {"scale": 4.0}, 4),
    (margins.arcface_loss, {"scale": 4.0}, 4),
    (margins.subcenter_arcface_loss, {"scale": 4.0, "sub_centers": 2}, 8),
])
def test_matrix_form_gradients_match_finite_differences(fn, hparams, columns):
  """check_grads (order 1, fwd and rev, float64) on a class matrix of cosines with a padded row."""
  rng = np.random.default_rng(3)
  with jax.enable_x64(True):
    matrix = jnp.asarray(rng.uniform(-0.95, 0.95, size=(5, columns)))
    labels = np.array([0, 1, 3, 0, 2], np.int32)
    valid = np.array([True, True, False, True, True])
    jtu.check_grads(jax.jit(lambda m: fn(m, labels, query_valid=valid, **hparams)), (matrix,), order=1, modes=("fwd", "rev"),
                    eps=1e-6, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("name", ["normalized_softmax", "cosface", "arcface", "subcenter_arcface"])
def test_bad_params_and_labels_name_the_argument(name):
  fn = losses.get(name)
  rows = 3 * (3 if name == "subcenter_arcface" else 1)
  weights = np.ones((rows, 2), np.float32)
  with pytest.raises(TypeError, match=r"`params` is required"):
    fn(EMBEDDINGS, LABELS)
  with pytest.raises(TypeError, match=r"`params` .* must be a dict"):
    fn(EMBEDDINGS, LABELS, params=weights)
  with pytest.raises(ValueError, match=r"params\['weights'\].*dimension"):
    fn(EMBEDDINGS, LABELS, params={"weights": np.ones((rows, 3), np.float32)})
  with pytest.raises(ValueError, match=r"`labels` must lie in"):
    fn(EMBEDDINGS, np.array([0, 1, -1], np.int32), params={"weights": weights})
  with pytest.raises(ValueError, match=r"`labels` must be integer class ids \[B\]"):
    fn(EMBEDDINGS, np.eye(3, dtype=bool), params={"weights": weights})
  if name == "subcenter_arcface":
    with pytest.raises(ValueError, match=r"params\['weights'\].*multiple of `sub_centers`"):
      fn(EMBEDDINGS, LABELS, params={"weights": np.ones((8, 2), np.float32)})


@pytest.mark.parametrize("name,hparams,argument", [
    ("normalized_softmax", {"temperature": 0.0}, "temperature"),
    ("cosface", {"scale": -1.0}, "scale"),
    ("cosface", {"margin": -0.1}, "margin"),
    ("arcface", {"margin": 4.0}, "margin"),
    ("arcface", {"scale": 0.0}, "scale"),
    ("subcenter_arcface", {"sub_centers": 0}, "sub_centers"),
])
def test_bad_hyperparameters_name_the_argument(name, hparams, argument):
  rows = 9 if name == "subcenter_arcface" else 3
  with pytest.raises((ValueError, TypeError), match=argument):
    losses.get(name)(EMBEDDINGS, LABELS, params={"weights": np.ones((rows, 2), np.float32)}, **hparams)


def test_subcenter_registry_form_equals_the_matrix_form_on_class_major_columns():
  embeddings, labels, weights = _random_case(5, rows_per_class=3)
  unit = lambda a: a / np.linalg.norm(a, axis=1, keepdims=True)
  matrix = unit(embeddings) @ unit(weights).T                        # column c * K + k
  with jax.enable_x64(True):
    expected = margins.subcenter_arcface_loss(jnp.asarray(matrix), labels, scale=8.0)
    value = losses.get("subcenter_arcface")(jnp.asarray(embeddings), labels, params={"weights": jnp.asarray(weights)},
                                            scale=8.0)
  np.testing.assert_allclose(value, expected, rtol=1e-10)

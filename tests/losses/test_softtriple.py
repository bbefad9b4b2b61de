"""Tests of the SoftTriple loss (Qian et al. 2019).

Reference values come from hand computation with 2-D embeddings and centres at written-out angles (the centre
regularizer from chord lengths `2 sin(Δ/2)`, an independent path from `√(2 − 2 cos)`), and from
pytorch-metric-learning's `SoftTripleLoss(num_classes, embedding_size, centers_per_class, la, gamma, margin)` with the
same centres copied into the module. Convention differences: PML stores the centres as `[D, C * K]` (class-major
columns; metric_jax `[C * K, D]`, class-major rows), names λ `la`, and has no centre regularizer, so the comparison
uses `tau=0`.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import test_util as jtu
from pytorch_metric_learning import losses as pml_losses

from metric_jax import losses
from metric_jax.losses import softtriple
from tests.losses import _pml

e, log = math.exp, math.log


def _unit(degrees, norm=1.0):
  return [norm * math.cos(math.radians(degrees)), norm * math.sin(math.radians(degrees))]


# Two classes with two centres each: class 0 at 0 and 50 degrees, class 1 at 120 and 200 degrees.
CENTER_ANGLES = [[0.0, 50.0], [120.0, 200.0]]
CENTERS = np.array([_unit(a, 1.0 + 0.5 * k) for pair in CENTER_ANGLES for k, a in enumerate(pair)], np.float32)
EMBEDDING_ANGLES = [20.0, 150.0, 80.0]
EMBEDDINGS = np.array([_unit(a, 2.0) for a in EMBEDDING_ANGLES], np.float32)
LABELS = np.array([0, 1, 1], np.int32)


def _hand(scale, gamma, margin, tau):
  total = 0.0
  for angle, y in zip(EMBEDDING_ANGLES, LABELS):
    relaxed = []
    for pair in CENTER_ANGLES:
      s = [math.cos(math.radians(angle - a)) for a in pair]
      w = [e(v / gamma) for v in s]
      relaxed.append(sum(wk * sk for wk, sk in zip(w, s)) / sum(w))
    logits = [scale * (r - (margin if c == y else 0.0)) for c, r in enumerate(relaxed)]
    total += log(sum(e(z) for z in logits)) - logits[y]
  chords = sum(2 * math.sin(math.radians(abs(b - a)) / 2) for a, b in CENTER_ANGLES)
  return total / 3 + tau * chords / (2 * 2 * 1)        # R / (C K (K - 1)), C = K = 2


@pytest.mark.parametrize("scale,gamma,margin,tau", [(20.0, 0.1, 0.01, 0.2), (5.0, 0.5, 0.2, 0.0), (2.0, 1.0, 0.0, 1.0)])
def test_hand_computed(scale, gamma, margin, tau):
  value = losses.get("softtriple")(EMBEDDINGS, LABELS, params={"weights": CENTERS}, centers_per_class=2, scale=scale,
                                   gamma=gamma, margin=margin, tau=tau)
  np.testing.assert_allclose(value, _hand(scale, gamma, margin, tau), rtol=1e-5)


def test_regularizer_is_zero_for_one_centre_and_for_merged_centres_with_finite_gradient():
  assert float(softtriple.softtriple_regularizer(CENTERS, centers_per_class=1)) == 0.0
  merged = np.repeat(CENTERS[::2], 2, axis=0)              # each class's two centres coincide
  value, grad = jax.value_and_grad(softtriple.softtriple_regularizer)(jnp.asarray(merged), 2)
  assert abs(float(value)) < 1e-6 and np.isfinite(np.asarray(grad)).all()


def _random_case(seed, centers_per_class, num_classes=5, dim=6, size=16):
  rng = np.random.default_rng(seed)
  labels = rng.permutation(np.arange(size) % (num_classes - 1)).astype(np.int32)
  return rng.normal(size=(size, dim)), labels, rng.normal(size=(num_classes * centers_per_class, dim))


@pytest.mark.parametrize("centers_per_class,scale,gamma,margin", [(10, 20.0, 0.1, 0.01), (3, 8.0, 0.5, 0.1)])
def test_matches_pytorch_metric_learning(centers_per_class, scale, gamma, margin):
  embeddings, labels, centers = _random_case(centers_per_class, centers_per_class)
  module = pml_losses.SoftTripleLoss(num_classes=5, embedding_size=6, centers_per_class=centers_per_class, la=scale,
                                     gamma=gamma, margin=margin)
  reference = _pml.class_loss(module, "fc", centers, embeddings, labels, transposed=True)
  with jax.enable_x64(True):
    fn = lambda x, w: losses.get("softtriple")(x, jnp.asarray(labels), params={"weights": w},
                                               centers_per_class=centers_per_class, scale=scale, gamma=gamma,
                                               margin=margin, tau=0.0)
    value, grads = jax.value_and_grad(fn, argnums=(0, 1))(jnp.asarray(embeddings), jnp.asarray(centers))
  for a, b, what in zip((value, *grads), reference, ("value", "embedding gradient", "centre gradient")):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-10, err_msg=what)


def test_gradients_match_finite_differences_with_the_regularizer():
  """check_grads in float64 w.r.t. embeddings and centres together (the regularizer reaches the centres only)."""
  embeddings, labels, centers = _random_case(5, 3)
  with jax.enable_x64(True):
    fn = jax.jit(lambda x, w: losses.get("softtriple")(x, jnp.asarray(labels), params={"weights": w},
                                                       centers_per_class=3, tau=0.5))
    jtu.check_grads(fn, (jnp.asarray(embeddings), jnp.asarray(centers)), order=1, modes=("fwd", "rev"), eps=1e-6,
                    atol=1e-6, rtol=1e-5)
    matrix = jnp.asarray(np.random.default_rng(1).uniform(-1, 1, size=(5, 6)))
    valid = np.array([True, False, True, True, True])
    jtu.check_grads(jax.jit(lambda m: softtriple.softtriple_loss(m, labels[:5] % 2, query_valid=valid,
                                                                 centers_per_class=3)),
                    (matrix,), order=1, modes=("fwd", "rev"), eps=1e-6, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("hparams,argument,error", [
    ({"centers_per_class": 0}, "centers_per_class", ValueError),
    ({"centers_per_class": 3}, "centers_per_class", ValueError),     # 4 centre rows are not a multiple of 3
    ({"scale": 0.0}, "scale", ValueError),
    ({"gamma": -1.0}, "gamma", ValueError),
    ({"margin": -0.1}, "margin", ValueError),
    ({"tau": -0.2}, "tau", ValueError),
])
def test_bad_hyperparameters_name_the_argument(hparams, argument, error):
  hparams = {"centers_per_class": 2, **hparams}
  with pytest.raises(error, match=argument):
    losses.get("softtriple")(EMBEDDINGS, LABELS, params={"weights": CENTERS}, **hparams)


def test_bad_params_and_labels_name_the_argument():
  fn = losses.get("softtriple")
  with pytest.raises(TypeError, match="`params` is required"):
    fn(EMBEDDINGS, LABELS, centers_per_class=2)
  with pytest.raises(ValueError, match=r"params.*'weights'"):
    fn(EMBEDDINGS, LABELS, params={"centers": CENTERS}, centers_per_class=2)
  with pytest.raises(ValueError, match=r"`labels` must lie in 0 \.\.\. 1"):
    fn(EMBEDDINGS, np.array([0, 1, 2], np.int32), params={"weights": CENTERS}, centers_per_class=2)
  with pytest.raises(ValueError, match=r"`labels` must be integer class ids"):
    fn(EMBEDDINGS, np.eye(3, 2, dtype=bool), params={"weights": CENTERS}, centers_per_class=2)


def test_registry_form_equals_the_matrix_form_on_class_major_columns():
  """The registry form works on centre-major columns internally; the matrix form takes PML's class-major layout."""
  embeddings, labels, centers = _random_case(6, 3)
  unit = lambda a: a / np.linalg.norm(a, axis=1, keepdims=True)
  matrix = unit(embeddings) @ unit(centers).T                       # column c * K + k
  with jax.enable_x64(True):
    expected = softtriple.softtriple_loss(jnp.asarray(matrix), labels, centers_per_class=3)
    value = losses.get("softtriple")(jnp.asarray(embeddings), labels, params={"weights": jnp.asarray(centers)},
                                     centers_per_class=3, tau=0.0)
  np.testing.assert_allclose(value, expected, rtol=1e-10)

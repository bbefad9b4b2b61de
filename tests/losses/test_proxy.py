"""Tests of Proxy-NCA (Movshovitz-Attias et al. 2017) and Proxy-Anchor (Kim et al. 2020).

Reference values come from hand computation on 2-D embeddings and proxies at written-out angles, and from
pytorch-metric-learning's `ProxyNCALoss(num_classes, embedding_size, softmax_scale)` and
`ProxyAnchorLoss(num_classes, embedding_size, margin, alpha)` with the same proxies copied into the module (both store
proxies `[C, D]`, like metric_jax), comparing the gradients with respect to the embeddings and to the proxies.
Convention difference: PML's `ProxyNCALoss` is the softmax over all proxies (positive in the denominator,
`positive_in_denominator=True` here); the default here is the paper's Eq. 9 (negatives only), checked by hand.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import test_util as jtu
from pytorch_metric_learning import losses as pml_losses

from metric_jax import losses
from metric_jax.losses import proxy
from tests.losses import _pml

e, log = math.exp, math.log


def _unit(degrees, norm=1.0):
  return [norm * math.cos(math.radians(degrees)), norm * math.sin(math.radians(degrees))]


# Embeddings at 0 and 90 degrees (norms 3 and 0.5: only directions count), proxies at 0, 90, 180 degrees.
NCA_EMBEDDINGS = np.array([_unit(0, 3.0), _unit(90, 0.5)], np.float32)
NCA_LABELS = np.array([0, 2], np.int32)
NCA_PROXIES = np.array([_unit(0), _unit(90, 0.5), _unit(180, 2.0)], np.float32)


@pytest.mark.parametrize("scale", [1.0, 3.0])
@pytest.mark.parametrize("positive_in_denominator", [False, True])
def test_proxy_nca_hand_computed(scale, positive_in_denominator):
  # Squared distances of unit vectors 2 - 2 cos: x0 -> (0, 2, 4), x1 -> (2, 0, 2); x0 is class 0, x1 class 2.
  def term(d, y):
    others = [e(-scale * dc) for c, dc in enumerate(d) if positive_in_denominator or c != y]
    return scale * d[y] + log(sum(others))
  expected = (term([0, 2, 4], 0) + term([2, 0, 2], 2)) / 2
  value = losses.get("proxy_nca")(NCA_EMBEDDINGS, NCA_LABELS, params={"proxies": NCA_PROXIES}, softmax_scale=scale,
                                  positive_in_denominator=positive_in_denominator)
  np.testing.assert_allclose(value, expected, rtol=1e-5, atol=1e-6)


def test_proxy_nca_one_class_paper_form_is_zero():
  """With a single proxy the paper's denominator (other classes) is empty: the term is 0, with a zero gradient."""
  fn = lambda x: losses.get("proxy_nca")(x, np.zeros(2, np.int32), params={"proxies": NCA_PROXIES[:1]})
  value, grad = jax.value_and_grad(fn)(NCA_EMBEDDINGS)
  assert float(value) == 0.0 and not np.asarray(grad).any()


# Proxy-Anchor: embeddings at 0, 60, 90 degrees, proxies at 0, 90 (and 180) degrees.
ANCHOR_EMBEDDINGS = np.array([_unit(0), _unit(60, 2.0), _unit(90)], np.float32)
ANCHOR_PROXIES = np.array([_unit(0), _unit(90), _unit(180)], np.float32)
R3 = math.sqrt(3) / 2


def _anchor_hand(pos_sets, neg_sets, alpha, delta):
  """Sums of the paper's formula; pos_sets / neg_sets hold each proxy's cosines to its positives / negatives."""
  with_pos = [s for s in pos_sets if s]
  pos = sum(log(1 + sum(e(-alpha * (c - delta)) for c in s)) for s in with_pos) / len(with_pos)
  neg = sum(log(1 + sum(e(alpha * (c + delta)) for c in s)) for s in neg_sets) / len(neg_sets)
  return pos + neg


@pytest.mark.parametrize("alpha,delta", [(2.0, 0.1), (32.0, 0.1), (4.0, 0.0)])
def test_proxy_anchor_hand_computed(alpha, delta):
  # Labels 0, 0, 1 and three proxies: proxy 2 has no positive (not in P+) but counts among the negatives' C = 3.
  cos = {0: [1.0, 0.5, 0.0], 1: [0.0, R3, 1.0], 2: [-1.0, -0.5, 0.0]}
  expected = _anchor_hand(pos_sets=[[1.0, 0.5], [1.0], []],
                          neg_sets=[[cos[0][2]], [cos[1][0], cos[1][1]], cos[2]], alpha=alpha, delta=delta)
  value = losses.get("proxy_anchor")(ANCHOR_EMBEDDINGS, np.array([0, 0, 1], np.int32),
                                     params={"proxies": ANCHOR_PROXIES}, alpha=alpha, margin=delta)
  np.testing.assert_allclose(value, expected, rtol=1e-5)


def test_proxy_anchor_multi_hot_hand_computed():
  """Row 1 carries classes 0 and 1: it is a positive of both proxies and a negative of proxy 2 only."""
  alpha, delta = 2.0, 0.1
  multi_hot = np.array([[1, 0, 0], [1, 1, 0], [0, 1, 0]], np.int32)
  expected = _anchor_hand(pos_sets=[[1.0, 0.5], [R3, 1.0], []],
                          neg_sets=[[0.0], [0.0], [-1.0, -0.5, 0.0]], alpha=alpha, delta=delta)
  value = losses.get("proxy_anchor")(ANCHOR_EMBEDDINGS, multi_hot, params={"proxies": ANCHOR_PROXIES},
                                     alpha=alpha, margin=delta)
  np.testing.assert_allclose(value, expected, rtol=1e-5)
  one_hot = np.eye(3, dtype=bool)[[0, 0, 1]]      # one-hot rows give the class-id value exactly
  np.testing.assert_allclose(
      losses.get("proxy_anchor")(ANCHOR_EMBEDDINGS, one_hot, params={"proxies": ANCHOR_PROXIES}),
      losses.get("proxy_anchor")(ANCHOR_EMBEDDINGS, np.array([0, 0, 1], np.int32), params={"proxies": ANCHOR_PROXIES}),
      rtol=1e-7)


def _random_case(seed, num_classes=5, dim=6, size=16):
  rng = np.random.default_rng(seed)
  labels = rng.permutation(np.arange(size) % (num_classes - 1))    # the last class has no sample in the batch
  return rng.normal(size=(size, dim)), labels.astype(np.int32), rng.normal(size=(num_classes, dim))


def _ours(name, embeddings, labels, proxies, **hparams):
  with jax.enable_x64(True):
    fn = lambda x, p: losses.get(name)(x, jnp.asarray(labels), params={"proxies": p}, **hparams)
    value, (grad_x, grad_p) = jax.value_and_grad(fn, argnums=(0, 1))(jnp.asarray(embeddings), jnp.asarray(proxies))
  return float(value), np.asarray(grad_x), np.asarray(grad_p)


def _assert_agree(ours, reference):
  for a, b, what in zip(ours, reference, ("value", "embedding gradient", "proxy gradient")):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-10, err_msg=what)


@pytest.mark.parametrize("scale", [1.0, 8.0])
def test_proxy_nca_matches_pytorch_metric_learning(scale):
  embeddings, labels, proxies = _random_case(int(scale))
  module = pml_losses.ProxyNCALoss(num_classes=5, embedding_size=6, softmax_scale=scale)
  reference = _pml.class_loss(module, "proxies", proxies, embeddings, labels, transposed=False)
  _assert_agree(_ours("proxy_nca", embeddings, labels, proxies, softmax_scale=scale, positive_in_denominator=True),
                reference)


@pytest.mark.parametrize("margin,alpha", [(0.1, 32.0), (0.2, 8.0)])
def test_proxy_anchor_matches_pytorch_metric_learning(margin, alpha):
  embeddings, labels, proxies = _random_case(7)
  module = pml_losses.ProxyAnchorLoss(num_classes=5, embedding_size=6, margin=margin, alpha=alpha)
  reference = _pml.class_loss(module, "proxies", proxies, embeddings, labels, transposed=False)
  _assert_agree(_ours("proxy_anchor", embeddings, labels, proxies, margin=margin, alpha=alpha), reference)


@pytest.mark.parametrize("name,hparams", [("proxy_nca", {"softmax_scale": 2.0}),
                                          ("proxy_anchor", {"alpha": 4.0})])
def test_matrix_form_gradients_match_finite_differences(name, hparams):
  """check_grads (order 1, fwd and rev, float64) on a class matrix with a padded row."""
  rng = np.random.default_rng(3)
  fn = {"proxy_nca": proxy.proxy_nca_loss, "proxy_anchor": proxy.proxy_anchor_loss}[name]
  with jax.enable_x64(True):
    matrix = jnp.asarray(rng.uniform(-1.0, 1.0, size=(5, 4)) + (1.0 if name == "proxy_nca" else 0.0))
    labels = np.array([0, 1, 3, 0, 1], np.int32)
    valid = np.array([True, True, False, True, True])
    jtu.check_grads(jax.jit(lambda m: fn(m, labels, query_valid=valid, **hparams)), (matrix,), order=1, modes=("fwd", "rev"),
                    eps=1e-6, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("name", ["proxy_nca", "proxy_anchor"])
def test_bad_params_and_labels_name_the_argument(name):
  fn = losses.get(name)
  x, y, proxies = NCA_EMBEDDINGS, NCA_LABELS, NCA_PROXIES
  with pytest.raises(TypeError, match=r"`params` is required.*init_params"):
    fn(x, y)
  with pytest.raises(ValueError, match=r"params.*'proxies'"):
    fn(x, y, params={"weights": proxies})
  with pytest.raises(ValueError, match=r"params\['proxies'\].*dimension"):
    fn(x, y, params={"proxies": proxies[:, :1]})
  with pytest.raises(TypeError, match=r"params\['proxies'\]"):
    fn(x, y, params={"proxies": proxies.astype(np.int32)})
  with pytest.raises(ValueError, match=r"`labels` must lie in 0 \.\.\. 2"):
    fn(x, np.array([0, 3], np.int32), params={"proxies": proxies})
  # Out-of-range labels of padded rows are ignored; under jit an out-of-range label of a valid row gives NaN.
  assert np.isfinite(fn(x, np.array([0, 3], np.int32), params={"proxies": proxies}, valid=np.array([True, False])))
  assert np.isnan(jax.jit(lambda y_: fn(x, y_, params={"proxies": proxies}))(np.array([0, 3], np.int32)))


def test_multi_hot_labels():
  multi_hot = np.array([[1, 0, 1], [0, 1, 0]], np.int32)
  with pytest.raises(ValueError, match=r"`labels` must be integer class ids \[B\] for loss 'proxy_nca'"):
    losses.get("proxy_nca")(NCA_EMBEDDINGS, multi_hot, params={"proxies": NCA_PROXIES})
  with pytest.raises(ValueError, match=r"multi-hot `labels` have 2 columns but there are 3 classes"):
    losses.get("proxy_anchor")(NCA_EMBEDDINGS, multi_hot[:, :2], params={"proxies": NCA_PROXIES})


@pytest.mark.parametrize("name,hparams,argument", [
    ("proxy_nca", {"softmax_scale": 0.0}, "softmax_scale"),
    ("proxy_nca", {"positive_in_denominator": 1}, "positive_in_denominator"),
    ("proxy_anchor", {"alpha": -1.0}, "alpha"),
    ("proxy_anchor", {"margin": -0.1}, "margin"),
])
def test_bad_hyperparameters_name_the_argument(name, hparams, argument):
  with pytest.raises((ValueError, TypeError), match=argument):
    losses.get(name)(NCA_EMBEDDINGS, NCA_LABELS, params={"proxies": NCA_PROXIES}, **hparams)

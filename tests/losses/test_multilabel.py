"""Multi-hot labels `[B, L]` in the losses (issue 12): a pair is positive when the rows share at least one label.

- Every registry loss that accepts multi-hot labels gives, for a single-label batch written as one-hot rows, the value
  and gradient it gives for the class ids (the pair masks are identical, so the results are too).
- Hand-computed values for overlapping labels ({a}, {a, b}, {b}, {c}: positives are not transitive), and a brute-force
  NumPy reference of the all-triplets loss on random multi-hot labels.
- The losses that cannot take multi-hot labels (N-pair: one class per tuple; the softmax classifiers and Proxy-NCA:
  one target class per sample) refuse them with an error naming `labels`; bad label shapes are errors too.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metric_jax import losses
from metric_jax.losses import supcon
from tests.losses._loss_cases import DEFAULT_CASES

B, D, L = 12, 6, 4
MULTI_HOT_NAMES = tuple(case.name for case in DEFAULT_CASES if losses.accepts_multi_hot(case.name))
REFUSING = tuple(name for name in losses.names() if not losses.accepts_multi_hot(name))


def test_which_losses_refuse_multi_hot_labels():
  assert sorted(REFUSING) == sorted(["npair_mc", "npair_ovo", "proxy_nca", "normalized_softmax", "cosface",
                                     "arcface", "subcenter_arcface", "softtriple"])


def _batch(seed=0):
  rng = np.random.default_rng(seed)
  embeddings = (rng.normal(size=(B, D)) / np.sqrt(D)).astype(np.float32)
  labels = rng.permutation(np.arange(B) % L).astype(np.int32)
  return embeddings, labels


@functools.lru_cache(maxsize=None)
def _compiled(name):
  fn = losses.get(name)
  return jax.jit(jax.value_and_grad(lambda e, l, v: fn(e, l, valid=v)))


@pytest.mark.parametrize("dtype", [bool, np.int32])
@pytest.mark.parametrize("name", MULTI_HOT_NAMES)
def test_one_hot_labels_give_the_class_id_value_and_gradient(name, dtype):
  embeddings, labels = _batch(1)
  valid = np.arange(B) != 7
  value, grad = _compiled(name)(embeddings, labels, valid)
  one_hot = np.eye(L, dtype=dtype)[labels]
  hot_value, hot_grad = _compiled(name)(embeddings, one_hot, valid)
  assert float(jnp.max(jnp.abs(grad))) > 0
  np.testing.assert_allclose(hot_value, value, rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(hot_grad, grad, rtol=1e-6, atol=1e-7 * max(1.0, float(jnp.max(jnp.abs(grad)))))


def test_proxy_anchor_one_hot_labels_give_the_class_id_value_and_gradients():
  embeddings, labels = _batch(2)
  params = losses.init_params("proxy_anchor", jax.random.PRNGKey(0), num_classes=L, embedding_dim=D)
  fn = jax.jit(jax.value_and_grad(lambda e, p, l: losses.get("proxy_anchor")(e, l, params=p), argnums=(0, 1)))
  value, (ge, gp) = fn(embeddings, params, labels)
  hot_value, (hot_ge, hot_gp) = fn(embeddings, params, np.eye(L, dtype=bool)[labels])
  np.testing.assert_allclose(hot_value, value, rtol=1e-6)
  np.testing.assert_allclose(hot_ge, ge, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(hot_gp["proxies"], gp["proxies"], rtol=1e-6, atol=1e-6)


# 1-D embeddings at 0, 0.5, 0.8, 1.1 with labels {a}, {a, b}, {b}, {c}: positive pairs (0, 1) and (1, 2) only.
LINE = np.array([[0.0], [0.5], [0.8], [1.1]], np.float32)
OVERLAPPING = np.array([[1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 1]], np.int32)


def test_contrastive_hand_computed_with_overlapping_labels():
  # Positives (each ordered pair once): D01 = 0.5, D12 = 0.3 -> mean of the non-zero terms 0.4.
  # Negatives [1 - D]+: D02 = 0.8 -> 0.2, D03 = 1.1 -> 0, D13 = 0.6 -> 0.4, D23 = 0.3 -> 0.7 -> mean (0.2+0.4+0.7)/3.
  expected = 0.4 + 1.3 / 3
  np.testing.assert_allclose(losses.get("contrastive")(LINE, OVERLAPPING), expected, rtol=1e-5)


def test_triplet_hand_computed_with_overlapping_labels():
  # Anchor 1 has positives 0 and 2 (which are each other's negatives) and negative 3:
  #   [D10 - D13 + 0.2]+ = [0.5 - 0.6 + 0.2]+ = 0.1, [D12 - D13 + 0.2]+ = [0.3 - 0.6 + 0.2]+ = 0.
  # Anchor 0: positive 1, negatives 2, 3: [0.5 - 0.8 + 0.2]+ = 0, [0.5 - 1.1 + 0.2]+ = 0.
  # Anchor 2: positive 1, negatives 0, 3: [0.3 - 0.8 + 0.2]+ = 0, [0.3 - 0.3 + 0.2]+ = 0.2.  Anchor 3: no positive.
  np.testing.assert_allclose(losses.get("triplet")(LINE, OVERLAPPING), (0.1 + 0.2) / 2, rtol=1e-5)  # non-zero mean


def test_supcon_hand_computed_with_overlapping_labels():
  s = np.array([[1.0, 0.6, 0.2, -0.1],
                [0.6, 1.0, 0.4, 0.3],
                [0.2, 0.4, 1.0, 0.5],
                [-0.1, 0.3, 0.5, 1.0]], np.float32)
  tau = 0.5
  positives = {0: [1], 1: [0, 2], 2: [1]}           # row 3 ({c}) has none
  terms = []
  for i, pos in positives.items():
    log_denominator = np.log(sum(np.exp(s[i, a] / tau) for a in range(4) if a != i))
    terms.append(np.mean([log_denominator - s[i, p] / tau for p in pos]))
  np.testing.assert_allclose(supcon.supcon_loss(s, OVERLAPPING, temperature=tau), np.mean(terms), rtol=1e-5)


def _all_triplets_reference(x, multi_hot, margin=0.2):
  """Brute force over (a, p, n): p shares a label with a, n shares none; mean of the non-zero hinge terms."""
  d = np.sqrt(((x[:, None] - x[None]) ** 2).sum(-1))
  shared = (multi_hot @ multi_hot.T) > 0
  terms = [max(d[a, p] - d[a, n] + margin, 0.0)
           for a in range(len(x)) for p in range(len(x)) for n in range(len(x))
           if p != a and shared[a, p] and not shared[a, n]]
  nonzero = [t for t in terms if t > 0]
  return sum(nonzero) / len(nonzero) if nonzero else 0.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_all_triplets_match_brute_force_on_random_multi_hot_labels(seed):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(B, 3)) / 2
  multi_hot = (rng.uniform(size=(B, 5)) < 0.3).astype(np.int32)
  with jax.enable_x64(True):
    value = losses.get("triplet")(jnp.asarray(x), multi_hot)
  np.testing.assert_allclose(value, _all_triplets_reference(x, multi_hot), rtol=1e-10)


@pytest.mark.parametrize("name", REFUSING)
def test_losses_without_multi_hot_support_refuse_it_naming_labels(name):
  embeddings, labels = _batch()
  kwargs = {}
  if losses.has_params(name):
    kwargs["params"] = losses.init_params(name, jax.random.PRNGKey(0), num_classes=L, embedding_dim=D)
  with pytest.raises(ValueError, match=r"`labels` must be integer class ids \[B\]"):
    losses.get(name)(embeddings, np.eye(L, dtype=bool)[labels], **kwargs)


@pytest.mark.parametrize("labels,error", [
    (np.ones((B, 1), np.int32), ValueError),             # [B, 1] is ambiguous
    (np.ones((B - 1, L), bool), ValueError),             # wrong number of rows
    (np.full((B, L), 0.5, np.float32), TypeError),       # not booleans / integers
    (np.full((B, L), 2, np.int32), ValueError),          # not 0/1
    (np.ones((B, L, 2), bool), ValueError),              # 3-D
])
@pytest.mark.parametrize("name", ["contrastive", "supcon", "triplet"])
def test_bad_multi_hot_labels_name_the_argument(name, labels, error):
  embeddings, _ = _batch()
  with pytest.raises(error, match=r"\blabels\b"):
    losses.get(name)(embeddings, labels)

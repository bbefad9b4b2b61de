"""The loss contract, checked for every registry loss (issue #2, must-holds 2, 3, 4 and 8).

For each entry of `_loss_cases.CASES` (every registry name with its defaults plus option combos), through
`metric_jax.losses.get(name)`:
- gradients agree with finite differences (`jax.test_util.check_grads`, order 1, forward and reverse mode, float64);
- `jax.jit` gives what eager execution gives; `jax.vmap` over 3 batches gives what a Python loop gives;
- padded rows (`valid=False`, garbage and huge values, garbage labels, anywhere in the batch) change neither the value
  nor the gradient of the real rows, and get a zero gradient themselves;
- degenerate batches (zero, duplicated, huge embeddings; one class; all labels distinct; a single valid row) give finite
  values and gradients, and 0 with a zero gradient where the loss has no term to compute; the same, property-based, over
  shapes and label patterns (hypothesis);
- bad arguments raise a ValueError / TypeError whose message names the argument.

A name missing from the registry fails every test of its cases. Shapes are fixed per test (the hypothesis test embeds
each drawn `[b, d]` batch into a fixed `[12, 8]` one through `valid` and zero columns) so each case compiles a handful of
times only.
"""

from __future__ import annotations

import functools
import re

import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import test_util as jtu

from metric_jax import losses
from tests.losses._loss_cases import CASES, DEFAULT_CASES, REGISTRY_NAMES

B, D = 12, 8          # the batch shape every test compiles for
PADDED_B = 16         # B real rows + 4 padded rows
CASE_BY_ID = {case.id: case for case in CASES}
CASE_IDS = [case.id for case in CASES]


def _hparams(case_id: str, zero: bool = False) -> tuple:
  case = CASE_BY_ID[case_id]
  hparams = dict(case.hparams)
  if zero:
    hparams.update(case.zero_hparams)
  return case.name, tuple(sorted(hparams.items()))


def _loss(case_id: str, zero: bool = False):
  """The registry function with the case's hyperparameters bound (fails the test if the name is not registered)."""
  name, hparams = _hparams(case_id, zero)
  return functools.partial(losses.get(name), **dict(hparams))


def _jit_value_and_grad(case_id: str, zero: bool = False):
  """`jit(value_and_grad)` of the loss in `(embeddings, labels, valid)`; one per distinct (name, hparams)."""
  return _compiled(*_hparams(case_id, zero))


@functools.lru_cache(maxsize=None)
def _compiled(name: str, hparams: tuple):
  loss = functools.partial(losses.get(name), **dict(hparams))
  return jax.jit(jax.value_and_grad(lambda e, l, v: loss(e, l, valid=v)))


def _labels(num_classes: int, size: int = B, seed: int = 0):
  """`size` labels with every class present (round robin), shuffled."""
  rng = np.random.default_rng(seed)
  return rng.permutation(np.arange(size) % num_classes).astype(np.int32)


def _embeddings(seed: int, size: int = B, dim: int = D, dtype=np.float32):
  """Random embeddings with norms around 1, the scale the losses' default margins are set for."""
  rng = np.random.default_rng(seed)
  return (rng.normal(size=(size, dim)) / np.sqrt(dim)).astype(dtype)


def _all_valid(size: int = B):
  return np.ones((size,), dtype=bool)


def _assert_close(actual, expected, rtol=1e-5, atol=1e-6, what=""):
  np.testing.assert_allclose(np.asarray(actual), np.asarray(expected), rtol=rtol, atol=atol, err_msg=what)


def _assert_finite(value, grad, what=""):
  assert np.isfinite(np.asarray(value)).all(), f"{what}: loss value is not finite: {value}"
  grad = np.asarray(grad)
  assert np.isfinite(grad).all(), f"{what}: gradient is not finite at rows {np.nonzero(~np.isfinite(grad))[0]}"


# ------------------------------------------------------------------------------------------------ must-hold 2: gradients
@pytest.mark.parametrize("case_id", CASE_IDS)
def test_gradient_matches_finite_differences_in_float64(case_id):
  labels, embeddings = _labels(4), _embeddings(1, dtype=np.float64)
  # The check is only meaningful where the loss is active: random inputs with norms ~1, away from the hinges' kinks.
  _, grad32 = _jit_value_and_grad(case_id)(embeddings.astype(np.float32), labels, _all_valid())
  assert float(jnp.max(jnp.abs(grad32))) > 1e-4, f"{case_id}: zero gradient at the random test point"
  case = CASE_BY_ID[case_id]
  hparams = dict(case.hparams)
  hparams.update(case.value_derivative_hparams)   # the value's derivative; the weighted gradient is checked below
  with jax.enable_x64(True):
    loss = functools.partial(losses.get(case.name), **hparams)
    fn = jax.jit(lambda e: loss(e, jnp.asarray(labels)))
    assert fn(jnp.asarray(embeddings)).dtype == jnp.float64
    jtu.check_grads(fn, (jnp.asarray(embeddings),), order=1, modes=("fwd", "rev"), eps=1e-6, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("case_id", [case.id for case in CASES if case.stop_gradient_weights])
def test_stop_gradient_weighted_losses_forward_and_reverse_modes_agree(case_id):
  """`<v, J^T u> == <J v, u>` for the GPW losses whose weights are stopped-gradient functions of the distances."""
  labels, embeddings = _labels(4), _embeddings(1, dtype=np.float64)
  tangent = np.random.default_rng(3).normal(size=embeddings.shape)
  with jax.enable_x64(True):
    loss = _loss(case_id)
    fn = lambda e: loss(e, jnp.asarray(labels))
    _, jvp_out = jax.jit(lambda e, t: jax.jvp(fn, (e,), (t,)))(embeddings, tangent)
    grad = jax.jit(jax.grad(fn))(embeddings)
    assert float(jnp.max(jnp.abs(grad))) > 1e-6
    _assert_close(jnp.vdot(grad, tangent), jvp_out, rtol=1e-10, atol=1e-12, what="<grad, v> vs jvp(v)")


# ------------------------------------------------------------------------------- must-hold 3: jit, vmap and padding
@pytest.mark.parametrize("case_id", CASE_IDS)
def test_jit_matches_eager(case_id):
  loss = _loss(case_id)
  labels, embeddings = _labels(3), _embeddings(2)
  eager_value, eager_grad = jax.value_and_grad(lambda e: loss(e, labels))(jnp.asarray(embeddings))
  jit_value, jit_grad = _jit_value_and_grad(case_id)(embeddings, labels, _all_valid())
  _assert_close(jit_value, eager_value, what="value")
  # Rounding differences between fused and op-by-op execution scale with the gradient's size (circle's gamma = 80
  # and 256 give entries of 30-70 and amplify a 1-ulp cosine difference to ~1e-5): atol relative to the largest entry.
  _assert_close(jit_grad, eager_grad, atol=1e-6 * max(1.0, float(np.abs(eager_grad).max())), what="gradient")


@pytest.mark.parametrize("case_id", CASE_IDS)
def test_vmap_over_batches_matches_loop(case_id):
  stack_embeddings = np.stack([_embeddings(10 + i) for i in range(3)])
  stack_labels = np.stack([_labels(3, seed=1), _labels(4, seed=2), _labels(6, seed=3)])
  stack_valid = np.stack([_all_valid(), _all_valid(), np.arange(B) % 4 != 3])
  fn = _jit_value_and_grad(case_id)
  values, grads = jax.vmap(fn)(stack_embeddings, stack_labels, stack_valid)
  assert values.shape == (3,) and grads.shape == (3, B, D)
  for i in range(3):
    value, grad = fn(stack_embeddings[i], stack_labels[i], stack_valid[i])
    _assert_close(values[i], value, what=f"value of batch {i}")
    _assert_close(grads[i], grad, what=f"gradient of batch {i}")


@pytest.mark.parametrize("case_id", CASE_IDS)
def test_padded_rows_change_neither_value_nor_gradient(case_id):
  rng = np.random.default_rng(5)
  labels, embeddings = _labels(4, seed=4), _embeddings(6)
  garbage = rng.normal(size=(PADDED_B - B, D)).astype(np.float32) * 1e3
  garbage[0] = 1e6                      # huge
  garbage[1] = 0.0                      # zero vector
  garbage[2] = embeddings[0]            # a duplicate of a real row
  garbage_labels = np.array([labels[0], labels[1], labels[0], 99], dtype=np.int32)  # would form positives
  real_rows = np.sort(rng.choice(PADDED_B, size=B, replace=False))      # padding interleaved with real rows
  pad_rows = np.setdiff1d(np.arange(PADDED_B), real_rows)
  padded_embeddings = np.zeros((PADDED_B, D), np.float32)
  padded_labels = np.zeros((PADDED_B,), np.int32)
  padded_embeddings[real_rows], padded_embeddings[pad_rows] = embeddings, garbage
  padded_labels[real_rows], padded_labels[pad_rows] = labels, garbage_labels
  valid = np.zeros((PADDED_B,), bool)
  valid[real_rows] = True

  fn = _jit_value_and_grad(case_id)
  value, grad = fn(embeddings, labels, _all_valid())
  padded_value, padded_grad = fn(padded_embeddings, padded_labels, valid)
  _assert_finite(padded_value, padded_grad, case_id)
  _assert_close(padded_value, value, what="value")
  _assert_close(padded_grad[real_rows], grad, what="gradient of the real rows")
  _assert_close(padded_grad[pad_rows], np.zeros_like(garbage), atol=0.0, what="gradient of the padded rows")


# ----------------------------------------------------------------------------------- must-hold 4: degenerate inputs
def _degenerate_batch(kind: str):
  """`(embeddings [B, D], labels [B], valid [B])` for one degenerate kind."""
  embeddings, labels, valid = _embeddings(7), _labels(4, seed=7), _all_valid()
  if kind == "zero_embeddings":
    embeddings = np.zeros_like(embeddings)
  elif kind == "all_rows_identical":
    embeddings = np.repeat(embeddings[:1], B, axis=0)
  elif kind == "duplicated_pairs":      # rows 2k and 2k+1 equal, labels equal or not
    embeddings = np.repeat(embeddings[::2], 2, axis=0)
  elif kind == "one_class":
    labels = np.full((B,), 3, np.int32)
  elif kind == "all_labels_distinct":
    labels = np.arange(B, dtype=np.int32)[::-1].copy()
  elif kind == "single_valid_row":
    valid = np.arange(B) == 5
  elif kind == "large_norms":
    embeddings = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True) * 1e4
  elif kind == "large_norms_one_class":
    embeddings = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True) * 1e4
    labels = np.zeros((B,), np.int32)
  else:
    raise AssertionError(kind)
  return embeddings.astype(np.float32), labels.astype(np.int32), valid


DEGENERATE_KINDS = ("zero_embeddings", "all_rows_identical", "duplicated_pairs", "one_class", "all_labels_distinct",
                    "single_valid_row", "large_norms", "large_norms_one_class")


@pytest.mark.parametrize("case_id", CASE_IDS)
def test_degenerate_inputs_give_finite_values_and_gradients(case_id):
  fn = _jit_value_and_grad(case_id)
  failures = []
  for kind in DEGENERATE_KINDS:
    embeddings, labels, valid = _degenerate_batch(kind)
    value, grad = fn(embeddings, labels, valid)
    if not (np.isfinite(value) and np.isfinite(np.asarray(grad)).all()):
      failures.append(f"{kind}: value {value}, finite gradient rows {np.isfinite(np.asarray(grad)).all(axis=1)}")
  assert not failures, f"{case_id}: " + "; ".join(failures)


def _expect_zero(case, kind: str) -> bool:
  if kind == "single_valid_row":
    return True
  if kind == "all_labels_distinct":
    return case.zero_without_pos
  if kind in ("one_class", "large_norms_one_class"):
    return case.zero_without_neg
  return False


@pytest.mark.parametrize("case_id", CASE_IDS)
def test_no_positive_or_no_negative_pair_gives_zero_and_zero_gradient(case_id):
  case = CASE_BY_ID[case_id]
  kinds = [kind for kind in DEGENERATE_KINDS if _expect_zero(case, kind)]
  fn = _jit_value_and_grad(case_id, zero=True)
  for kind in kinds:
    embeddings, labels, valid = _degenerate_batch(kind)
    value, grad = fn(embeddings, labels, valid)
    _assert_close(value, 0.0, atol=1e-6, what=f"{kind}: value")
    _assert_close(grad, np.zeros_like(embeddings), atol=1e-6, what=f"{kind}: gradient")


LABEL_PATTERNS = ("one_class", "two_classes", "few_classes", "many_classes", "singletons")


@st.composite
def _batches(draw):
  """A `[b, d]` batch (b in 2..12, d in 1..8) with a label pattern and a scale, embedded in a fixed `[B, D]` one."""
  b = draw(st.integers(2, B))
  d = draw(st.integers(1, D))
  pattern = draw(st.sampled_from(LABEL_PATTERNS))
  scale = draw(st.sampled_from([0.0, 1e-3, 1.0, 1e4]))
  duplicates = draw(st.booleans())
  seed = draw(st.integers(0, 2**31 - 1))
  rng = np.random.default_rng(seed)
  if pattern == "one_class":
    labels = np.zeros(b)
  elif pattern == "two_classes":
    labels = rng.integers(0, 2, size=b)
  elif pattern == "few_classes":
    labels = rng.integers(0, 3, size=b)
  elif pattern == "many_classes":
    labels = rng.integers(0, max(b - 1, 1), size=b)
  else:
    labels = rng.permutation(b)
  embeddings = rng.normal(size=(b, d)) * scale
  if duplicates:
    embeddings[b // 2:] = embeddings[:b - b // 2]
  full_embeddings = rng.normal(size=(B, D)) * 10.0          # garbage in the padded rows
  full_embeddings[:b] = 0.0
  full_embeddings[:b, :d] = embeddings
  full_labels = rng.integers(0, 3, size=B)
  full_labels[:b] = labels
  valid = np.arange(B) < b
  return full_embeddings.astype(np.float32), full_labels.astype(np.int32), valid


@pytest.mark.parametrize("case_id", CASE_IDS)
@hypothesis.settings(max_examples=15, deadline=None, derandomize=True, database=None,
                     suppress_health_check=[hypothesis.HealthCheck.too_slow])
@hypothesis.given(batch=_batches())
def test_property_finite_over_shapes_and_label_patterns(case_id, batch):
  case = CASE_BY_ID[case_id]
  embeddings, labels, valid = batch
  value, grad = _jit_value_and_grad(case_id)(embeddings, labels, valid)
  _assert_finite(value, grad, case_id)
  assert not np.asarray(grad)[~valid].any(), "padded rows got a gradient"
  real = labels[valid]
  same = real[:, None] == real[None, :]
  has_pos = bool((same & ~np.eye(len(real), dtype=bool)).any())
  has_neg = bool((~same).any())
  if (not has_pos and case.zero_without_pos) or (not has_neg and case.zero_without_neg):
    value, grad = _jit_value_and_grad(case_id, zero=True)(embeddings, labels, valid)
    _assert_close(value, 0.0, atol=1e-6, what="value without positive / negative pairs")
    _assert_close(grad, np.zeros_like(embeddings), atol=1e-6, what="gradient without positive / negative pairs")


# --------------------------------------------------------------------------------------- must-hold 8: bad arguments
def _bad_arguments(kind: str):
  """`(embeddings, labels, valid, argument named in the error)` for one kind of bad input."""
  embeddings, labels, valid = _embeddings(0), _labels(3), None
  if kind == "embeddings_1d":
    return embeddings[:, 0], labels, valid, "embeddings"
  if kind == "embeddings_3d":
    return embeddings[None], labels, valid, "embeddings"
  if kind == "embeddings_integer":
    return np.round(embeddings * 10).astype(np.int32), labels, valid, "embeddings"
  if kind == "labels_length_mismatch":
    return embeddings, labels[:-1], valid, "labels"
  if kind == "labels_2d":
    return embeddings, labels[:, None], valid, "labels"
  if kind == "labels_float":
    return embeddings, labels.astype(np.float32), valid, "labels"
  if kind == "valid_wrong_shape":
    return embeddings, labels, _all_valid(B - 1), "valid"
  if kind == "valid_not_boolean":
    return embeddings, labels, _all_valid().astype(np.int32), "valid"
  raise AssertionError(kind)


BAD_KINDS = ("embeddings_1d", "embeddings_3d", "embeddings_integer", "labels_length_mismatch", "labels_2d",
             "labels_float", "valid_wrong_shape", "valid_not_boolean")


@pytest.mark.parametrize("kind", BAD_KINDS)
@pytest.mark.parametrize("name", REGISTRY_NAMES)
def test_bad_arguments_raise_errors_naming_the_argument(name, kind):
  embeddings, labels, valid, argument = _bad_arguments(kind)
  fn = losses.get(name)
  pattern = rf"\b{argument}\b"
  with pytest.raises((ValueError, TypeError), match=pattern):
    fn(embeddings, labels, valid=valid)
  with pytest.raises((ValueError, TypeError), match=pattern):          # at trace time under jit, too
    jax.jit(lambda e, l, v: fn(e, l, valid=v))(embeddings, labels, valid)


"""The loss contract for the losses with learnable parameters (issue 12): proxies, class weights, centres.

The generic contract (`test_contract.py`) calls every loss as `fn(embeddings, labels, valid=...)`; these losses also
need `params=` and compute a loss for a single row (there is always a class to compare with), so they are checked here,
with the same properties, through `metric_jax.losses.get(name)` and parameters from `init_params`:
- gradients w.r.t. the embeddings AND the parameters agree with finite differences (`check_grads`, float64);
- `jax.jit` == eager; `jax.vmap` over 3 batches (shared parameters) == a Python loop;
- padded rows holding NaN / inf / 1e30 and labels outside `0 ... C - 1` change neither the value nor any gradient
  (bitwise against benign padding), get an exact zero gradient, and agree with the batch without them;
- a NaN / inf in a valid row or in the parameters makes the value non-finite;
- degenerate batches and parameters give finite values and gradients;
- bad arguments raise errors naming the argument, eagerly and at trace time under `jit`.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import test_util as jtu

from metric_jax import losses

B, D, C = 12, 8, 12           # batch, dimension, classes (labels up to 11 appear below)
PAD = 4

PARAM_NAMES = ("proxy_nca", "proxy_anchor", "normalized_softmax", "cosface", "arcface", "subcenter_arcface",
               "softtriple")
CASES = [(name, ()) for name in PARAM_NAMES] + [
    ("proxy_nca", (("positive_in_denominator", True), ("softmax_scale", 3.0))),
    ("subcenter_arcface", (("sub_centers", 2),)),
    ("softtriple", (("centers_per_class", 3), ("tau", 0.0))),
]
CASE_IDS = [name + "".join(f"[{k}={v}]" for k, v in hparams) for name, hparams in CASES]


def test_every_loss_with_parameters_is_covered():
  assert sorted(PARAM_NAMES) == sorted(n for n in losses.names() if losses.has_params(n))


def _params(name, hparams, dtype=jnp.float32, seed=0):
  return losses.init_params(name, jax.random.PRNGKey(seed), num_classes=C, embedding_dim=D, dtype=dtype,
                            **dict(hparams))


@functools.lru_cache(maxsize=None)
def _compiled(name, hparams):
  """`jit(value_and_grad)` w.r.t. (embeddings, params) of `fn(e, l, valid=v, params=p)`."""
  loss = functools.partial(losses.get(name), **dict(hparams))
  return jax.jit(jax.value_and_grad(lambda e, p, l, v: loss(e, l, params=p, valid=v), argnums=(0, 1)))


def _labels(num_classes, size=B, seed=0):
  rng = np.random.default_rng(seed)
  return rng.permutation(np.arange(size) % num_classes).astype(np.int32)


def _embeddings(seed, size=B, dtype=np.float32):
  rng = np.random.default_rng(seed)
  return (rng.normal(size=(size, D)) / np.sqrt(D)).astype(dtype)


def _key(params):
  (key,) = params
  return key


def _scale_atol(grad):
  return 1e-6 * max(1.0, float(np.abs(np.asarray(grad)).max()))


# ------------------------------------------------------------------------------------------------------- gradients
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_gradients_match_finite_differences_in_float64(case):
  name, hparams = case
  labels, embeddings = _labels(5), _embeddings(1, dtype=np.float64)
  with jax.enable_x64(True):
    params = _params(name, hparams, jnp.float64)
    loss = functools.partial(losses.get(name), **dict(hparams))
    fn = jax.jit(lambda e, p: loss(e, jnp.asarray(labels), params=p))
    assert fn(jnp.asarray(embeddings), params).dtype == jnp.float64
    grads = jax.grad(fn, argnums=(0, 1))(jnp.asarray(embeddings), params)
    assert float(jnp.max(jnp.abs(grads[0]))) > 1e-4 and float(jnp.max(jnp.abs(grads[1][_key(params)]))) > 1e-4
    jtu.check_grads(fn, (jnp.asarray(embeddings), params), order=1, modes=("fwd", "rev"), eps=1e-6, atol=1e-5,
                    rtol=1e-5)


# ---------------------------------------------------------------------------------------------- jit, vmap, padding
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_jit_matches_eager(case):
  name, hparams = case
  labels, embeddings, params = _labels(6), _embeddings(2), _params(*case)
  loss = functools.partial(losses.get(name), **dict(hparams))
  eager_value, (eager_ge, eager_gp) = jax.value_and_grad(
      lambda e, p: loss(e, labels, params=p), argnums=(0, 1))(jnp.asarray(embeddings), params)
  value, (ge, gp) = _compiled(*case)(embeddings, params, labels, np.ones(B, bool))
  np.testing.assert_allclose(value, eager_value, rtol=1e-5)
  np.testing.assert_allclose(ge, eager_ge, rtol=1e-5, atol=_scale_atol(eager_ge))
  key = _key(params)
  np.testing.assert_allclose(gp[key], eager_gp[key], rtol=1e-5, atol=_scale_atol(eager_gp[key]))


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_vmap_over_batches_matches_loop(case):
  params = _params(*case)
  stack_embeddings = np.stack([_embeddings(10 + i) for i in range(3)])
  stack_labels = np.stack([_labels(3, seed=1), _labels(7, seed=2), _labels(12, seed=3)])
  stack_valid = np.stack([np.ones(B, bool), np.ones(B, bool), np.arange(B) % 4 != 3])
  fn = _compiled(*case)
  values, (ge, gp) = jax.vmap(fn, in_axes=(0, None, 0, 0))(stack_embeddings, params, stack_labels, stack_valid)
  key = _key(params)
  assert values.shape == (3,) and ge.shape == (3, B, D) and gp[key].shape == (3,) + params[key].shape
  for i in range(3):
    value, (ge_i, gp_i) = fn(stack_embeddings[i], params, stack_labels[i], stack_valid[i])
    np.testing.assert_allclose(values[i], value, rtol=1e-5)
    np.testing.assert_allclose(ge[i], ge_i, rtol=1e-5, atol=_scale_atol(ge_i))
    np.testing.assert_allclose(gp[key][i], gp_i[key], rtol=1e-5, atol=_scale_atol(gp_i[key]))


def _padded(embeddings, labels, fill):
  """PAD padded rows interleaved: `fill` in the first, NaN / +inf / -inf / 1e30 mixed in the second (unless `fill`
  is benign), a duplicate of a real row in the third; their labels are in range, out of range (99, -1) or a real
  row's."""
  rows = np.array([0, 5, 9, B + PAD - 1])
  real = np.setdiff1d(np.arange(B + PAD), rows)
  out = np.zeros((B + PAD, D), np.float32)
  out[real] = embeddings
  out[rows] = np.float32(fill)
  if not np.isfinite(fill) or abs(fill) > 1e3:
    out[rows[1]] = np.resize(np.array([np.nan, np.inf, -np.inf, 1e30], np.float32), D)
  out[rows[2]] = embeddings[0]
  padded_labels = np.zeros((B + PAD,), np.int32)
  padded_labels[real] = labels
  padded_labels[rows] = [labels[0], 99, labels[0], -1]
  valid = np.zeros((B + PAD,), bool)
  valid[real] = True
  return out, padded_labels, valid, real, rows


@pytest.mark.parametrize("fill", [np.nan, np.inf, 1e30], ids=str)
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_padded_rows_change_neither_value_nor_gradient(case, fill):
  params = _params(*case)
  key = _key(params)
  embeddings, labels = _embeddings(6), _labels(5, seed=4)
  fn = _compiled(*case)
  padded, padded_labels, valid, real, rows = _padded(embeddings, labels, fill)
  value, (ge, gp) = fn(padded, params, padded_labels, valid)
  benign_value, (benign_ge, benign_gp) = fn(*_padded(embeddings, labels, 0.5)[:1], params, padded_labels, valid)
  assert np.isfinite(float(value)) and np.isfinite(np.asarray(ge)).all() and np.isfinite(np.asarray(gp[key])).all()
  assert float(value) == float(benign_value)                      # bitwise: nothing of the padding reaches anything
  np.testing.assert_array_equal(np.asarray(ge), np.asarray(benign_ge))
  np.testing.assert_array_equal(np.asarray(gp[key]), np.asarray(benign_gp[key]))
  np.testing.assert_array_equal(np.asarray(ge)[rows], 0.0)
  ref_value, (ref_ge, ref_gp) = fn(embeddings, params, labels, np.ones(B, bool))
  np.testing.assert_allclose(float(value), float(ref_value), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(np.asarray(ge)[real], ref_ge, rtol=1e-4, atol=_scale_atol(ref_ge))
  np.testing.assert_allclose(gp[key], ref_gp[key], rtol=1e-4, atol=_scale_atol(ref_gp[key]))


# ------------------------------------------------------------------------------------------------------ non-finite
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf], ids=str)
@pytest.mark.parametrize("name", PARAM_NAMES)
def test_nonfinite_valid_row_or_parameter_makes_the_value_nonfinite(name, bad):
  params = _params(name, ())
  key = _key(params)
  embeddings, labels = _embeddings(3), _labels(4)
  fn = _compiled(name, ())
  bad_row = embeddings.copy()
  bad_row[4, 3] = bad
  assert not np.isfinite(float(fn(bad_row, params, labels, np.ones(B, bool))[0]))
  assert not np.isfinite(float(losses.get(name)(jnp.asarray(bad_row), labels, params=params)))      # eagerly too
  single = np.arange(B) == 4                                        # a lone valid row
  assert not np.isfinite(float(fn(bad_row, params, labels, single)[0]))
  bad_params = {key: params[key].at[1, 2].set(bad)}
  assert not np.isfinite(float(fn(embeddings, bad_params, labels, np.ones(B, bool))[0]))


# ---------------------------------------------------------------------------------------------------- degenerate
def _degenerate(kind, params):
  embeddings, labels, valid = _embeddings(7), _labels(4, seed=7), np.ones(B, bool)
  key = _key(params)
  if kind == "zero_embeddings":
    embeddings = np.zeros_like(embeddings)
  elif kind == "all_rows_identical":
    embeddings = np.repeat(embeddings[:1], B, axis=0)
  elif kind == "duplicated_pairs":
    embeddings = np.repeat(embeddings[::2], 2, axis=0)
  elif kind == "one_class":
    labels = np.full(B, 3, np.int32)
  elif kind == "all_labels_distinct":
    labels = np.arange(B, dtype=np.int32)[::-1].copy()
  elif kind == "single_valid_row":
    valid = np.arange(B) == 5
  elif kind == "no_valid_row":
    valid = np.zeros(B, bool)
  elif kind == "large_norms":
    embeddings = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True) * 1e4
  elif kind == "rows_equal_to_their_class_parameters":    # cosine exactly 1 (ArcFace's sin θ = 0)
    rows_per_class = params[key].shape[0] // C
    embeddings = np.asarray(params[key])[labels * rows_per_class] * 3.0
  elif kind == "rows_opposite_to_their_class_parameters":  # cosine exactly -1
    rows_per_class = params[key].shape[0] // C
    embeddings = -np.asarray(params[key])[labels * rows_per_class]
  elif kind == "zero_parameters":
    params = {key: jnp.zeros_like(params[key])}
  elif kind == "identical_parameters":
    params = {key: jnp.tile(params[key][:1], (params[key].shape[0], 1))}
  else:
    raise AssertionError(kind)
  return embeddings.astype(np.float32), params, labels.astype(np.int32), valid


DEGENERATE_KINDS = ("zero_embeddings", "all_rows_identical", "duplicated_pairs", "one_class", "all_labels_distinct",
                    "single_valid_row", "no_valid_row", "large_norms", "rows_equal_to_their_class_parameters",
                    "rows_opposite_to_their_class_parameters", "zero_parameters", "identical_parameters")


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_degenerate_inputs_give_finite_values_and_gradients(case):
  fn = _compiled(*case)
  key = _key(_params(*case))
  failures = []
  for kind in DEGENERATE_KINDS:
    embeddings, params, labels, valid = _degenerate(kind, _params(*case))
    value, (ge, gp) = fn(embeddings, params, labels, valid)
    if not (np.isfinite(value) and np.isfinite(np.asarray(ge)).all() and np.isfinite(np.asarray(gp[key])).all()):
      failures.append(f"{kind}: value {value}")
    if kind == "no_valid_row":
      assert not np.asarray(ge).any()
      if not (case[0] == "softtriple" and dict(case[1]).get("tau", 0.2) > 0):   # SoftTriple's centre regularizer
        assert float(value) == 0.0 and not np.asarray(gp[key]).any()
  assert not failures, f"{case}: " + "; ".join(failures)


# ------------------------------------------------------------------------------------------------- bad arguments
def _bad_arguments(kind, params):
  embeddings, labels, valid = _embeddings(0), _labels(3), None
  if kind == "embeddings_1d":
    return embeddings[:, 0], labels, valid, params, "embeddings"
  if kind == "embeddings_integer":
    return np.round(embeddings * 10).astype(np.int32), labels, valid, params, "embeddings"
  if kind == "labels_length_mismatch":
    return embeddings, labels[:-1], valid, params, "labels"
  if kind == "labels_column":
    return embeddings, labels[:, None], valid, params, "labels"
  if kind == "labels_float":
    return embeddings, labels.astype(np.float32), valid, params, "labels"
  if kind == "valid_wrong_shape":
    return embeddings, labels, np.ones(B - 1, bool), params, "valid"
  if kind == "valid_not_boolean":
    return embeddings, labels, np.ones(B, np.int32), params, "valid"
  if kind == "params_missing":
    return embeddings, labels, valid, None, "params"
  if kind == "params_wrong_key":
    return embeddings, labels, valid, {"centres": next(iter(params.values()))}, "params"
  if kind == "params_wrong_dimension":
    return embeddings, labels, valid, {k: v[:, :-1] for k, v in params.items()}, "params"
  if kind == "params_integer":
    return embeddings, labels, valid, {k: v.astype(jnp.int32) for k, v in params.items()}, "params"
  raise AssertionError(kind)


BAD_KINDS = ("embeddings_1d", "embeddings_integer", "labels_length_mismatch", "labels_column", "labels_float",
             "valid_wrong_shape", "valid_not_boolean", "params_missing", "params_wrong_key", "params_wrong_dimension",
             "params_integer")


@pytest.mark.parametrize("kind", BAD_KINDS)
@pytest.mark.parametrize("name", PARAM_NAMES)
def test_bad_arguments_raise_errors_naming_the_argument(name, kind):
  embeddings, labels, valid, params, argument = _bad_arguments(kind, _params(name, ()))
  fn = losses.get(name)
  pattern = rf"\b{argument}\b"
  with pytest.raises((ValueError, TypeError), match=pattern):
    fn(embeddings, labels, params=params, valid=valid)
  with pytest.raises((ValueError, TypeError), match=pattern):          # at trace time under jit, too
    jax.jit(lambda e, l, v, p: fn(e, l, params=p, valid=v))(embeddings, labels, valid, params)

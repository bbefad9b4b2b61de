"""Scale (issue 11; DESIGN.md "The loss contract", "Scale"): row-sharded global-batch losses (`axis_name`), blocked losses
(`block_size`) and memory keys (`memory`), for every registry loss, matrix form and regularizer.

Inside `jax.shard_map` over 4 CPU devices (`check_vma=True`, the default), each device passes its local rows; the loss
gathers the keys, builds its `[b, G]` rows and combines the global statistics. For every registry loss (defaults, and
the options that take their own code path), ONE compiled function per case checks, against the unsharded loss on the
concatenated batch:
- value and gradient w.r.t. the local embeddings (each device's gradient = its rows of the unsharded gradient) and
  w.r.t. the replicated parameters (proxies, class weights) - sharded over 4 devices, with blocks of 2 rows inside;
- the same with padded rows (valid=False, anywhere, holding garbage) and with multi-hot labels where the loss takes them;
- memory keys: all-invalid memory (holding garbage) changes neither value nor gradient; valid memory gives the matrix
  form on the concatenated keys `[batch; memory]`, unsharded and sharded (the memory replicated), with a zero gradient
  for the memory;
- the matrix form with `axis_name` on this device's `[b, G]` (or `[b, C]`) rows equals the unsharded matrix form, value
  and gradient w.r.t. the matrix rows.
Blocks alone (`block_size`, unsharded), the `check_vma=False` protocol of the `Trainer` (differentiate `loss / n`, `psum`
the parameter gradients), the regularizers, argument errors, and 2 processes x 2 devices (gloo) are checked too.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import core
from jax.ad_checkpoint import print_saved_residuals
from jax.sharding import Mesh, PartitionSpec as P

from metric_jax import labels, losses, pairwise, regularizers
from metric_jax.losses import _shard, nca, npair
from tests.losses._loss_cases import MATRIX_FORMS
from tests._processes import free_port, run_together
from tests.conftest import REPO_ROOT

N = 4                          # devices (tests/conftest.py sets jax_num_cpu_devices=4)
G, D, C = 16, 6, 5             # global batch, dimension, classes (also the multi-hot label columns)
AXIS = "i"
TOL = dict(rtol=2e-5, atol=2e-6)


# Every registry loss with its defaults, and the options that run their own code (mining, reductions, normalizations,
# layouts, column terms).
CASES = [(name, {}) for name in losses.names()] + [
    ("triplet", {"mining": "hard", "soft": True}),
    ("triplet", {"mining": "semihard", "reduction": "mean"}),
    ("triplet", {"soft": True, "positive_slots": 0}),
    ("npair_mc", {"symmetric": True, "l2_reg": 0.01}),
    ("npair_ovo", {"symmetric": True}),
    ("multi_similarity", {"mining": False, "plus_one": False}),
    ("contrastive", {"reduction": "mean", "hinge_power": 2}),
    ("histogram", {"num_bins": 11, "margin_bins": 1}),
    ("gpw_pair", {"mining": "multi_similarity", "weighting": "exponential", "normalize": "batch"}),
    ("gpw_pair", {"mining": "semihard", "weighting": "power", "normalize": "anchor", "reduction": "anchor_mean"}),
    ("gpw_triplet", {"weighting": "exponential", "normalize": "batch", "method": "sorted"}),
    ("gpw_triplet", {"mining": "semihard", "weighting": "power", "p": 2.0, "normalize": "anchor"}),
    ("circle", {"detach_weights": False}),
    ("proxy_nca", {"positive_in_denominator": True}),
    ("subcenter_arcface", {"sub_centers": 2}),
    ("softtriple", {"centers_per_class": 3}),
]
CASE_IDS = [name + "".join(f"[{k}={v}]" for k, v in sorted(hp.items())) for name, hp in CASES]
# Gradient tolerance (absolute, times max(1, |gradient|)) per case; 2e-6 unless listed. GPW's power weighting with p = 2 on
# semihard triplets amplifies float32 rounding of the distances (the different summation orders of the sharded / blocked
# forms give 8e-6 on a few entries); in float64 the sharded and unsharded gradients of this case agree to 1e-17.
GRAD_ATOL = {"gpw_triplet[mining=semihard][normalize=anchor][p=2.0][weighting=power]": 2e-5}


def test_every_registry_loss_and_matrix_form_is_covered():
  assert sorted(MATRIX_FORMS) == losses.names()
  import inspect
  for name in losses.names():
    parameters = inspect.signature(losses.get(name)).parameters
    assert {"axis_name", "block_size", "memory"} <= set(parameters), name
  for fn, _ in MATRIX_FORMS.values():
    assert {"axis_name", "block_size"} <= set(inspect.signature(fn).parameters), fn.__name__


@functools.lru_cache(maxsize=None)
def _mesh():
  return Mesh(np.array(jax.devices()[:N]), (AXIS,))


def _data(seed=0):
  """Embeddings `[G, D]`, class ids `[G]` (every class present), multi-hot `[G, L]`, a mask with padded rows 3, 9, 14
  (holding garbage), a memory of 6 slots (2 invalid, holding garbage) and its all-invalid variant."""
  rng = np.random.default_rng(seed)
  e = (rng.normal(size=(G, D)) / np.sqrt(D)).astype(np.float32)
  y = rng.permutation(np.arange(G) % C).astype(np.int32)
  multi = rng.random((G, C)) < 0.35
  valid = np.ones(G, bool)
  valid[[3, 9, 14]] = False
  e[[3, 14]] = np.float32(1e4)
  e[9] = np.nan
  k = 6
  mem_e = (rng.normal(size=(k, D)) / np.sqrt(D)).astype(np.float32)
  mem_y = rng.integers(0, C, size=k).astype(np.int32)
  mem_valid = np.array([1, 1, 0, 1, 1, 0], bool)
  mem_e[2] = np.nan
  mem_e[5] = np.float32(-1e4)
  return dict(e=e, y=y, multi=multi, valid=valid, mem_e=mem_e, mem_y=mem_y, mem_valid=mem_valid)


def _params(name, hparams):
  if not losses.has_params(name):
    return None
  return losses.init_params(name, jax.random.PRNGKey(1), num_classes=C, embedding_dim=D, **hparams)


def _class_matrix(name, hparams, e, params):
  """The class matrix the registry form builds (class-major columns) for the matrix forms."""
  (weights,) = params.values()
  if name == "proxy_nca":
    return pairwise.squared_euclidean(pairwise.l2_normalize(e), pairwise.l2_normalize(weights))
  return pairwise.cosine_similarity(e, weights)


def _matrix_hparams(name, hparams):
  """The registry hyperparameters the matrix form takes (the registry-only ones dropped / translated)."""
  hp = {k: v for k, v in hparams.items() if k not in ("distance", "similarity", "tau")}
  if name == "npair_mc" or name == "npair_ovo":
    hp.pop("l2_reg", None)
  return hp


def _shard_map(fn, in_specs, out_specs, check_vma=True):
  return jax.shard_map(fn, mesh=_mesh(), in_specs=in_specs, out_specs=out_specs, check_vma=check_vma)


@functools.lru_cache(maxsize=None)
def _compiled(case_index: int):
  """One jitted function computing every comparison of a case (see the module docstring)."""
  name, hparams = CASES[case_index]
  fn = functools.partial(losses.get(name), **hparams)
  matrix_form, metric = MATRIX_FORMS[name]
  mhp = _matrix_hparams(name, hparams)
  has_params = losses.has_params(name)
  pair = metric is not None
  multi_hot = losses.accepts_multi_hot(name)
  plain_case = not hparams
  row = P(AXIS)

  def registry(e, y, v, p, **kw):
    return fn(e, y, valid=v, **({"params": p} if has_params else {}), **kw)

  def grads(e, y, v, p, **kw):
    return jax.value_and_grad(lambda e, p: registry(e, y, v, p, **kw), argnums=(0, 1))(e, p)

  def sharded(e, y, v, p, memory=()):
    local = lambda e, y, v, p, *m: grads(e, y, v, p, axis_name=AXIS, block_size=2, **({"memory": m} if m else {}))
    in_specs = (row, row, row, P()) + (P(),) * len(memory)   # the memory is replicated
    return _shard_map(local, in_specs, (P(), (row, P())))(e, y, v, p, *memory)

  def run(d, p):
    out = {}
    e, y, v = d["e"], d["y"], d["valid"]
    out["ref"] = grads(e, y, v, p)
    out["shard"] = sharded(e, y, v, p)
    if multi_hot and plain_case:
      out["ref_multi"] = grads(e, d["multi"], v, p)
      out["shard_multi"] = sharded(e, d["multi"], v, p)
    if pair:
      mem = (d["mem_e"], d["mem_y"], d["mem_valid"])
      invalid = (d["mem_e"], d["mem_y"], jnp.zeros_like(d["mem_valid"]))
      out["mem_invalid"] = grads(e, y, v, p, memory=invalid)
      out["mem"] = jax.value_and_grad(lambda e, m: registry(e, y, v, p, memory=(m, mem[1], mem[2])), argnums=(0, 1))(
          e, mem[0])
      out["mem_shard"] = sharded(e, y, v, p, mem)

      def concatenated(e):   # the matrix form on the keys [batch; memory] (memory slots zeroed where invalid)
        keys = jnp.concatenate([jnp.where(v[:, None], e, 0.0), jnp.where(mem[2][:, None], mem[0], 0.0)])
        queries = jnp.where(v[:, None], e, 0.0)
        value = matrix_form(metric(queries, keys), y, jnp.concatenate([y, mem[1]]), query_valid=v,
                            key_valid=jnp.concatenate([v, mem[2]]), self_offset=0, **mhp)
        if hparams.get("l2_reg"):   # N-pair's regularizer of the batch's embedding norms
          value = value + hparams["l2_reg"] * jnp.sum(jnp.where(v, jnp.sum(queries ** 2, 1), 0.0)) / jnp.sum(v)
        return value

      out["mem_ref"] = jax.value_and_grad(concatenated)(e)
      matrix = metric(jnp.where(v[:, None], e, 0.0))
      mfn = lambda m, y, v, **kw: matrix_form(m, y, query_valid=v, **mhp, **kw)
    else:
      matrix = _class_matrix(name, hparams, jnp.where(v[:, None], e, 0.0), p)
      mfn = lambda m, y, v, **kw: matrix_form(m, y, query_valid=v, **mhp, **kw)
    if plain_case or pair:
      out["matrix_ref"] = jax.value_and_grad(lambda m: mfn(m, y, v))(matrix)
      out["matrix_shard"] = _shard_map(
          lambda m, y, v: jax.value_and_grad(lambda m: mfn(m, y, v, axis_name=AXIS, block_size=3))(m),
          (row, row, row), (P(), row))(matrix, y, v)
    return out

  return jax.jit(run)


def _close(actual, expected, what, **tol):
  np.testing.assert_allclose(np.asarray(actual), np.asarray(expected), err_msg=what, **{**TOL, **tol})


def _assert_same(a, b, what, grad_atol=2e-6):
  (va, (ga, pa)), (vb, (gb, pb)) = a, b
  _close(va, vb, f"{what}: value")
  scale = max(1.0, float(np.abs(np.asarray(gb)).max()))
  _close(ga, gb, f"{what}: gradient w.r.t. the local embeddings", atol=grad_atol * scale)
  if pb is not None:
    jax.tree.map(lambda x, y: _close(x, y, f"{what}: gradient w.r.t. the parameters", atol=grad_atol * scale), pa, pb)


@pytest.mark.parametrize("case_index", range(len(CASES)), ids=CASE_IDS)
def test_sharded_blocked_and_memory_forms_equal_the_unsharded_loss(case_index):
  name, hparams = CASES[case_index]
  d = {k: jnp.asarray(v) for k, v in _data().items()}
  out = jax.device_get(_compiled(case_index)(d, _params(name, hparams)))
  ref_value, (ref_grad, _) = out["ref"]
  assert np.isfinite(ref_value) and np.isfinite(ref_grad).all() and ref_value != 0.0, (name, ref_value)
  padded = ~np.asarray(d["valid"])
  assert np.abs(ref_grad[~padded]).max() > 0 and (ref_grad[padded] == 0).all()
  grad_atol = GRAD_ATOL.get(CASE_IDS[case_index], 2e-6)
  _assert_same(out["shard"], out["ref"], "sharded over 4 devices, blocks of 2", grad_atol)
  if "ref_multi" in out:
    _assert_same(out["shard_multi"], out["ref_multi"], "multi-hot labels, sharded", grad_atol)
  if "mem" in out:
    _assert_same(out["mem_invalid"], out["ref"], "all-invalid memory")
    (mem_value, (mem_grad, mem_key_grad)), (cat_value, cat_grad) = out["mem"], out["mem_ref"]
    assert abs(mem_value - ref_value) > 1e-6, "the memory changed nothing"
    _close(mem_value, cat_value, "memory: value vs the matrix form on [batch; memory] keys")
    _close(mem_grad, cat_grad, "memory: gradient vs the matrix form", atol=2e-6 * max(1.0, np.abs(cat_grad).max()))
    assert (mem_key_grad == 0).all(), "the memory must be under stop_gradient"
    mv, (mg, _) = out["mem_shard"]
    _close(mv, mem_value, "memory, sharded: value")
    _close(mg, mem_grad, "memory, sharded: gradient", atol=grad_atol * max(1.0, np.abs(mem_grad).max()))
  if "matrix_ref" in out:
    (mv, mg), (rv, rg) = out["matrix_shard"], out["matrix_ref"]
    _close(mv, rv, "matrix form with axis_name: value")
    _close(mg, rg, "matrix form with axis_name: gradient w.r.t. the matrix rows",
           atol=2e-6 * max(1.0, np.abs(rg).max()))


# ------------------------------------------------------------------------------------------------ blocks, unsharded
@pytest.mark.parametrize("name", ["lifted_structure", "triplet", "npair_mc", "proxy_anchor", "histogram",
                                  "binomial_deviance"])
def test_blocked_loss_equals_the_unblocked_loss_for_every_block_size(name):
  """Blocks that divide the batch and blocks that leave a remainder (G = 16: 5 -> 3 x 5 + 1), unsharded."""
  d = _data(1)
  params = _params(name, {})
  fn = losses.get(name)
  extra = {"params": params} if params is not None else {}

  @jax.jit
  def run(e, y, v, p):
    f = lambda block_size, e, p: fn(e, y, valid=v, block_size=block_size, **({"params": p} if p else {}))
    return [jax.value_and_grad(functools.partial(f, b), argnums=(0, 1))(e, p) for b in (None, 4, 5, 16, 64)]

  results = jax.device_get(run(d["e"], d["y"], d["valid"], extra.get("params")))
  for block_size, result in zip((4, 5, 16, 64), results[1:]):
    _assert_same(result, results[0], f"block_size={block_size}")


@pytest.mark.parametrize("block_size", [None, 3, 4, 6, 8, 12])
def test_map_pairs_weights_count_every_ordered_pair(block_size):
  """`PairProblem.map_pairs`: over the half windows (3 or more global blocks) or the plain rows, the weighted sums of a
  symmetric pair function equal its sums over every ordered pair of the full matrix; the windows cover about half."""
  rng = np.random.default_rng(4)
  e = jnp.asarray(rng.normal(size=(24, 5)), jnp.float32)
  y = jnp.asarray(np.arange(24) % 5, jnp.int32)
  valid = jnp.asarray(np.arange(24) != 7)
  problem = _shard.from_embeddings(e, y, valid, matrix_fn=pairwise.cosine_similarity, block_size=block_size)
  out, _ = problem.map_pairs(lambda b, w: (jnp.sum(jnp.where(b.valid, w, 0.0)),
                                           jnp.sum(jnp.where(b.positive, w * b.matrix, 0.0)),
                                           jnp.asarray(b.matrix.size)))
  count, positive_sum, entries = (np.sum(x) for x in jax.device_get(out))
  masks = labels.pair_masks(y, query_valid=valid)
  full = pairwise.cosine_similarity(e, e)
  assert count == int(jnp.sum(masks.valid))
  np.testing.assert_allclose(positive_sum, jnp.sum(jnp.where(masks.positive, full, 0.0)), rtol=1e-5)
  blocks = 24 // (block_size or 24)
  assert entries == (24 * (blocks // 2 + 1) * block_size if blocks >= 3 else 24 * 24)


def test_blocks_keep_per_row_statistics_and_rematerialize_the_rest():
  """`_shard.save_row_statistics`, the blocks' `jax.checkpoint` policy: reductions over the last axis (keys, or the
  embedding dimension) of >= 32 entries are kept, everything else (the `[block, M]` values, column reductions, short
  axes) is rematerialized."""
  prims = {p.name: p for p in (jax.lax.reduce_max_p, jax.lax.reduce_sum_p, jax.lax.exp_p, jax.lax.dot_general_p)}
  aval = lambda *shape: core.ShapedArray(shape, jnp.float32)
  keep = _shard.save_row_statistics
  assert keep(prims["reduce_max"], aval(16, 64), axes=(1,))
  assert keep(prims["reduce_sum"], aval(16, 3, 64), axes=(2,))
  assert not keep(prims["reduce_sum"], aval(16, 64), axes=(0,))      # a column reduction: [M] per block
  assert not keep(prims["reduce_sum"], aval(16, 8), axes=(1,))       # fewer than 32 keys
  assert not keep(prims["reduce_sum"], aval(16, 3, 64), axes=(1,))   # over the slots
  assert not keep(prims["exp"], aval(16, 64))
  assert not keep(prims["dot_general"], aval(16, 8), aval(64, 8), dimension_numbers=(((1,), (1,)), ((), ())))
  # In a blocked loss: 64 keys in blocks of 16 rows keep [4 blocks, 16 rows] statistics, and nothing [block, 64].
  e = jnp.asarray(np.random.default_rng(0).normal(size=(64, 8)), jnp.float32)
  printed = io.StringIO()
  with contextlib.redirect_stdout(printed):
    print_saved_residuals(lambda e: losses.get("multi_similarity")(e, jnp.arange(64) % 16, block_size=16), e)
  lines = printed.getvalue().splitlines()
  assert any(line.startswith("f32[4,16] output of scan") for line in lines), lines    # per-row statistics
  assert not any(line.split(" ", 1)[0].endswith(",64]") for line in lines), lines     # no [.., block, keys]


@pytest.mark.parametrize("name", ["multi_similarity", "generalized_lifted_structure", "lifted_structure", "circle",
                                  "ntxent", "triplet"])
def test_blocks_with_saved_row_statistics_equal_the_unblocked_loss(name):
  """With 64 keys (>= 32: the policy keeps the blocks' row statistics; the batches above have 16) blocked values and
  gradients equal the unblocked ones, for blocks that divide the batch and one that leaves a remainder."""
  rng = np.random.default_rng(3)
  e = jnp.asarray(rng.normal(size=(64, 8)) / np.sqrt(8), jnp.float32)
  y = jnp.asarray(np.arange(64) % 16, jnp.int32)
  fn = losses.get(name)

  @jax.jit
  def run(e):
    return [jax.value_and_grad(lambda e: fn(e, y, block_size=b))(e) for b in (None, 16, 24)]

  (v0, g0), *blocked = jax.device_get(run(e))
  for block_size, (v, g) in zip((16, 24), blocked):
    _close(v, v0, f"block_size={block_size}: value")
    _close(g, g0, f"block_size={block_size}: gradient", atol=2e-6 * max(1.0, float(np.abs(g0).max())))


def test_explicit_gradient_blocks_are_not_rematerialized():
  """`PairProblem.map_linear`: the blocks of `triplet`, `gpw_triplet` (`normalize="none"`) and `lifted_structure` (its
  symmetric form, `lifted._lifted_symmetric`) are not rematerialized (no `remat` in the gradient's jaxpr;
  `multi_similarity`'s blocks are, which shows the check can fail) and give the unblocked value and gradient (the
  sharded cases above cover them with blocks and devices together)."""
  rng = np.random.default_rng(4)
  e = jnp.asarray(rng.normal(size=(64, 8)) / np.sqrt(8), jnp.float32)
  y = jnp.asarray(np.arange(64) % 16, jnp.int32)
  for name, rematerialized in (("triplet", False), ("gpw_triplet", False), ("lifted_structure", False),
                               ("multi_similarity", True)):
    jaxpr = str(jax.make_jaxpr(jax.grad(lambda e: losses.get(name)(e, y, block_size=16)))(e))
    assert ("remat" in jaxpr) == rematerialized, name
  for name, hparams in (("triplet", {"mining": "semihard"}), ("gpw_triplet", {"weighting": "power", "p": 2.0}),
                        ("lifted_structure", {"distance": "cosine"})):
    fn = functools.partial(losses.get(name), **hparams)
    v0, g0 = jax.value_and_grad(lambda e: fn(e, y))(e)
    v, g = jax.jit(jax.value_and_grad(lambda e: fn(e, y, block_size=24)))(e)
    _close(v, v0, f"{name}: value")
    _close(g, g0, f"{name}: gradient", atol=2e-6 * max(1.0, float(np.abs(g0).max())))


# ------------------------------------------------------------------------------ the Trainer's check_vma=False protocol
@pytest.mark.parametrize("name", ["lifted_structure", "npair_mc", "proxy_anchor", "histogram", "binomial_deviance"])
def test_without_vma_checks_the_gradient_of_loss_over_n_is_exact(name):
  """`shard_map(check_vma=False)` (the `Trainer`): every collective transposes to a sum, so `grad(loss / n)` gives the
  local rows of the unsharded gradient, and the parameters' gradients summed over the devices the full one."""
  d = _data(2)
  params = _params(name, {})
  fn = losses.get(name)
  kw = lambda p: {"params": p} if p is not None else {}

  def local(e, y, v, p):
    value, (ge, gp) = jax.value_and_grad(lambda e, p: fn(e, y, valid=v, axis_name=AXIS, **kw(p)) / N,
                                         argnums=(0, 1))(e, p)
    return value * N, (ge, jax.lax.psum(gp, AXIS))

  sharded = jax.jit(_shard_map(local, (P(AXIS),) * 3 + (P(),), (P(), (P(AXIS), P())), check_vma=False))
  ref = jax.jit(jax.value_and_grad(lambda e, p: fn(e, d["y"], valid=d["valid"], **kw(p)), argnums=(0, 1)))
  _assert_same(jax.device_get(sharded(d["e"], d["y"], d["valid"], params)),
               jax.device_get(ref(d["e"], params)), "check_vma=False, grad(loss / n)")


# ------------------------------------------------------------------------------------------------------ regularizers
def test_regularizers_sharded_equal_unsharded_with_padded_rows():
  d = _data(3)
  alpha = jnp.linspace(0.3, 0.9, C)
  d0 = jnp.linspace(0.5, 2.0, C)
  regs = {
      "density_adaptivity": lambda e, y, v, a, **k: regularizers.density_adaptivity(e, y, a, d0, valid=v, **k),
      "global_orthogonal": lambda e, y, v, a, **k: regularizers.global_orthogonal(e, y, valid=v, **k),
      "entropy": lambda e, y, v, a, **k: regularizers.entropy(e, y, valid=v, **k),
      "embedding_l2": lambda e, y, v, a, **k: regularizers.embedding_l2(e, v, **k),
  }
  blocks = {"global_orthogonal": {"block_size": 3}, "entropy": {"block_size": 3}}

  @jax.jit
  def run(e, y, v, a):
    out = {}
    for name, reg in regs.items():
      ref = jax.value_and_grad(lambda e, a: reg(e, y, v, a), argnums=(0, 1))(e, a)
      local = lambda e, y, v, a, reg=reg, name=name: jax.value_and_grad(
          lambda e, a: reg(e, y, v, a, axis_name=AXIS, **blocks.get(name, {})), argnums=(0, 1))(e, a)
      out[name] = ref, _shard_map(local, (P(AXIS),) * 3 + (P(),), (P(), (P(AXIS), P())))(e, y, v, a)
    return out

  for name, (ref, shard) in jax.device_get(run(d["e"], d["y"], d["valid"], alpha)).items():
    assert np.isfinite(ref[0]) and ref[0] != 0.0, name
    _assert_same(shard, ref, name)


# ------------------------------------------------------------------------------------------------------- arguments
def test_scale_arguments_are_checked_and_named():
  e, y = jnp.ones((4, 3)), jnp.arange(4) % 2
  fn = losses.get("contrastive")
  with pytest.raises(ValueError, match="block_size"):
    fn(e, y, block_size=0)
  with pytest.raises(TypeError, match="axis_name"):
    fn(e, y, axis_name=3)
  with pytest.raises(TypeError, match="memory"):
    fn(e, y, memory=jnp.ones((2, 3)))
  with pytest.raises(ValueError, match="memory"):
    fn(e, y, memory=(jnp.ones((2, 5)), jnp.zeros(2, jnp.int32), jnp.ones(2, bool)))
  with pytest.raises(ValueError, match="memory"):
    fn(e, y, memory=(jnp.ones((2, 3)), jnp.zeros((2, 3), jnp.int32), jnp.ones(2, bool)))
  with pytest.raises(ValueError, match="memory"):
    proxy_params = losses.init_params("proxy_anchor", jax.random.PRNGKey(0), num_classes=2, embedding_dim=3)
    losses.get("proxy_anchor")(e, y, params=proxy_params,
                               memory=(jnp.ones((2, 3)), jnp.zeros(2, jnp.int32), jnp.ones(2, bool)))
  with pytest.raises(ValueError, match="query_labels"):
    npair.npair_mc_loss(jnp.ones((4, 4)), jnp.eye(4, dtype=bool))
  with pytest.raises(ValueError, match="matrix"):   # with axis_name and no key labels, M must be n * b
    _shard_map(lambda m, y: nca.nca_loss(m, y, axis_name=AXIS), (P(AXIS), P(AXIS)), P())(
        jnp.ones((8, 3)), jnp.arange(8))


# -------------------------------------------------------------------------------------- 2 processes x 2 CPU devices
def test_two_processes_with_two_devices_each_give_the_unsharded_losses():
  """The losses' collectives across processes (gloo): `tests/losses/_sharded_worker.py` runs a few losses row-sharded
  over 2 processes x 2 CPU devices and checks value and gradients against the unsharded loss in each process."""
  port = free_port()
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO_ROOT))
  env.pop("XLA_FLAGS", None)
  procs = run_together([[sys.executable, "-m", "tests.losses._sharded_worker", f"localhost:{port}", i]
                        for i in range(2)], env, timeout=300)
  for p in procs:
    assert p.returncode == 0, p.log[-4000:]
    assert "checked 5 losses" in p.log, p.log[-2000:]

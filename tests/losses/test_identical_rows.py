"""Identical rows: every loss gives the same value under jit, eagerly and under vmap (issue 10, item 3).

`|a|^2 + |b|^2 - 2 a.b` leaves rounding noise for identical rows that differs between execution modes; before the fix
that noise crossed the "> 0" threshold of the mean-nonzero reducer, and `contrastive` and `gpw_pair` gave different
values under `jit` and eagerly / under `vmap` on the batch below (24 x 16 Gaussian float32 embeddings, 6 classes of 4,
rows 1, 5, 9, ... copied from rows 0, 4, 8, ...). `metric_jax.pairwise` now makes identical rows exactly 0 apart (and
exactly cosine-similar 1), so every loss agrees across modes on such batches, and on a batch of all-identical rows.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metric_jax import losses
from tests.losses._loss_cases import REGISTRY_NAMES

# The registry defaults, plus the non-default distances (the cosine distance `1 - cos` has the same "exactly 0" need).
CASES = [(name, ()) for name in REGISTRY_NAMES] + [
    ("contrastive", (("distance", "squared_euclidean"),)),
    ("contrastive", (("distance", "cosine"),)),
    ("triplet", (("distance", "cosine"),)),
    ("gpw_pair", (("distance", "cosine"),)),
    ("gpw_pair", (("distance", "squared_euclidean"),)),
    ("lifted_structure", (("distance", "cosine"),)),
    ("pairnet", (("distance", "euclidean"),)),
]
CASE_IDS = [name + "".join(f"[{k}={v}]" for k, v in hparams) for name, hparams in CASES]


def _duplicate_rows_batch():
  rng = np.random.default_rng(0)
  embeddings = rng.normal(size=(24, 16)).astype(np.float32)
  embeddings[1::4] = embeddings[0::4]                     # rows 1, 5, 9, ... copied from rows 0, 4, 8, ...
  labels = (np.arange(24) // 4).astype(np.int32)          # 6 classes of 4
  return embeddings, labels


def _identical_rows_batch():
  embeddings, labels = _duplicate_rows_batch()
  return np.repeat(embeddings[:1], 24, axis=0), labels


BATCHES = {"duplicate_rows": _duplicate_rows_batch, "all_rows_identical": _identical_rows_batch}


@functools.lru_cache(maxsize=None)
def _loss(name, hparams):
  return functools.partial(losses.get(name), **dict(hparams))


@pytest.mark.parametrize("batch", tuple(BATCHES))
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_jit_eager_and_vmap_agree_on_identical_rows(case, batch):
  loss = _loss(*case)
  embeddings, labels = BATCHES[batch]()
  value_and_grad = jax.value_and_grad(loss)
  eager_value, eager_grad = value_and_grad(jnp.asarray(embeddings), jnp.asarray(labels))
  jit_value, jit_grad = jax.jit(value_and_grad)(embeddings, labels)
  vmap_value, vmap_grad = jax.vmap(value_and_grad)(np.stack([embeddings] * 2), np.stack([labels] * 2))
  for what, value, grad in (("jit", jit_value, jit_grad), ("vmap", vmap_value[1], vmap_grad[1])):
    np.testing.assert_allclose(float(value), float(eager_value), rtol=1e-6, atol=1e-7,
                               err_msg=f"{what} value vs eager")
    np.testing.assert_allclose(np.asarray(grad), np.asarray(eager_grad), rtol=1e-5, atol=1e-6,
                               err_msg=f"{what} gradient vs eager")
  assert np.isfinite(float(eager_value)) and np.isfinite(np.asarray(eager_grad)).all()

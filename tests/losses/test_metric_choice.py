"""The distance / similarity of each pair-based loss is a hyperparameter (issue 10, item 11).

For every loss that can meaningfully use more than one, each non-default choice of the convenience form equals the
matrix form on that matrix, computed here independently in numpy (float64, rounded to float32); the default is
unchanged; a bad name raises a ValueError naming the argument (eagerly and at trace time).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metric_jax import losses
from metric_jax.losses import binomial, contrastive, gpw, lifted, multi_similarity, nca, npair, triplet

B, D = 12, 6


def _np_matrix(embeddings, kind):
  e = embeddings.astype(np.float64)
  sq = ((e[:, None, :] - e[None, :, :]) ** 2).sum(-1)
  n = e / np.linalg.norm(e, axis=1, keepdims=True)
  cos = n @ n.T
  return {
      "euclidean": np.sqrt(sq),
      "squared_euclidean": sq,
      "cosine_distance": 1.0 - cos,
      "negative_cosine": -cos,
      "cosine_similarity": cos,
      "dot": e @ e.T,
  }[kind].astype(np.float32)


# (registry name, argument, default, {non-default choice: the matrix it builds}, matrix form)
CHOICES = (
    ("contrastive", "distance", "euclidean", {"squared_euclidean": "squared_euclidean", "cosine": "cosine_distance"},
     contrastive.contrastive_loss),
    ("pairnet", "distance", "squared_euclidean", {"euclidean": "euclidean", "cosine": "cosine_distance"},
     contrastive.pairnet_loss),
    ("triplet", "distance", "euclidean", {"squared_euclidean": "squared_euclidean", "cosine": "cosine_distance"},
     triplet.triplet_loss),
    ("nca", "distance", "squared_euclidean", {"euclidean": "euclidean", "cosine": "cosine_distance"}, nca.nca_loss),
    ("lifted_structure", "distance", "euclidean",
     {"squared_euclidean": "squared_euclidean", "cosine": "cosine_distance"}, lifted.lifted_structure_loss),
    ("generalized_lifted_structure", "distance", "euclidean",
     {"squared_euclidean": "squared_euclidean", "cosine": "cosine_distance"},
     lifted.generalized_lifted_structure_loss),
    ("gpw_pair", "distance", "euclidean",
     {"squared_euclidean": "squared_euclidean", "cosine": "cosine_distance", "negative_cosine": "negative_cosine"},
     gpw.gpw_pair_loss),
    ("gpw_triplet", "distance", "euclidean",
     {"squared_euclidean": "squared_euclidean", "cosine": "cosine_distance", "negative_cosine": "negative_cosine"},
     gpw.gpw_triplet_loss),
    ("multi_similarity", "similarity", "cosine", {"dot": "dot"}, multi_similarity.multi_similarity_loss),
    ("binomial_deviance", "similarity", "cosine", {"dot": "dot"}, binomial.binomial_deviance_loss),
    ("npair_mc", "similarity", "dot", {"cosine": "cosine_similarity"}, npair.npair_mc_loss),
    ("npair_ovo", "similarity", "dot", {"cosine": "cosine_similarity"}, npair.npair_ovo_loss),
)
DEFAULT_MATRIX = {"euclidean": "euclidean", "squared_euclidean": "squared_euclidean", "cosine": "cosine_similarity",
                  "dot": "dot"}
NON_DEFAULT = [(name, arg, choice, kind, fn) for name, arg, _, kinds, fn in CHOICES for choice, kind in kinds.items()]


def _batch():
  rng = np.random.default_rng(7)
  embeddings = (rng.normal(size=(B, D)) / np.sqrt(D) * rng.uniform(0.6, 1.4, size=(B, 1))).astype(np.float32)
  labels = (np.arange(B) % 4).astype(np.int32)
  return embeddings, labels


@pytest.mark.parametrize("name,arg,choice,kind,matrix_form", NON_DEFAULT,
                         ids=[f"{n}[{a}={c}]" for n, a, c, _, _ in NON_DEFAULT])
def test_non_default_choice_equals_the_matrix_form_on_that_matrix(name, arg, choice, kind, matrix_form):
  embeddings, labels = _batch()
  fn = losses.get(name)
  got = jax.jit(lambda e, l: fn(e, l, **{arg: choice}))(embeddings, labels)
  expected = matrix_form(jnp.asarray(_np_matrix(embeddings, kind)), jnp.asarray(labels))
  np.testing.assert_allclose(float(got), float(expected), rtol=1e-4, atol=1e-6)
  default = fn(jnp.asarray(embeddings), jnp.asarray(labels))
  assert abs(float(got) - float(default)) > 1e-4, f"{name}: {arg}={choice!r} gives the default's value"
  grad = jax.grad(lambda e: fn(e, jnp.asarray(labels), **{arg: choice}))(jnp.asarray(embeddings))
  assert np.isfinite(np.asarray(grad)).all() and np.abs(np.asarray(grad)).max() > 0


@pytest.mark.parametrize("name,arg,default,kinds,matrix_form", CHOICES, ids=[c[0] for c in CHOICES])
def test_default_choice_is_the_papers_and_unchanged(name, arg, default, kinds, matrix_form):
  embeddings, labels = _batch()
  fn = losses.get(name)
  got = fn(jnp.asarray(embeddings), jnp.asarray(labels))
  np.testing.assert_allclose(float(got), float(fn(jnp.asarray(embeddings), jnp.asarray(labels), **{arg: default})),
                             rtol=0, atol=0)
  expected = matrix_form(jnp.asarray(_np_matrix(embeddings, DEFAULT_MATRIX[default])), jnp.asarray(labels))
  np.testing.assert_allclose(float(got), float(expected), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name,arg", [(c[0], c[1]) for c in CHOICES], ids=[c[0] for c in CHOICES])
def test_bad_choice_raises_an_error_naming_the_argument(name, arg):
  embeddings, labels = _batch()
  fn = losses.get(name)
  for bad in ("manhattan", "cosine_similarity"):
    with pytest.raises(ValueError, match=rf"`{arg}` must be one of"):
      fn(embeddings, labels, **{arg: bad})
    with pytest.raises(ValueError, match=rf"`{arg}` must be one of"):
      jax.jit(lambda e, l: fn(e, l, **{arg: bad}))(embeddings, labels)


def test_triplet_squared_shorthand_and_its_conflict():
  embeddings, labels = _batch()
  fn = losses.get("triplet")
  np.testing.assert_allclose(float(fn(embeddings, labels, squared=True)),
                             float(fn(embeddings, labels, distance="squared_euclidean")), rtol=0, atol=0)
  with pytest.raises(ValueError, match=r"squared.*distance"):
    fn(embeddings, labels, squared=True, distance="cosine")

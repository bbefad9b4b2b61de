"""The distance or similarity a convenience-form loss builds from its embeddings, chosen by a hyperparameter.

Distance losses take `distance=`:
  `"euclidean"`          `|a - b|` (zero gradient at 0; `metric_jax.pairwise.euclidean`);
  `"squared_euclidean"`  `|a - b|^2`;
  `"cosine"`             `1 - cos(a, b)` in `[0, 2]` (the embeddings are L2-normalized inside; for unit-norm
                         embeddings it is `|a - b|^2 / 2`).
Similarity losses take `similarity=`:
  `"cosine"`             `cos(a, b)` in `[-1, 1]` (L2-normalized inside);
  `"dot"`                `a . b` (embeddings used as given).
Identical rows are exactly 0 apart / exactly cosine-similar 1 in every execution mode (see `metric_jax.pairwise`).
"""

from __future__ import annotations

from metric_jax import _checks, pairwise

DISTANCE_FNS = {
    "euclidean": pairwise.euclidean,
    "squared_euclidean": pairwise.squared_euclidean,
    "cosine": pairwise.cosine_distance,
}
SIMILARITY_FNS = {
    "cosine": pairwise.cosine_similarity,
    "dot": pairwise.dot_product,
}
DISTANCES = tuple(DISTANCE_FNS)
SIMILARITIES = tuple(SIMILARITY_FNS)


def distance_matrix(embeddings, distance: str, choices=DISTANCES, keys=None):
  """`[B, B]` (or `[B, M]` with `keys`) distances named `distance`; a name outside `choices` raises a ValueError
  naming `distance`."""
  _checks.check_choice(distance, "distance", choices)
  return DISTANCE_FNS[distance](embeddings, keys)


def similarity_matrix(embeddings, similarity: str, choices=SIMILARITIES, keys=None):
  """`[B, B]` (or `[B, M]` with `keys`) similarities named `similarity`; a name outside `choices` raises a ValueError
  naming `similarity`."""
  _checks.check_choice(similarity, "similarity", choices)
  return SIMILARITY_FNS[similarity](embeddings, keys)


def distance_fn(distance: str, choices=DISTANCES):
  """`fn(queries [b, D], keys [M, D] or None) -> [b, M]` distances named `distance` (checked now, naming
  `distance`); `keys=None` is the square matrix of the queries."""
  _checks.check_choice(distance, "distance", choices)
  return DISTANCE_FNS[distance]


def similarity_fn(similarity: str, choices=SIMILARITIES):
  """`fn(queries, keys or None) -> [b, M]` similarities named `similarity` (checked now, naming `similarity`)."""
  _checks.check_choice(similarity, "similarity", choices)
  return SIMILARITY_FNS[similarity]


__all__ = ["DISTANCES", "SIMILARITIES", "distance_matrix", "similarity_matrix", "distance_fn", "similarity_fn"]

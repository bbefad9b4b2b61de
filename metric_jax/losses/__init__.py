"""Deep metric learning losses: pure, jittable functions.

`get(name)` returns the convenience form `fn(embeddings, labels, *, valid=None, **hparams) -> scalar`; each module also
exposes the matrix form (a `[B, M]` similarity or distance matrix, query labels, key labels, validity masks).
"""

from metric_jax.losses._registry import get, names, register
from metric_jax.losses import (  # noqa: F401  (importing registers the losses)
    binomial,
    contrastive,
    gpw,
    histogram,
    lifted,
    multi_similarity,
    nca,
    npair,
    triplet,
)

__all__ = ["get", "names", "register"]

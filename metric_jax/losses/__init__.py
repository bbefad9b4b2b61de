"""Deep metric learning losses: pure, jittable functions.

`get(name)` returns the convenience form `fn(embeddings, labels, *, valid=None, **hparams) -> scalar`; each module also
exposes the matrix form (a `[B, M]` similarity or distance matrix, query labels, key labels, validity masks; for the
proxy / classifier losses a `[B, C]` class matrix). Labels are integer class ids `[B]` or multi-hot `[B, L]`
(`accepts_multi_hot(name)`). Losses with learnable parameters (`has_params(name)`) take `params=` from
`init_params(name, key, num_classes=..., embedding_dim=...)`.
"""

from metric_jax.losses._registry import accepts_multi_hot, get, has_params, init_params, names, register
from metric_jax.losses import (  # noqa: F401  (importing registers the losses)
    binomial,
    circle,
    contrastive,
    gpw,
    histogram,
    lifted,
    margins,
    multi_similarity,
    nca,
    npair,
    proxy,
    softtriple,
    supcon,
    triplet,
)

__all__ = ["get", "names", "register", "init_params", "has_params", "accepts_multi_hot"]

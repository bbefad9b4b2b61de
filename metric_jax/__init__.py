"""metric_jax: deep metric learning in JAX / Flax NNX.

The losses of five seed papers and the classics they build on as pure, jittable functions, exact chunked evaluation,
offline tfds builders and a data-parallel training loop:

  metric_jax.losses        `get(name)(embeddings, labels, *, valid=None, **hparams)`; matrix forms per module
  metric_jax.evaluation    `evaluate(query_embeddings, query_labels, ...)`: Recall@K, MAP@R, NMI, ...
  metric_jax.pairwise      similarity / distance matrices
  metric_jax.labels        positive / negative / valid masks
  metric_jax.mining        mining masks (thresholds, batch-hard, semi-hard, epsilon-mining)
  metric_jax.weighting     GPW pair weights
  metric_jax.regularizers  density adaptivity, GOR, embedding L2, entropy
  metric_jax.data          offline builders, splits, samplers, loader     (extra `data`)
  metric_jax.models        Flax NNX networks                              (extra `train`)
  metric_jax.train         SPMD training step, objectives, checkpoints    (extra `train`)

Submodules are imported on first attribute access (`import metric_jax; metric_jax.evaluation` works), so importing
`metric_jax` costs nothing and the plain install (jax, numpy, scikit-learn, scipy) serves losses and evaluation.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"  # the one version: setup.py reads it from this line

SUBMODULES = ("data", "evaluation", "labels", "losses", "mining", "models", "pairwise", "regularizers", "train",
              "weighting")

__all__ = ["__version__", *SUBMODULES]

if TYPE_CHECKING:  # for static analysis only; at run time the submodules load lazily through `__getattr__`
  from metric_jax import (data, evaluation, labels, losses, mining, models, pairwise, regularizers, train,  # noqa: F401
                          weighting)


# The extra that provides what a submodule imports beyond the plain install.
_EXTRA = {"data": "data", "models": "train", "train": "train"}


def __getattr__(name: str):
  """PEP 562: imports submodule `name` on first access; a missing extra is named in the error."""
  if name not in SUBMODULES:
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
  try:
    return importlib.import_module(f"{__name__}.{name}")
  except ModuleNotFoundError as e:
    if name in _EXTRA and e.name and e.name.split(".")[0] != __name__:
      raise ModuleNotFoundError(f"metric_jax.{name} needs {e.name!r}, which the plain install does not include: "
                                f"pip install 'metric_jax[{_EXTRA[name]}]'", name=e.name) from e
    raise


def __dir__():
  return sorted(set(globals()) | set(SUBMODULES))

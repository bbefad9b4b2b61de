"""The table of registry losses the contract tests run over: every registry name with its defaults, plus option combos.

The table *is* the contract: a name listed here that the registry does not hold makes its tests fail (not skip).

`zero_without_pos` / `zero_without_neg`: whether the loss (with `zero_hparams` added) is exactly 0, with a zero gradient,
on a batch that has no positive pair / no negative pair. Losses that sum independent positive and negative terms
(contrastive, PairNet PLoss, binomial deviance, GPW pair form) have a non-zero value from the other kind of pair and are
marked False for it. `zero_hparams` switches off terms that do not come from pairs at all (N-pair's L2 penalty on the
embedding norms). Every loss is 0 on a batch without any pair (a single valid row).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict

from metric_jax import pairwise
from metric_jax.losses import (binomial, circle, contrastive, gpw, histogram, lifted, margins, multi_similarity, nca,
                               npair, proxy, softtriple, supcon, triplet)

REGISTRY_NAMES = (
    "contrastive",
    "pairnet",
    "triplet",
    "npair_mc",
    "npair_ovo",
    "nca",
    "lifted_structure",
    "generalized_lifted_structure",
    "multi_similarity",
    "binomial_deviance",
    "histogram",
    "gpw_pair",
    "gpw_triplet",
    # Issue 12 (pair-based; the losses with learnable parameters are checked in test_param_contract.py).
    "supcon",
    "ntxent",
    "circle",
)


@dataclasses.dataclass(frozen=True)
class Case:
  name: str
  hparams: Dict[str, Any] = dataclasses.field(default_factory=dict)
  zero_without_pos: bool = True
  zero_without_neg: bool = True
  zero_hparams: Dict[str, Any] = dataclasses.field(default_factory=dict)

  @property
  def stop_gradient_weights(self) -> bool:
    if self.name == "circle":
      return self.hparams.get("detach_weights", True)
    return self.name.startswith("gpw_") and self.hparams.get("weighting", "constant") != "constant"

  @property
  def value_derivative_hparams(self) -> Dict[str, Any]:
    """Hyperparameters under which the gradient is the derivative of the value (for the finite-difference check)."""
    if not self.stop_gradient_weights:
      return {}
    return {"detach_weights": False} if self.name == "circle" else {"weighting": "constant"}

  @property
  def id(self) -> str:
    if not self.hparams:
      return self.name
    return self.name + "[" + ",".join(f"{k}={v}" for k, v in sorted(self.hparams.items())) + "]"


def _pairwise(name, **hparams):
  """A loss that sums a positive-pair term and a negative-pair term: non-zero with either kind alone."""
  return Case(name, hparams, zero_without_pos=False, zero_without_neg=False)


CASES = (
    # S0 / Hadsell et al. 2006.
    _pairwise("contrastive"),
    _pairwise("contrastive", distance="squared_euclidean", hinge_power=2, pos_margin=0.1),
    _pairwise("pairnet"),
    _pairwise("pairnet", b=0.3, m=1.0),
    # Triplet (Schroff et al. 2015 / Hermans et al. 2017).
    Case("triplet"),
    Case("triplet", {"mining": "hard"}),
    Case("triplet", {"mining": "semihard"}),
    Case("triplet", {"mining": "hard", "soft": True}),
    Case("triplet", {"mining": "all", "soft": True}),
    Case("triplet", {"mining": "all", "squared": True, "margin": 0.5}),
    # S3: N-pair (Sohn 2016) and NCA (Goldberger et al. 2005).
    Case("npair_mc"),
    Case("npair_mc", {"symmetric": True}),
    Case("npair_mc", {"l2_reg": 0.002}, zero_hparams={"l2_reg": 0.0}),
    Case("npair_ovo"),
    Case("npair_ovo", {"symmetric": True}),
    Case("nca"),
    Case("nca", {"softmax_scale": 4.0}),
    # Lifted structure (Song et al. 2016) and its generalization (Hermans et al. 2017).
    Case("lifted_structure"),
    Case("generalized_lifted_structure"),
    # Multi-similarity (Wang et al. 2019): with and without the "+1", without epsilon-mining.
    Case("multi_similarity"),
    Case("multi_similarity", {"plus_one": False}),
    _pairwise("multi_similarity", mining=False),
    # S4: binomial deviance (Yi et al. 2014) and histogram loss (Ustinova & Lempitsky 2016).
    _pairwise("binomial_deviance"),
    _pairwise("binomial_deviance", neg_cost=1.0, alpha=10.0),
    Case("histogram"),
    Case("histogram", {"num_bins": 11, "margin_bins": 1}),
    # S1: general pair weighting (Wang et al. 2019), Eq. 18 / Eq. 21 with mining x weighting x normalization.
    _pairwise("gpw_pair"),
    _pairwise("gpw_pair", weighting="power", p=2.0, q=2.0, normalize="anchor", distance="squared_euclidean"),
    Case("gpw_pair", {"mining": "multi_similarity", "weighting": "exponential", "normalize": "batch"}),
    Case("gpw_triplet"),
    Case("gpw_triplet", {"mining": "batch_hard", "weighting": "exponential"}),
    Case("gpw_triplet", {"mining": "semihard", "weighting": "power", "p": 2.0, "normalize": "anchor",
                         "distance": "squared_euclidean"}),
    # SupCon (Khosla et al. 2020): a query whose keys are all positives keeps its term (>= log |P|), as in the paper.
    Case("supcon", zero_without_neg=False),
    Case("supcon", {"temperature": 0.5}, zero_without_neg=False),
    # NT-Xent (Chen et al. 2020).
    Case("ntxent"),
    Case("ntxent", {"temperature": 0.5}),
    # Circle (Sun et al. 2020): weights alpha detached (the paper's gradient) or not; the face-recognition setting.
    Case("circle"),
    Case("circle", {"detach_weights": False}),
    Case("circle", {"margin": 0.25, "gamma": 256.0}),
)

DEFAULT_CASES = tuple(c for c in CASES if not c.hparams)

assert sorted(c.name for c in DEFAULT_CASES) == sorted(REGISTRY_NAMES)


# Every registry loss -> (its matrix form, the pairwise matrix its convenience form builds by default); None for the
# losses with learnable class parameters, whose matrix form takes the embeddings x class-weights matrix.
MATRIX_FORMS = {
    "contrastive": (contrastive.contrastive_loss, pairwise.euclidean),
    "pairnet": (contrastive.pairnet_loss, pairwise.squared_euclidean),
    "triplet": (triplet.triplet_loss, pairwise.euclidean),
    "npair_mc": (npair.npair_mc_loss, pairwise.dot_product),
    "npair_ovo": (npair.npair_ovo_loss, pairwise.dot_product),
    "nca": (nca.nca_loss, pairwise.squared_euclidean),
    "lifted_structure": (lifted.lifted_structure_loss, pairwise.euclidean),
    "generalized_lifted_structure": (lifted.generalized_lifted_structure_loss, pairwise.euclidean),
    "multi_similarity": (multi_similarity.multi_similarity_loss, pairwise.cosine_similarity),
    "binomial_deviance": (binomial.binomial_deviance_loss, pairwise.cosine_similarity),
    "histogram": (histogram.histogram_loss, pairwise.cosine_similarity),
    "gpw_pair": (gpw.gpw_pair_loss, pairwise.euclidean),
    "gpw_triplet": (gpw.gpw_triplet_loss, pairwise.euclidean),
    "supcon": (supcon.supcon_loss, pairwise.cosine_similarity),
    "ntxent": (supcon.ntxent_loss, pairwise.cosine_similarity),
    "circle": (circle.circle_loss, pairwise.cosine_similarity),
    "proxy_nca": (proxy.proxy_nca_loss, None),
    "proxy_anchor": (proxy.proxy_anchor_loss, None),
    "normalized_softmax": (margins.normalized_softmax_loss, None),
    "cosface": (margins.cosface_loss, None),
    "arcface": (margins.arcface_loss, None),
    "subcenter_arcface": (margins.subcenter_arcface_loss, None),
    "softtriple": (softtriple.softtriple_loss, None),
}

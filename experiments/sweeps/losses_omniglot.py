"""The library's reality-check table: every registry loss on the Omniglot protocol, paper defaults, 3 seeds.

Every variant shares the base config (`experiments/configs/omniglot.py`: 28x28 inverted Omniglot, LeNet-style convnet,
64-d embedding, PK batches of 16 classes x 4, Adam 1e-3, 1200 steps, step chosen on the validation alphabets, test on
the alphabet-disjoint test alphabets). Hyperparameters are the papers' / pytorch-metric-learning's defaults; where a
default does not fit L2-normalized 64-d embeddings a grid of at most 3 values of the loss's main hyperparameter is run
and the validation set picks one (`group`). Losses with learnable class parameters (proxies, class weights) train
them at a learning-rate multiplier chosen on validation among 1, 10 and 100 (the papers use ~100x), N-pair on
unnormalized embeddings with an L2 penalty (S3). Every grid value runs on seed 0; the value with the best validation
MAP@R on seed 0 then runs on seeds 1 and 2 (`grid_seeds`), so a grid of three costs five runs instead of nine.

  python -m experiments.sweep --sweep experiments/sweeps/losses_omniglot.py --workdir runs/losses_omniglot
"""

from experiments.sweep import Sweep, Variant

PROXY_LR_GRID = (1.0, 10.0, 100.0)
UNNORMALIZED_NPAIR = {"model.normalize": False, "objective.loss_hparams.l2_reg": 0.002}


def _v(name, loss, group=None, **hparams):
  overrides = {"objective.loss": loss}
  for k, v in hparams.items():
    if k.startswith("cfg_"):
      continue
    overrides[f"objective.loss_hparams.{k}"] = v
  return Variant(name, overrides, group=group, label=group or name)


def variants():
  out = [
      _v("contrastive", "contrastive"),
      _v("pairnet_ploss", "pairnet"),
      _v("triplet_all", "triplet", mining="all"),
      _v("triplet_hard", "triplet", mining="hard"),
      _v("triplet_semihard", "triplet", mining="semihard"),
      Variant("npair_mc", {"objective.loss": "npair_mc", **UNNORMALIZED_NPAIR}),
      Variant("npair_ovo", {"objective.loss": "npair_ovo", **UNNORMALIZED_NPAIR}),
      _v("lifted_structure", "lifted_structure"),
      _v("generalized_lifted_structure", "generalized_lifted_structure"),
      _v("multi_similarity", "multi_similarity"),
      _v("binomial_deviance", "binomial_deviance"),
      _v("histogram", "histogram"),
      _v("gpw_pair", "gpw_pair"),
      _v("gpw_triplet", "gpw_triplet"),
      _v("supcon", "supcon"),
      _v("ntxent", "ntxent"),
      _v("circle", "circle"),
  ]
  # NCA's scale on squared distances of unit vectors (D^2 in [0, 4]): the default 1 is too flat; grid on validation.
  out += [_v(f"nca_s{s}", "nca", group="nca", softmax_scale=float(s)) for s in (1, 4, 16)]
  # Losses with learnable class parameters: their learning-rate multiplier chosen on validation.
  for name in ("proxy_nca", "proxy_anchor", "normalized_softmax", "cosface", "arcface", "subcenter_arcface",
               "softtriple"):
    out += [Variant(f"{name}_lr{m:g}", {"objective.loss": name, "optimizer.loss_lr_multiplier": m}, group=name,
                    label=name) for m in PROXY_LR_GRID]
  return out


def get_sweep():
  return Sweep(
      name="losses_omniglot", base="experiments/configs/omniglot.py", variants=variants(), seeds=(0, 1, 2),
      grid_seeds=(0,),
      title="Every loss on Omniglot (alphabet-disjoint, validation-selected): the reality-check table",
      protocol=("train on small1's Greek, Korean, Latin (90 characters); choose the step by MAP@R on the validation "
                "alphabets Balinese, Early_Aramaic (46 characters); report at that step on small2's "
                "Japanese_(katakana), Sanskrit, Tagalog (106 characters, 2120 images): no alphabet, character or "
                "image shared. 28x28, LeNet-style convnet, 64-d embedding, PK 16x4, Adam 1e-3, 1200 steps, "
                "evaluation every 200 steps; 3 seeds."))

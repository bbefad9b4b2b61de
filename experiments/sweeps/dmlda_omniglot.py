"""S2 (density adaptivity, DML-DA) on the Omniglot protocol: contrastive, triplet and N-pair-mc, each without and with
the density-adaptivity regularizer (lambda = 10, eta = 0.5, learnable alpha_c initialised at 0.5) and with eta = 0
(no inter-class correlation term: S2's DML-DA-); the global orthogonal regularizer (GOR) and an entropy regularizer as
baselines on contrastive. Every variant also reports Recall@1 on (2000 images of) the training classes, to test S2's
claim that density adaptivity narrows the gap between training and test Recall@1 (its Figure 1d).

Embeddings are L2-normalized for every variant here (S2 measures densities as mean squared distances to class centroids
of normalized embeddings; D0 on the normalized pre-embedding features), so N-pair-mc runs on the dot products of unit
vectors (cosine similarities), with no L2 penalty.

  python -m experiments.sweep --sweep experiments/sweeps/dmlda_omniglot.py --workdir runs/dmlda_omniglot
"""

from experiments.sweep import Claim, Sweep, Variant

BASES = {"contrastive": {"objective.loss": "contrastive"},
         "triplet": {"objective.loss": "triplet", "objective.loss_hparams.mining": "all"},
         "npair_mc": {"objective.loss": "npair_mc"}}
DA = {"objective.density_adaptivity_weight": 10.0, "objective.density_adaptivity_eta": 0.5}
DA_MINUS = {"objective.density_adaptivity_weight": 10.0, "objective.density_adaptivity_eta": 0.0}


def variants():
  out = []
  for name, base in BASES.items():
    out += [Variant(name, base), Variant(f"{name}_da", {**base, **DA}, label=f"{name} + DA"),
            Variant(f"{name}_da_minus", {**base, **DA_MINUS}, label=f"{name} + DA- (eta 0)")]
  out += [Variant("contrastive_gor", {**BASES["contrastive"], "objective.global_orthogonal_weight": 1.0},
                  label="contrastive + GOR"),
          Variant("contrastive_entropy", {**BASES["contrastive"], "objective.entropy_weight": 1.0},
                  label="contrastive + entropy")]
  return out


def extra(results, results_dir):
  """The train / test Recall@1 gap per variant (S2 Figure 1d)."""
  from experiments import report
  import numpy as np
  lines = ["## Generalization gap: Recall@1 on training classes minus test classes (S2, Figure 1d)", "",
           "| variant | train-class Recall@1 | test Recall@1 | gap |", "|---|---|---|---|"]
  for name, v in results["variants"].items():
    recs = v["records"]
    if "train_classes" not in recs[0]["selected"]:
      continue
    tr = [r["selected"]["train_classes"]["recall@1"] for r in recs]
    te = [r["selected"]["test"]["recall@1"] for r in recs]
    gap = report.stat(np.asarray(tr) - np.asarray(te))
    lines.append(f"| {v['label']} | {report.fmt(report.stat(tr))} | {report.fmt(report.stat(te))} | "
                 f"{report.fmt(gap)} |")
  return lines + [""]


def get_sweep():
  claims = []
  for name in BASES:
    claims.append(Claim("S2", f"density adaptivity improves {name}", f"{name}_da", name))
  claims += [Claim("S2", "DA (eta 0.5) beats DA- (eta 0) on contrastive", "contrastive_da", "contrastive_da_minus"),
             Claim("S2", "DA beats GOR on contrastive", "contrastive_da", "contrastive_gor"),
             Claim("S2", "DA beats the entropy regularizer on contrastive", "contrastive_da", "contrastive_entropy")]
  return Sweep(
      name="dmlda_omniglot", base="experiments/configs/omniglot.py", variants=variants(), seeds=(0, 1, 2),
      base_overrides={"eval_train_classes": True},
      title="S2 (DML-DA): density adaptivity on Omniglot",
      protocol=("the Omniglot protocol of experiments/configs/omniglot.py; lambda = 10, eta = 0.5 (DA) or 0 (DA-), "
                "alpha_c learnable (init 0.5) at the base learning rate, D0 from the untrained network's "
                "L2-normalized fc1 features; GOR and entropy weights 1 (our choice); training-class Recall@1 on a "
                "fixed subset of 2000 training images."),
      claims=claims, extra=extra)

"""S4 (histogram loss) on the Omniglot protocol: histogram vs binomial deviance (C = 25 and C = 2) vs lifted structured
similarity softmax (LSSS) vs triplet with semi-hard negatives; the histogram bin width Delta in {0.005, 0.01, 0.02,
0.04}; examples per batch 64 / 128 / 256 (PK with 4 images per class: at most 10 per class, as S4 asks).

Delta = 2 / (R - 1) for R bins on [-1, 1]: R = 401, 201, 101, 51 (the registry default R = 100 is Delta = 0.0202).
Binomial deviance uses alpha = 2, beta = 0.5 (Yi et al.) with negative cost C = 25 or 2.

  python -m experiments.sweep --sweep experiments/sweeps/histogram_omniglot.py --workdir runs/histogram_omniglot
"""

import os

from experiments.sweep import Claim, Sweep, Variant

BINS = {0.005: 401, 0.01: 201, 0.02: 101, 0.04: 51}


def variants():
  out = [Variant(f"histogram_d{d}", {"objective.loss": "histogram", "objective.loss_hparams.num_bins": r},
                 label=f"histogram (Delta {d})") for d, r in BINS.items()]
  out += [Variant("binomial_c25", {"objective.loss": "binomial_deviance", "objective.loss_hparams.neg_cost": 25.0},
                  label="binomial deviance (C 25)"),
          Variant("binomial_c2", {"objective.loss": "binomial_deviance", "objective.loss_hparams.neg_cost": 2.0},
                  label="binomial deviance (C 2)"),
          Variant("lsss", {"objective.loss": "lifted_structure"}, label="lifted structure (LSSS)"),
          Variant("triplet_semihard", {"objective.loss": "triplet", "objective.loss_hparams.mining": "semihard"},
                  label="triplet (semihard)")]
  for p in (32, 64):
    for loss, hp in (("histogram", {"objective.loss_hparams.num_bins": 101}),
                     ("binomial_c25", {"objective.loss_hparams.neg_cost": 25.0})):
      real = "histogram" if loss == "histogram" else "binomial_deviance"
      out.append(Variant(f"{loss}_batch{4 * p}", {"objective.loss": real, **hp, "classes_per_batch": p},
                         label=f"{loss} (batch {4 * p})"))
  return out


def extra(results, results_dir):
  """Similarity histograms of the test pairs at the end of training (positive vs negative), as the runs recorded
  them: the quantity S4's loss acts on."""
  import numpy as np
  from experiments import report
  plt = report._plt()
  shown = [n for n in ("histogram_d0.02", "binomial_c25", "lsss", "triplet_semihard") if n in results["variants"]]
  if not shown:
    return []
  fig, axes = plt.subplots(1, len(shown), figsize=(3.2 * len(shown), 2.8), sharey=True)
  axes = np.atleast_1d(axes)
  for ax, name in zip(axes, shown):
    h = results["variants"][name]["records"][0]["diagnostics"]["similarity_histogram"]
    edges = np.asarray(h["edges"])
    centres = (edges[:-1] + edges[1:]) / 2
    for key, color in (("positive", "tab:green"), ("negative", "tab:red")):
      counts = np.asarray(h[key], np.float64)
      ax.plot(centres, counts / max(counts.sum(), 1), color=color, label=key)
    ax.set_title(results["variants"][name]["label"], fontsize=8)
    ax.set_xlabel("cosine similarity")
  axes[0].set_ylabel("fraction of test pairs")
  axes[0].legend(fontsize=7)
  fig.tight_layout()
  path = os.path.join(results_dir, "histogram_omniglot_similarities.png")
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return ["Similarity distributions of positive and negative test pairs after training (seed 0): "
          "`histogram_omniglot_similarities.png`.", ""]


def get_sweep():
  return Sweep(
      name="histogram_omniglot", base="experiments/configs/omniglot.py", variants=variants(), seeds=(0, 1, 2),
      title="S4 (histogram loss) on Omniglot",
      protocol="the Omniglot protocol of experiments/configs/omniglot.py; batch 64 (PK 16 x 4) unless stated.",
      claims=[
          Claim("S4", "histogram (Delta 0.02) >= binomial deviance (C 25)", "histogram_d0.02", "binomial_c25"),
          Claim("S4", "histogram (Delta 0.02) beats binomial deviance (C 2)", "histogram_d0.02", "binomial_c2"),
          Claim("S4", "histogram beats lifted structure (LSSS)", "histogram_d0.02", "lsss"),
          Claim("S4", "histogram beats triplet (semihard)", "histogram_d0.02", "triplet_semihard"),
      ],
      extra=extra)

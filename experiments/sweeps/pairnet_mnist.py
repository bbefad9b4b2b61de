"""S0 (PairNet) Table 1 on MNIST: siamese, pairloss, pair-soft, singlenet and pairnet x N in {60, 100, 500, 1000, ALL}.

N training images per class are drawn from the official 60,000 training images (3 draws, seeds 0-1-2; for ALL the seeds
change only the initialisation) and every run is tested on the official 10,000 test images, with the paper's evaluation
per method: the network's own softmax classifier W1 for singlenet and pairnet, 1-NN on the fc1 features for siamese and
pairloss, and 1-NN / linear SVM on pairnet's fc1 features for pair-soft (pair-soft trains exactly as pairnet; only the
classifier at test time differs, so it reuses pairnet's runs). The last step is reported (S0 has no validation set).

  python -m experiments.sweep --sweep experiments/sweeps/pairnet_mnist.py --workdir runs/pairnet_mnist
"""

import os

from experiments.sweep import Claim, Sweep, Variant

METHODS = ("siamese", "pairloss", "singlenet", "pairnet")
SAMPLES = (60, 100, 500, 1000, 0)      # 0 = ALL


def _n(n):
  return "all" if n == 0 else str(n)


# (row label, variant method, metric): S0's five methods and how each is evaluated.
ROWS = (("siamese (1-NN)", "siamese", "knn_accuracy"), ("pairloss (1-NN)", "pairloss", "knn_accuracy"),
        ("pair-soft (1-NN)", "pairnet", "knn_accuracy"), ("pair-soft (linear SVM)", "pairnet", "svm_accuracy"),
        ("singlenet (softmax)", "singlenet", "softmax_accuracy"), ("pairnet (softmax)", "pairnet", "softmax_accuracy"))
# The reference the metric-only nets must beat: the same LeNet before training (siamese runs' step 0, same draws).
UNTRAINED_ROWS = (("untrained network (1-NN)", "siamese", "knn_accuracy"),
                  ("untrained network (linear SVM)", "siamese", "svm_accuracy"))


def extra(results, results_dir):
  """S0's Table 1 layout: test accuracy (mean ± std over 3 draws), methods x N, the untrained network's 1-NN / SVM
  accuracy below them, and a plot of accuracy vs N (`<sweep name>_accuracy.png`)."""
  from experiments import report
  name = results["name"]
  lines = ["## S0 Table 1 layout: test accuracy on the official MNIST test set", "",
           "| method (classifier) | " + " | ".join(f"N = {_n(n).upper()}" for n in SAMPLES) + " |",
           "|---|" + "---|" * len(SAMPLES)]
  series = {}
  for (label, method, metric), where in [(r, "selected") for r in ROWS] + [(r, "untrained") for r in UNTRAINED_ROWS]:
    cells = []
    for n in SAMPLES:
      v = results["variants"].get(f"{method}_n{_n(n)}")
      s = v["summary"][where]["test"].get(metric) if v else None
      cells.append(report.fmt(s))
      series.setdefault(label, []).append(s)
    lines.append(f"| {label} | " + " | ".join(cells) + " |")
  lines += ["", "S0's own Table 1 numbers are not part of the offline material this repository was built with, so "
            "they are not reproduced here; compare by the claims above (the paper's qualitative findings).", "",
            f"![accuracy vs N]({name}_accuracy.png)", ""]
  plt = report._plt()
  fig, ax = plt.subplots(figsize=(6.4, 4.2))
  xs = list(range(len(SAMPLES)))
  for label, stats in series.items():
    pts = [(x, s["mean"], s["std"] or 0.0) for x, s in zip(xs, stats) if s is not None]
    if pts:
      style = {"ls": "--" if "1-NN" in label else ":", "color": "grey"} if label.startswith("untrained") else {}
      ax.errorbar([p[0] for p in pts], [p[1] for p in pts], yerr=[p[2] for p in pts], marker="o", capsize=3,
                  label=label, **style)
  ax.set_xticks(xs)
  ax.set_xticklabels([_n(n) for n in SAMPLES])
  ax.set(xlabel="training images per class (N)", ylabel="test accuracy",
         title="S0 on MNIST: test accuracy vs N (mean ± std over 3 draws)")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(os.path.join(results_dir, f"{name}_accuracy.png"), dpi=100)
  plt.close(fig)
  return lines


def get_sweep():
  variants = [Variant(f"{m}_n{_n(n)}", {"objective.kind": m, "samples_per_class": n}, label=f"{m} N={_n(n)}")
              for n in SAMPLES for m in METHODS]
  return Sweep(
      name="pairnet_mnist", base="experiments/configs/pairnet_mnist.py", variants=variants, seeds=(0, 1, 2),
      title="S0 (PairNet): classification with a pairwise constraint on limited MNIST data",
      protocol=("N images per class from the official 60k MNIST training set (3 draws), tested on the official 10k "
                "test set; the paper's LeNet as a two-channel net (PLoss on fc1, m = 1, b = 0.5, lambda = 1; siamese: "
                "b = m), 64 pairs per step, SGD lr 0.01 / momentum 0.9 / weight decay 5e-4, 1000 steps, last step "
                "reported."),
      metrics=("softmax_accuracy", "knn_accuracy", "svm_accuracy"),
      claims=[
          Claim("S0", "pairnet (softmax) beats singlenet with N = 60", "pairnet_n60", "singlenet_n60",
                "softmax_accuracy"),
          Claim("S0", "pairnet (softmax) beats singlenet with N = 100", "pairnet_n100", "singlenet_n100",
                "softmax_accuracy"),
          Claim("S0", "pairnet (softmax) beats singlenet with all data", "pairnet_nall", "singlenet_nall",
                "softmax_accuracy"),
          Claim("S0", "pairloss beats siamese (1-NN, N = 60)", "pairloss_n60", "siamese_n60", "knn_accuracy"),
          Claim("S0", "pairloss beats siamese (1-NN, N = 500)", "pairloss_n500", "siamese_n500", "knn_accuracy"),
          Claim("S0", "pair-soft (1-NN on pairnet features) beats pairloss (N = 60)", "pairnet_n60", "pairloss_n60",
                "knn_accuracy"),
      ],
      extra=extra)

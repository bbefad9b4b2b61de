"""S0 (PairNet) limited-data sweep on MNIST: every training method x N images per class x 3 seeds, one table.

Methods (S0): `singlenet` (softmax only), `pairnet` (softmax on both channels + lambda PLoss), `pairloss` (PLoss only,
b < m), `siamese` (PLoss with b = m, i.e. contrastive with margin 2m on D^2). Each is evaluated by the network's own
softmax classifier W1 (meaningful for the methods that train it) and by kNN (k = 1) and a linear SVM on the fc1
features (for `pairnet` the latter is S0's `pair-soft`). Every configuration runs `experiments.train.run_seeds` with
the seeds of `experiments/configs/pairnet_mnist.py` (each run resumable from its checkpoints), then this script writes
`<results_dir>/pairnet_mnist.md` (mean ± sample std over seeds) and `pairnet_mnist_accuracy.png`.

  python -m experiments.pairnet_limited --workdir runs/pairnet_limited
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time

METHODS = ("singlenet", "pairnet", "pairloss", "siamese")
SOFTMAX_METHODS = ("singlenet", "pairnet")   # methods that train the softmax classifier W1
METRICS = (("softmax_accuracy", "softmax (W1)"), ("knn_accuracy", "1-NN on fc1"), ("svm_accuracy", "linear SVM on fc1"))


def sweep(workdir: str, samples, methods, num_steps=None, seeds=None, command: str = "", configure=None):
  """Runs every (method, N) with `run_seeds`; returns `{(method, n): summary}`.

  `configure(config)`, when given, edits each configuration last (the tests use it to run on a smaller dataset)."""
  from experiments import train as experiment
  from experiments.configs import pairnet_mnist
  out = {}
  for n in samples:
    for method in methods:
      c = pairnet_mnist.get_config()
      c.objective.kind = method
      c.samples_per_class = int(n)
      c.name = f"pairnet_mnist_{method}_n{n}"
      c.progress = False
      if num_steps:
        c.num_steps = int(num_steps)
      if seeds:
        c.seeds = tuple(int(s) for s in seeds)
      if configure is not None:
        configure(c)
      start = time.perf_counter()
      out[(method, n)] = experiment.run_seeds(c, os.path.join(workdir, f"{method}_n{n}"), command)
      print(f"{method} N={n}: done in {time.perf_counter() - start:.0f} s", flush=True)
  return out


def _cell(stats, key):
  s = stats["trained"].get(key)
  return "—" if s is None else f"{s['mean']:.4f} ± {s['std']:.4f}"


def write_results(results, samples, methods, command: str, results_dir: str, num_steps=None) -> str:
  """Writes the Markdown table and the accuracy-vs-N plot; returns the table."""
  import matplotlib
  import matplotlib.ticker
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  first = next(iter(results.values()))
  run0 = json.load(open(os.path.join(first["run_dirs"][0], "results.json")))
  from experiments.configs import pairnet_mnist
  c = pairnet_mnist.get_config()
  lines = ["# S0 (PairNet) limited-data protocol on MNIST", "", "Written by the sweep itself. Command:", "", "```bash",
           command, "```", "",
           f"N training images per class drawn from a 5000-image pool (offline MNIST: the 10k test images split "
           f"stratified, fixed seed, into pool and test set); test set {run0['num_test']} images; seeds "
           f"{', '.join(map(str, first['seeds']))} per cell (each seed a different draw and initialisation), "
           "mean ± sample std. LeNet trunk (conv 5x5x20, pool, conv 5x5x50, pool, fc 500, ReLU), two channels with "
           f"softmax classifiers W1, W2 on fc1; PLoss on the squared distance of fc1 features with m = "
           f"{c.objective.pair_margin}, b = {c.objective.pair_b} (siamese: b = m), lambda = {c.objective.pair_lambda}; "
           f"{c.batch_size} pairs (two shuffled batches) per step, SGD lr {c.optimizer.learning_rate}, momentum "
           f"{c.optimizer.momentum}, weight decay {c.optimizer.weight_decay}; {num_steps or c.num_steps} steps per run. "
           f"Machine: {run0['machine']}.", ""]
  for key, label in METRICS:
    lines += [f"## Test accuracy: {label}", "", "| method | " + " | ".join(f"N = {n}" for n in samples) + " |",
              "|---|" + "---|" * len(samples)]
    for method in methods:
      if key == "softmax_accuracy" and method not in SOFTMAX_METHODS:
        continue
      lines.append(f"| {method} | " + " | ".join(_cell(results[(method, n)]["stats"], key) for n in samples) + " |")
    lines.append("")
  lines += ["`pairloss` and `siamese` never train W1, so their softmax accuracy is not shown. For `pairnet`, the 1-NN / "
            "SVM rows are S0's `pair-soft`. Per-run tables, curves and checkpoints: the run directories under the "
            "sweep's `--workdir`.", "", "![accuracy](pairnet_mnist_accuracy.png)", ""]
  text = "\n".join(lines)
  os.makedirs(results_dir, exist_ok=True)
  with open(os.path.join(results_dir, "pairnet_mnist.md"), "w") as f:
    f.write(text)

  fig, ax = plt.subplots(figsize=(6, 4))
  for method in methods:
    key = "softmax_accuracy" if method in SOFTMAX_METHODS else "knn_accuracy"
    means = [results[(method, n)]["stats"]["trained"][key]["mean"] for n in samples]
    stds = [results[(method, n)]["stats"]["trained"][key]["std"] for n in samples]
    ax.errorbar(samples, means, yerr=stds, marker="o", capsize=3,
                label=f"{method} ({'softmax' if key == 'softmax_accuracy' else '1-NN'})")
  ax.set_xscale("log")
  ax.set_xticks(samples)
  ax.set_xticklabels([str(n) for n in samples])
  ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
  ax.set_xlabel("training images per class (N)")
  ax.set_ylabel("test accuracy")
  ax.set_title("MNIST limited data (mean ± std over seeds)")
  ax.legend(fontsize=8)
  ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(os.path.join(results_dir, "pairnet_mnist_accuracy.png"), dpi=100)
  plt.close(fig)
  return text


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", required=True, help="root of the run directories (resumable)")
  parser.add_argument("--samples", default="60,100,400",
                      help="comma-separated N (training images per class); offline the smallest MNIST class has 446 "
                           "images in the pool, so S0's N = 500 needs the full MNIST training set")
  parser.add_argument("--methods", default=",".join(METHODS))
  parser.add_argument("--num_steps", type=int, default=None, help="override the config's steps per run")
  parser.add_argument("--seeds", default=None, help="comma-separated seeds (default: the config's)")
  parser.add_argument("--results_dir", default=os.path.join("experiments", "results"))
  args = parser.parse_args(argv)
  samples = [int(n) for n in args.samples.split(",") if n]
  methods = [m for m in args.methods.split(",") if m]
  unknown = [m for m in methods if m not in METHODS]
  if unknown:
    parser.error(f"unknown --methods {unknown}; known: {', '.join(METHODS)}")
  command = "python -m experiments.pairnet_limited " + " ".join(
      shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
  results = sweep(args.workdir, samples, methods, args.num_steps,
                  args.seeds.split(",") if args.seeds else None, command)
  print(write_results(results, samples, methods, command, args.results_dir, args.num_steps))


if __name__ == "__main__":
  main()

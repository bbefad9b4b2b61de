"""k-NN accuracy of finished S0 (limited-split) runs under each distance, trained vs the untrained network.

The evaluation of every run uses cosine similarity. S0's pair losses are defined on the (squared) Euclidean distance
of unnormalized features, so a 1-NN that ignores the norm may hide what they learned. This re-evaluates the latest
checkpoint of each given run, and the same network at initialisation, with every distance: on the run's validation
part when it has one (choose the distance there), and on the test set.

  python -m experiments.knn_distance runs/pairnet_mnist_lr/siamese_lr0.01/seed_0 [more run dirs] \
      [--out experiments/results/pairnet_mnist_knn_distance.md]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys

import numpy as np

DISTANCES = ("cosine", "euclidean")


def evaluate_run(run_dir: str, k: int = 1, batch_size: int = 512) -> dict:
  """`{(network, split, distance): accuracy}` for network in (trained, untrained), split in (validation, test), and
  `("step",)`: the restored checkpoint's step."""
  from experiments import run as run_lib
  from metric_jax import evaluation
  from metric_jax.train import from_config, restore_run
  r = restore_run(run_dir)
  c = r.config
  if c.split != "limited":
    raise ValueError(f"{run_dir}: `config.split` is {c.split!r}; this tool re-evaluates limited-split runs.")
  parts = from_config.load_data(c)
  train_x = r.test_transform(parts.train.images)
  splits = {name: (r.test_transform(s.images), s.labels) for name, s in (("validation", parts.validation),
                                                                          ("test", parts.test)) if s is not None}
  out = {("step",): int(np.asarray(r.trainer.local_copy(r.state.step)))}
  for network, state in (("trained", r.state), ("untrained", r.trainer.init_state(seed=int(c.seed)))):
    ref = run_lib.embed_all(r.trainer, state, train_x, batch_size)
    for split, (x, y) in splits.items():
      queries = run_lib.embed_all(r.trainer, state, x, batch_size)
      for distance in DISTANCES:
        out[(network, split, distance)] = evaluation.knn_accuracy(ref, parts.train.labels, queries, y, k=k,
                                                                  metric=distance)
  return out


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("run_dirs", nargs="+", help="run directories (runs/<sweep>/<variant>/seed_<s>)")
  parser.add_argument("--k", type=int, default=1, help="neighbours voting (default 1)")
  parser.add_argument("--out", default="", help="also write the Markdown table here")
  args = parser.parse_args(argv)
  from absl import logging as absl_logging
  absl_logging.set_verbosity(absl_logging.WARNING)
  head = ["run", "step"] + [f"{split} {network} {d}" for split in ("validation", "test")
                            for network in ("untrained", "trained") for d in DISTANCES]
  lines = [f"# {args.k}-NN accuracy by distance: trained vs untrained network", "",
           "Written by `python -m experiments.knn_distance " + " ".join(sys.argv[1:] if argv is None else argv)
           + f"` on {platform.machine()} ({os.cpu_count()} CPU cores). The latest checkpoint of each run; gallery: "
           "its training images.", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for run_dir in args.run_dirs:
    acc = evaluate_run(run_dir, k=args.k)
    cells = [f"`{run_dir}`", str(acc[("step",)])] + [
        f"{acc[(network, split, d)]:.4f}" if (network, split, d) in acc else "–"
        for split in ("validation", "test") for network in ("untrained", "trained") for d in DISTANCES]
    lines.append("| " + " | ".join(cells) + " |")
    print(lines[-1], flush=True)
  lines.append("")
  if args.out:
    with open(args.out, "w") as f:
      f.write("\n".join(lines))
    print(f"wrote {args.out}")


if __name__ == "__main__":
  main()

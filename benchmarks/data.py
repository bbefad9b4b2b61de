"""Images/s of the PK BatchLoader on Omniglot (small1, resized to 28x28) and MNIST (test set), on this machine's CPUs.

Run as `python benchmarks/data.py` or `python -m benchmarks.data` from the repository root; writes
`benchmarks/results/data.md`. Datasets are prepared (once) into a temporary directory unless `--data_dir` is given.

Measured: batches of P x K images consumed as fast as possible from `BatchLoader` (prefetch thread on), including the
sampler, the gather, the transform (resize 105 -> 28 with pillow, per batch, in the Omniglot "resize per batch" row) and
the float conversion. Each row reports the median of `--repeats` timed runs of `--batches` batches after a warm-up.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import tempfile
import time

if __package__ in (None, ""):  # `python benchmarks/data.py`: make the repository importable.
  sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from benchmarks._machine import cpu_name  # noqa: E402
from metric_jax import data  # noqa: E402
from metric_jax.data import preprocessing  # noqa: E402


def time_loader(images, labels, p, k, transform, batches, repeats):
  sampler = data.PKSampler(labels, p, k, seed=0)
  rates = []
  for r in range(repeats):
    loader = data.BatchLoader(images, labels, sampler, transform=transform, prefetch=4, start_step=r * (batches + 5))
    for _ in range(5):  # warm-up: thread start, first allocations
      next(loader)
    start = time.perf_counter()
    n = 0
    for _ in range(batches):
      n += next(loader)["image"].shape[0]
    rates.append(n / (time.perf_counter() - start))
    loader.close()
  return statistics.median(rates), min(rates), max(rates)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--data_dir", default=None, help="prepared-datasets directory (default: a temporary one)")
  parser.add_argument("--batches", type=int, default=100)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--output", default=str(pathlib.Path(__file__).resolve().parent / "results" / "data.md"))
  args = parser.parse_args(argv)
  tmp = None
  data_dir = args.data_dir
  if data_dir is None:
    tmp = tempfile.TemporaryDirectory()
    data_dir = tmp.name

  rows = []
  t0 = time.perf_counter()
  data.get_builder("omniglot", data_dir=data_dir)
  data.get_builder("mnist", data_dir=data_dir)
  prepare = time.perf_counter() - t0
  t0 = time.perf_counter()
  omniglot, omniglot_labels = data.load_arrays("omniglot", "small1", data_dir=data_dir)
  load_omniglot = time.perf_counter() - t0
  t0 = time.perf_counter()
  omniglot28, _ = data.load_arrays("omniglot", "small1", data_dir=data_dir, image_size=(28, 28))
  load_omniglot28 = time.perf_counter() - t0
  t0 = time.perf_counter()
  mnist, mnist_labels = data.load_arrays("mnist", "test", data_dir=data_dir)
  load_mnist = time.perf_counter() - t0

  resize28 = preprocessing.make_transform(resize_to=(28, 28))
  cases = [
      ("Omniglot small1, 105x105 -> 28x28 resized per batch (pillow)", omniglot, omniglot_labels, 32, 4, resize28),
      ("Omniglot small1, resized to 28x28 at load time", omniglot28, omniglot_labels, 32, 4, None),
      ("MNIST test, 28x28", mnist, mnist_labels, 10, 16, None),
      ("MNIST test, 28x28, random crop 24 + flip", mnist, mnist_labels, 10, 16,
       preprocessing.make_transform(random_crop_to=(24, 24), flip=True)),
  ]
  for name, images, labels, p, k, transform in cases:
    median, low, high = time_loader(images, labels, p, k, transform, args.batches, args.repeats)
    rows.append((name, p, k, median, low, high))
    print(f"{name}: {median:,.0f} images/s (min {low:,.0f}, max {high:,.0f})", flush=True)

  command = "python " + " ".join([sys.argv[0]] + (argv if argv is not None else sys.argv[1:]))
  load_avg = os.getloadavg()
  lines = [
      "# Data loader throughput (PK sampler + BatchLoader)",
      "",
      f"Command: `{command}` (from the repository root; also runnable as `python -m benchmarks.data`).",
      f"Machine: {os.cpu_count()} CPU cores ({cpu_name()}), {platform.system()} {platform.release()}, "
      f"Python {platform.python_version()}, numpy {np.__version__}. Load average at the end: "
      f"{load_avg[0]:.1f} / {load_avg[1]:.1f} / {load_avg[2]:.1f}.",
      "",
      "**Timings are noisy**: the cores are shared with other agents running builds and tests (see the load average).",
      "",
      f"Each row: median (min-max) of {args.repeats} runs of {args.batches} batches, prefetch 4, after 5 warm-up batches.",
      "",
      "| data | P x K | images/s (median) | min | max |",
      "|---|---|---|---|---|",
  ]
  for name, p, k, median, low, high in rows:
    lines.append(f"| {name} | {p} x {k} | {median:,.0f} | {low:,.0f} | {high:,.0f} |")
  lines += [
      "",
      f"One-time costs: preparing Omniglot (small1 + small2 array_record) and MNIST (test) from the raw files "
      f"{prepare:.2f} s; loading a prepared split through `tfds.data_source` + pillow: Omniglot small1 "
      f"{load_omniglot:.2f} s (2720 PNGs decoded), with resize to 28x28 {load_omniglot28:.2f} s; MNIST test "
      f"{load_mnist:.2f} s (10000 records).",
      "",
      "Compare with the train step time of the training benchmark: the loader is not the bottleneck when its images/s "
      "exceed batch size / step time.",
      "",
  ]
  pathlib.Path(args.output).parent.mkdir(parents=True, exist_ok=True)
  pathlib.Path(args.output).write_text("\n".join(lines))
  print(f"wrote {args.output}")
  if tmp is not None:
    tmp.cleanup()


if __name__ == "__main__":
  main()

"""Exact kNN self-retrieval: metric_jax.evaluation.knn next to faiss-cpu IndexFlatIP, time, peak RSS, neighbour sets.

Run from the repository root as `python benchmarks/knn.py` or `python -m benchmarks.knn`; writes
`benchmarks/results/knn.md`.

Data: N x D L2-normalized float32 embeddings (default 60,000 x 128, the Stanford Online Products test-set size), drawn
as Gaussian clusters (N / 5 centres, so that neighbours are meaningful) from a fixed seed. Task: the k = 100 nearest
neighbours of every row by inner product, the row itself excluded.
  - metric_jax: `knn(x, None, k, metric="dot", exclude_self=True)`.
  - faiss: `IndexFlatIP`, `search(x, k + 1)`, then each row's own index is dropped (the last column when absent).
Each method runs in its own subprocess (so that its peak RSS, `ru_maxrss`, is its own: interpreter, libraries, the data,
and the search), alternating, `--repeats` times; the table reports the fastest run of each and the ratio of those.
Times are wall-clock for the search alone (metric_jax's includes the one-off XLA compilation of its chunk kernel).
Neighbour sets are compared per row; a row whose sets differ is explained when every neighbour in one set and not
the other scores within `--tie_tolerance` of that row's k-th best score (float32 rounding at equal scores).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import resource
import subprocess
import sys
import tempfile
import time

if __package__ in (None, ""):  # `python benchmarks/knn.py`: make the repository importable.
  sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from benchmarks._machine import cpu_name  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "knn.md"


def make_embeddings(num: int, dim: int, seed: int) -> np.ndarray:
  """Clustered, L2-normalized float32 embeddings `[num, dim]` (num / 5 Gaussian centres, noise 0.7)."""
  rng = np.random.default_rng(seed)
  centres = rng.standard_normal((max(num // 5, 1), dim)).astype(np.float32)
  x = centres[rng.integers(0, centres.shape[0], num)] + 0.7 * rng.standard_normal((num, dim)).astype(np.float32)
  x /= np.linalg.norm(x, axis=1, keepdims=True)
  return x


def _worker(method: str, data_path: str, k: int, out_path: str, chunk_size: int):
  x = np.load(data_path)
  if method == "faiss":
    import faiss
    start = time.perf_counter()
    index = faiss.IndexFlatIP(x.shape[1])
    index.add(x)
    _, found = index.search(x, k + 1)
    self_hit = found == np.arange(x.shape[0])[:, None]
    self_hit[~self_hit.any(axis=1), -1] = True  # rows whose own index is not returned drop their last neighbour
    neighbours = found[~self_hit].reshape(x.shape[0], k)
    seconds = time.perf_counter() - start
    version = faiss.__version__
  else:
    import jax
    from metric_jax.evaluation import knn
    start = time.perf_counter()
    neighbours, _ = knn(x, None, k, metric="dot", exclude_self=True, chunk_size=chunk_size)
    seconds = time.perf_counter() - start
    version = jax.__version__
  np.save(out_path, neighbours.astype(np.int64))
  peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB
  print(json.dumps({"seconds": seconds, "peak_rss": peak_rss, "version": version}))


def _run(method, data_path, k, out_path, chunk_size):
  command = [sys.executable, str(pathlib.Path(__file__).resolve()), "--worker", method, "--data", data_path,
             "--k", str(k), "--out", out_path, "--chunk_size", str(chunk_size)]
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  done = subprocess.run(command, check=True, capture_output=True, text=True, env=env, cwd=REPO)
  return json.loads(done.stdout.strip().splitlines()[-1])


def compare_sets(x, ours, theirs, k, tolerance):
  """(rows whose neighbour sets differ, of those the rows explained by scores tied with the k-th best)."""
  differ = [i for i in range(x.shape[0]) if set(ours[i].tolist()) != set(theirs[i].tolist())]
  explained = 0
  for i in differ:
    a, b = set(ours[i].tolist()), set(theirs[i].tolist())
    row = x.astype(np.float64) @ x[i].astype(np.float64)
    row[i] = -np.inf
    kth = np.sort(row)[::-1][k - 1]
    odd = np.fromiter(a ^ b, np.int64)
    explained += bool(np.all(np.abs(row[odd] - kth) <= tolerance))
  return len(differ), explained


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--num", type=int, default=60000)
  parser.add_argument("--dim", type=int, default=128)
  parser.add_argument("--k", type=int, default=100)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--chunk_size", type=int, default=None, help="metric_jax queries per chunk (default: knn's)")
  parser.add_argument("--tie_tolerance", type=float, default=1e-5)
  parser.add_argument("--output", default=str(RESULTS))
  parser.add_argument("--worker", choices=("ours", "faiss"), help=argparse.SUPPRESS)
  parser.add_argument("--data", help=argparse.SUPPRESS)
  parser.add_argument("--out", help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.chunk_size is None:
    from metric_jax.evaluation.knn import DEFAULT_CHUNK_SIZE
    args.chunk_size = DEFAULT_CHUNK_SIZE
  if args.worker:
    _worker(args.worker, args.data, args.k, args.out, args.chunk_size)
    return

  load_start = os.getloadavg()[0]
  x = make_embeddings(args.num, args.dim, args.seed)
  runs = {"ours": [], "faiss": []}
  with tempfile.TemporaryDirectory() as tmp:
    data_path = os.path.join(tmp, "x.npy")
    np.save(data_path, x)
    outputs = {m: os.path.join(tmp, f"{m}.npy") for m in runs}
    for repeat in range(args.repeats):
      for method in ("faiss", "ours") if repeat % 2 == 0 else ("ours", "faiss"):
        runs[method].append(_run(method, data_path, args.k, outputs[method], args.chunk_size))
        print(method, json.dumps(runs[method][-1]), flush=True)
    ours, theirs = np.load(outputs["ours"]), np.load(outputs["faiss"])
  differ, explained = compare_sets(x, ours, theirs, args.k, args.tie_tolerance)

  best = {m: min(r["seconds"] for r in runs[m]) for m in runs}
  peak = {m: max(r["peak_rss"] for r in runs[m]) for m in runs}
  ratio = best["ours"] / best["faiss"]
  command = "python benchmarks/knn.py " + " ".join(argv if argv is not None else sys.argv[1:])
  import jax
  from metric_jax.evaluation.knn import DEFAULT_BLOCK_SIZE, DEFAULT_NUM_THREADS
  lines = [
      "# Exact kNN self-retrieval: metric_jax vs faiss-cpu IndexFlatIP",
      "",
      f"Command: `{command.strip()}` (from the repository root). Written by `benchmarks/knn.py`.",
      "",
      f"Machine: {cpu_name()}, {os.cpu_count()} logical CPUs visible, {platform.system()} {platform.release()}; "
      f"Python {platform.python_version()}, numpy {np.__version__}, jax {jax.__version__}, faiss-cpu "
      f"{runs['faiss'][0]['version']}. 1-minute load average {load_start:.1f} at the start, "
      f"{os.getloadavg()[0]:.1f} at the end (the CPUs may be shared with other jobs, so times are noisy).",
      "",
      f"Task: {args.num:,} x {args.dim} L2-normalized clustered float32 embeddings (seed {args.seed}), k = {args.k} "
      "nearest by inner product, each row's own index excluded; exact search on CPU. Each method in its own "
      f"subprocess, alternating, {args.repeats} runs each; fastest run reported. metric_jax chunk_size = "
      f"{args.chunk_size}, block_size = {DEFAULT_BLOCK_SIZE}, num_threads = {DEFAULT_NUM_THREADS}; its time includes "
      "XLA compilation.",
      "",
      "| method | best time (s) | all runs (s) | peak RSS (MiB) |",
      "|---|---:|---|---:|",
  ]
  names = {"ours": "metric_jax `knn` (XLA: blocked matmul, two-stage grouped top-k)", "faiss": "faiss `IndexFlatIP` (k + 1, drop self)"}
  for m in ("ours", "faiss"):
    all_runs = ", ".join(f"{r['seconds']:.2f}" for r in runs[m])
    lines.append(f"| {names[m]} | {best[m]:.2f} | {all_runs} | {peak[m] / 2**20:.0f} |")
  if max(load_start, os.getloadavg()[0]) > (os.cpu_count() or 1):
    lines += ["", "**The machine was oversubscribed during this run (load average above the CPU count).** faiss's OpenMP "
              "threads slow down more than XLA's under contention, so this ratio is not representative; re-run on an "
              "idle machine."]
  lines += [
      "",
      f"Time ratio metric_jax / faiss: **{ratio:.2f}x** (target <= 1.2x). Peak RSS of metric_jax: "
      f"**{peak['ours'] / 2**30:.2f} GiB** (target < 2 GiB).",
      "",
      f"Neighbour sets: {differ} of {args.num:,} rows differ as sets; {explained} of those are explained by scores "
      f"equal to the row's k-th best within {args.tie_tolerance:g} (float32 rounding at ties); "
      f"{differ - explained} unexplained.",
      "",
  ]
  pathlib.Path(args.output).parent.mkdir(parents=True, exist_ok=True)
  pathlib.Path(args.output).write_text("\n".join(lines))
  print("\n".join(lines))


if __name__ == "__main__":
  main()

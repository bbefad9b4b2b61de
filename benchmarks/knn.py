"""Exact kNN self-retrieval: metric_jax.evaluation.knn next to faiss-cpu IndexFlatIP on several kinds of data.

Run from the repository root as `python benchmarks/knn.py` or `python -m benchmarks.knn`; writes
`benchmarks/results/knn.md`.

Task: the k = 100 nearest neighbours of every row of an N x D float32 matrix (default 60,000 x 128, the Stanford Online
Products test-set size) by inner product, the row itself excluded.
  - metric_jax: `knn(x, None, k, metric="dot", exclude_self=True)`.
  - faiss: `IndexFlatIP`, `search(x, k + 1)`, then each row's own index is dropped (the last column when absent).

Kinds of data (`--kinds`), each from a fixed seed; labels (for the Recall@1 column) are the cluster of a row:
  - clustered: L2-normalized Gaussian clusters (N / 5 centres, noise 0.7): neighbours are meaningful, Recall@1 ~1.
  - unstructured: the same centres with noise 2.9: little class structure (Recall@1 ~0.007, like the untrained
    network every training run evaluates first).
  - ascending: rows `s_j u + 0.01 n_j` with `s_j` rising from 0.5 to 1.5 along the row order and one shared unit
    vector `u` (not normalized): every query's scores rise along the reference order, the order that makes a heap
    selection (XLA's `top_k`, faiss's result heaps) replace its heap most often. An adversarial layout, not a target.

Timing: both methods run in this one process, alternating (faiss first in even rounds, metric_jax first in odd ones,
the kinds in turn inside each round), so that the load of the shared machine falls on both (with `--baseline COMMIT`
the knn.py of that commit runs in the same rounds too, to compare the kernel with an earlier one); `--repeats` timed
runs each after one untimed warm-up (metric_jax's warm-up compiles its kernels; its first-call time is reported
separately). The ratio is that of the median times. Peak RSS (`VmHWM`) is measured once per method and kind in a
subprocess of its own (interpreter, libraries, the data and one search). Neighbour sets are compared per row; a row
whose sets differ is explained when every neighbour in one set and not the other scores within `--tie_tolerance` of
that row's k-th best score (float32 rounding at equal scores). With `--kernel_cpu` (and `--baseline`) a subprocess
with XLA on one thread also times one compiled chunk kernel of today and of the baseline in CPU seconds, a figure the
load of the machine hardly moves.
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
KINDS = ("clustered", "unstructured", "ascending")
TARGET_KINDS = ("clustered", "unstructured")  # the <= 1.2x target of issue 11.5


def make_embeddings(num: int, dim: int, seed: int, noise: float = 0.7):
  """L2-normalized Gaussian clusters: `(x [num, dim] float32, labels [num])`, num / 5 centres, per-entry noise."""
  rng = np.random.default_rng(seed)
  centres = rng.standard_normal((max(num // 5, 1), dim)).astype(np.float32)
  labels = rng.integers(0, centres.shape[0], num)
  x = centres[labels] + noise * rng.standard_normal((num, dim)).astype(np.float32)
  x /= np.linalg.norm(x, axis=1, keepdims=True)
  return x, labels


def make_ascending(num: int, dim: int, seed: int):
  """`(s_j u + 0.01 n_j, None)` with `s_j = 0.5 + j / num` and a unit vector `u`: every row's inner products rise
  with j (no classes)."""
  rng = np.random.default_rng(seed)
  u = rng.standard_normal(dim).astype(np.float32)
  u /= np.linalg.norm(u)
  scale = (0.5 + np.arange(num, dtype=np.float32) / num)[:, None]
  x = scale * u[None, :] + 0.01 * rng.standard_normal((num, dim)).astype(np.float32)
  return x.astype(np.float32), None


def make_kind(kind: str, num: int, dim: int, seed: int):
  """`(x [num, dim] float32, cluster labels [num] or None)` of one kind of data."""
  if kind == "clustered":
    return make_embeddings(num, dim, seed, 0.7)
  if kind == "unstructured":
    return make_embeddings(num, dim, seed, 2.9)
  if kind == "ascending":
    return make_ascending(num, dim, seed)
  raise ValueError(f"unknown kind {kind!r}; choose among {KINDS}.")


def search_faiss(x: np.ndarray, k: int) -> np.ndarray:
  import faiss
  index = faiss.IndexFlatIP(x.shape[1])
  index.add(x)
  _, found = index.search(x, k + 1)
  self_hit = found == np.arange(x.shape[0])[:, None]
  self_hit[~self_hit.any(axis=1), -1] = True  # rows whose own index is not returned drop their last neighbour
  return found[~self_hit].reshape(x.shape[0], k)


def search_ours(x: np.ndarray, k: int, chunk_size: int, knn=None) -> np.ndarray:
  if knn is None:
    from metric_jax.evaluation import knn
  neighbours, _ = knn(x, None, k, metric="dot", exclude_self=True, chunk_size=chunk_size)
  return neighbours


_BASELINE = {}


def load_baseline(commit: str):
  """`knn` of `metric_jax/evaluation/knn.py` as it was at a git commit (imported beside today's package)."""
  import importlib.util
  source = subprocess.run(["git", "show", f"{commit}:metric_jax/evaluation/knn.py"], check=True, capture_output=True,
                          text=True, cwd=REPO).stdout
  path = pathlib.Path(tempfile.mkdtemp()) / f"knn_{commit}.py"
  path.write_text(source)
  spec = importlib.util.spec_from_file_location(f"knn_{commit}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  _BASELINE["knn"] = module.knn
  _BASELINE["module"] = module


def _timed(method: str, x: np.ndarray, k: int, chunk_size: int):
  start = time.perf_counter()
  if method == "faiss":
    found = search_faiss(x, k)
  else:
    found = search_ours(x, k, chunk_size, _BASELINE["knn"] if method == "baseline" else None)
  return time.perf_counter() - start, found


def _worker(method: str, kind: str, num: int, dim: int, seed: int, k: int, chunk_size: int):
  """Subprocess: one search, then this process's peak RSS."""
  x, _ = make_kind(kind, num, dim, seed)
  seconds, _ = _timed(method, x, k, chunk_size)
  print(json.dumps({"seconds": seconds, "peak_rss": _own_peak_rss()}))


def _kernel_worker(kinds, args):
  """Subprocess with XLA on one thread: CPU seconds of one 256-query chunk of today's and the baseline's compiled
  chunk kernel (`_chunk_top_k`) on each kind, alternating, median over chunks spread through the set."""
  import sys as _sys
  import jax.numpy as jnp
  import metric_jax.evaluation  # noqa: F401
  today = _sys.modules["metric_jax.evaluation.knn"]
  load_baseline(args.baseline)
  modules = {"ours": today, "baseline": _BASELINE["module"]}
  num_chunks, num_blocks, block = today._reference_layout(args.num, args.k, today.DEFAULT_REFERENCE_CHUNK_SIZE,
                                                          today.DEFAULT_BLOCK_SIZE)
  if num_chunks != 1:
    raise ValueError("the kernel comparison needs one reference chunk (num <= the default reference chunk size).")
  b = 256
  starts = np.linspace(0, args.num - b, 9).astype(int)
  out = {}
  for kind in kinds:
    x, _ = make_kind(kind, args.num, args.dim, args.seed)
    padded = np.zeros((num_blocks * block, args.dim), np.float32)
    padded[:args.num] = x
    references = jnp.asarray(padded.reshape(num_blocks, block, args.dim))
    bias = jnp.zeros((num_blocks, block), jnp.float32)
    seconds = {m: [] for m in modules}
    buffers = {m: jnp.zeros((b, num_blocks * block), jnp.float32) for m in modules}
    for i, start in enumerate(starts):
      for m in (("ours", "baseline") if i % 2 == 0 else ("baseline", "ours")):
        q = jnp.asarray(x[start:start + b])
        begin = time.process_time()
        values, _, buffers[m] = modules[m]._chunk_top_k(q, references, bias, int(start), 0, args.num, buffers[m],
                                                        k=args.k, exclude_self=True, use_bias=False,
                                                        padded=num_blocks * block > args.num)
        values.block_until_ready()
        if i > 0:  # the first chunk compiles
          seconds[m].append(time.process_time() - begin)
    out[kind] = {m: float(np.median(v)) for m, v in seconds.items()}
  print(json.dumps(out))


def _kernel_cpu(kinds, args) -> dict:
  command = [sys.executable, str(pathlib.Path(__file__).resolve()), "--worker", "kernel", "--kinds", ",".join(kinds),
             "--num", str(args.num), "--dim", str(args.dim), "--seed", str(args.seed), "--k", str(args.k),
             "--baseline", args.baseline]
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")
  done = subprocess.run(command, check=True, capture_output=True, text=True, env=env, cwd=REPO)
  return json.loads(done.stdout.strip().splitlines()[-1])


def _own_peak_rss() -> int:
  """Peak resident memory of this process's own address space in bytes: `VmHWM` (reset by exec, unlike
  `ru_maxrss`, which a child forked from a large parent inherits), else `ru_maxrss`."""
  try:
    with open("/proc/self/status") as f:
      for line in f:
        if line.startswith("VmHWM:"):
          return int(line.split()[1]) * 1024
  except OSError:
    pass
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def _peak_rss(method: str, kind: str, args) -> int:
  command = [sys.executable, str(pathlib.Path(__file__).resolve()), "--worker", method, "--kinds", kind, "--num",
             str(args.num), "--dim", str(args.dim), "--seed", str(args.seed), "--k", str(args.k), "--chunk_size",
             str(args.chunk_size)]
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  done = subprocess.run(command, check=True, capture_output=True, text=True, env=env, cwd=REPO)
  return json.loads(done.stdout.strip().splitlines()[-1])["peak_rss"]


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


def recall_at_1(neighbours: np.ndarray, labels: np.ndarray) -> float:
  """Recall@1 over the rows whose class has another member (the evaluation's convention for lone queries)."""
  counts = np.bincount(labels)
  keep = counts[labels] > 1
  return float(np.mean(labels[neighbours[keep, 0]] == labels[keep]))


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--num", type=int, default=60000)
  parser.add_argument("--dim", type=int, default=128)
  parser.add_argument("--k", type=int, default=100)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--kinds", default=",".join(KINDS), help=f"comma-separated among {KINDS}")
  parser.add_argument("--chunk_size", type=int, default=None, help="metric_jax queries per chunk (default: knn's)")
  parser.add_argument("--tie_tolerance", type=float, default=1e-5)
  parser.add_argument("--no_rss", action="store_true", help="skip the peak-RSS subprocesses")
  parser.add_argument("--baseline", default=None, help="also time metric_jax's knn.py as of this git commit")
  parser.add_argument("--output", default=str(RESULTS))
  parser.add_argument("--kernel_cpu", action="store_true",
                      help="with --baseline: also single-thread CPU time of one chunk kernel, today vs baseline")
  parser.add_argument("--worker", choices=("ours", "faiss", "kernel"), help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  kinds = tuple(kind.strip() for kind in args.kinds.split(",") if kind.strip())
  for kind in kinds:
    if kind not in KINDS:
      parser.error(f"--kinds: unknown kind {kind!r}; choose among {KINDS}.")
  if args.chunk_size is None:
    from metric_jax.evaluation.knn import DEFAULT_CHUNK_SIZE
    args.chunk_size = DEFAULT_CHUNK_SIZE
  if args.worker == "kernel":
    _kernel_worker(kinds, args)
    return
  if args.worker:
    _worker(args.worker, kinds[0], args.num, args.dim, args.seed, args.k, args.chunk_size)
    return

  import faiss
  import jax
  from metric_jax.evaluation.knn import DEFAULT_BLOCK_SIZE, DEFAULT_NUM_THREADS

  loads = [os.getloadavg()[0]]
  peak = {}
  if not args.no_rss:  # first, so that a failure here costs little
    for kind in kinds:
      for m in ("faiss", "ours"):
        peak[kind, m] = _peak_rss(m, kind, args)
        print(f"peak RSS {kind} {m}: {peak[kind, m] / 2**20:.0f} MiB", flush=True)
  kernel = {}
  if args.kernel_cpu:
    if not args.baseline:
      parser.error("--kernel_cpu needs --baseline COMMIT.")
    kernel = _kernel_cpu(kinds, args)
    print("kernel CPU seconds per chunk:", json.dumps(kernel), flush=True)
  data = {kind: make_kind(kind, args.num, args.dim, args.seed) for kind in kinds}
  methods = ("faiss", "ours")
  if args.baseline:
    load_baseline(args.baseline)
    methods += ("baseline",)
  times = {(kind, m): [] for kind in kinds for m in methods}
  first_call = {}
  found = {}
  for kind in kinds:  # untimed warm-up; metric_jax compiles here (same shapes for every kind)
    for m in methods:
      first_call[kind, m], found[kind, m] = _timed(m, data[kind][0], args.k, args.chunk_size)
      print(f"warm-up {kind} {m}: {first_call[kind, m]:.2f} s", flush=True)
  for repeat in range(args.repeats):
    for kind in kinds:
      for m in methods if repeat % 2 == 0 else methods[::-1]:
        seconds, _ = _timed(m, data[kind][0], args.k, args.chunk_size)
        times[kind, m].append(seconds)
        print(f"round {repeat} {kind} {m}: {seconds:.2f} s (load {os.getloadavg()[0]:.1f})", flush=True)
    loads.append(os.getloadavg()[0])

  command = "python benchmarks/knn.py " + " ".join(argv if argv is not None else sys.argv[1:])
  lines = [
      "# Exact kNN self-retrieval: metric_jax vs faiss-cpu IndexFlatIP",
      "",
      f"Command: `{command.strip()}` (from the repository root). Written by `benchmarks/knn.py`.",
      "",
      f"Machine: {cpu_name()}, {os.cpu_count()} logical CPUs visible, {platform.system()} {platform.release()}; "
      f"Python {platform.python_version()}, numpy {np.__version__}, jax {jax.__version__}, faiss-cpu "
      f"{faiss.__version__}. 1-minute load average during the run (start, after each round): "
      f"{', '.join(f'{v:.1f}' for v in loads)}. The CPUs are shared with other jobs, so both methods run in one "
      "process, alternating, and the ratio of their medians is the figure to read.",
      "",
      f"Task: {args.num:,} x {args.dim} float32 embeddings (seed {args.seed}), k = {args.k} nearest by inner "
      f"product, each row's own index excluded; exact search on CPU. {args.repeats} timed runs of each method on "
      f"each kind after one warm-up. metric_jax chunk_size = {args.chunk_size}, block_size = {DEFAULT_BLOCK_SIZE}, "
      f"num_threads = {DEFAULT_NUM_THREADS}. Kinds: clustered = normalized Gaussian clusters (noise 0.7); "
      "unstructured = the same with noise 2.9 (little class structure, like an untrained network); ascending = "
      "every row's scores rise along the reference order (adversarial for heap selection; not normalized).",
      "",
      "| data | Recall@1 | metric_jax median (s) | faiss median (s) | ratio metric_jax / faiss | metric_jax runs (s) "
      "| faiss runs (s) | metric_jax first call (s) | peak RSS metric_jax / faiss (MiB) | neighbour sets differing "
      "(explained by ties) |",
      "|---|---:|---:|---:|---:|---|---|---:|---:|---|",
  ]
  summary = {}
  baseline_rows = []
  for kind in kinds:
    x, labels = data[kind]
    median = {m: float(np.median(times[kind, m])) for m in methods}
    ratio = median["ours"] / median["faiss"]
    differ, explained = compare_sets(x, found[kind, "ours"], found[kind, "faiss"], args.k, args.tie_tolerance)
    summary[kind] = (ratio, differ, explained)
    if args.baseline:
      baseline_rows.append(f"| {kind} | {median['baseline']:.2f} | {median['ours']:.2f} | "
                           f"**{median['ours'] / median['baseline']:.2f}x** | "
                           f"{', '.join(f'{t:.2f}' for t in times[kind, 'baseline'])} |")
    recall = "-" if labels is None else f"{recall_at_1(found[kind, 'ours'], labels):.4f}"
    rss = (f"{peak[kind, 'ours'] / 2**20:.0f} / {peak[kind, 'faiss'] / 2**20:.0f}" if peak else "not measured")
    lines.append(
        f"| {kind} | {recall} | {median['ours']:.2f} | "
        f"{median['faiss']:.2f} | **{ratio:.2f}x** | {', '.join(f'{t:.2f}' for t in times[kind, 'ours'])} | "
        f"{', '.join(f'{t:.2f}' for t in times[kind, 'faiss'])} | {first_call[kind, 'ours']:.2f} | {rss} | "
        f"{differ} ({explained}) |")
  target = [kind for kind in TARGET_KINDS if kind in summary]
  lines += [""]
  if target:
    worst = max(summary[kind][0] for kind in target)
    lines.append(f"Target (issue 11.5): metric_jax / faiss <= 1.2x on {' and '.join(target)}; worst ratio here "
                 f"**{worst:.2f}x**.")
  if peak:
    worst_rss = max(peak[kind, "ours"] for kind in kinds)
    lines.append(f"Peak RSS of metric_jax: **{worst_rss / 2**30:.2f} GiB** at most (target < 2 GiB).")
  if baseline_rows:
    lines += ["", f"Against the previous kernel (`metric_jax/evaluation/knn.py` at commit {args.baseline}), timed in "
              "the same rounds:", "", "| data | previous median (s) | metric_jax median (s) | ratio now / previous | "
              "previous runs (s) |", "|---|---:|---:|---:|---|"] + baseline_rows + [""]
  if kernel:
    lines += ["", "One chunk kernel (`_chunk_top_k`: 256 queries x all references, scores and exact top k) with XLA on "
              "one thread, CPU seconds (`time.process_time`, little affected by other jobs), median of 8 chunks spread "
              "through the set, today's and the baseline's alternating (`--kernel_cpu`):", "",
              "| data | previous (ms) | metric_jax (ms) | ratio now / previous |", "|---|---:|---:|---:|"]
    for kind in kinds:
      lines.append(f"| {kind} | {1000 * kernel[kind]['baseline']:.1f} | {1000 * kernel[kind]['ours']:.1f} | "
                   f"**{kernel[kind]['ours'] / kernel[kind]['baseline']:.2f}x** |")
    lines.append("")
  unexplained = sum(d - e for _, d, e in summary.values())
  lines += [
      f"Neighbour sets: rows whose sets differ from faiss's, in brackets those explained by scores equal to the "
      f"row's k-th best within {args.tie_tolerance:g} (float32 rounding at ties); {unexplained} unexplained in all.",
      f"metric_jax's first call includes the XLA compilation of its kernels; the timed runs reuse them.",
  ]
  if max(loads) > (os.cpu_count() or 1):
    lines += ["", f"The machine was oversubscribed during this run (load average up to {max(loads):.1f} on "
              f"{os.cpu_count()} CPUs): absolute times are inflated; the ratios, measured alternately in one process, "
              "are the comparable figures."]
  lines.append("")
  pathlib.Path(args.output).parent.mkdir(parents=True, exist_ok=True)
  pathlib.Path(args.output).write_text("\n".join(lines))
  print("\n".join(lines))


if __name__ == "__main__":
  main()

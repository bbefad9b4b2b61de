"""Exact kNN self-retrieval on one accelerator: `metric_jax.evaluation.knn` next to blocked `torch.topk` on the same GPU.

Run from the repository root (issue 11.6; `benchmarks/accelerator.sh` runs it on a lent GPU):

    python benchmarks/knn_gpu.py --num 1000000 --dim 128 --k 100 --out benchmarks/results/knn_gpu.md

Task: the k nearest neighbours by inner product of every row of an N x D float32 matrix, the row itself excluded.
  - metric_jax: `knn(x, None, k, metric="dot", exclude_self=True, chunk_size=..., reference_chunk_size=...)` on JAX's
    default device (float32 products at `Precision.HIGHEST`).
  - torch: the matrix moved to `--torch-device`, then per block of `--torch-block` queries `scores = q @ x.T` (float32,
    TF32 off), the query's own column set to -inf, `torch.topk(scores, k)`; results copied back to the host.
Both start from the same host numpy array and end with host numpy `(indices [N, k], scores [N, k])`, so transfers are
inside both timings. Each method runs once untimed (its "first call": compilation, CUDA start-up, allocator growth),
then `--repeats` timed runs; the table gives the first call and the median. The ratio is metric_jax's median over
torch's.

Data (`--noise`): L2-normalized Gaussian clusters from a fixed seed, N / 5 centres plus per-entry Gaussian noise (0.7:
clustered, neighbours meaningful; 2.9: little class structure), the construction of `benchmarks/knn.py`'s kinds.

Agreement: per row the two neighbour sets are compared; a row whose sets differ is explained when every neighbour in one
set and not the other scores (recomputed in float64) within `--tie-tolerance` of that row's k-th best score (float32
rounding at equal scores). Scores are compared entry by entry (both lists are sorted best first).
"""

from __future__ import annotations

import argparse
import datetime
import os
import pathlib
import platform
import statistics
import sys
import time

if __package__ in (None, ""):  # `python benchmarks/knn_gpu.py`: make the repository importable.
  sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from benchmarks._machine import cpu_name  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
METHODS = ("metric_jax", "torch")


def make_embeddings(num: int, dim: int, seed: int = 0, noise: float = 0.7) -> np.ndarray:
  """L2-normalized Gaussian clusters `[num, dim]` float32: `num / 5` centres, per-entry Gaussian noise `noise`."""
  rng = np.random.default_rng(seed)
  centres = rng.standard_normal((max(num // 5, 1), dim), dtype=np.float32)
  labels = rng.integers(0, centres.shape[0], num)
  x = centres[labels]
  x += np.float32(noise) * rng.standard_normal((num, dim), dtype=np.float32)
  x /= np.linalg.norm(x, axis=1, keepdims=True)
  return x


def knn_settings(chunk_size=None, reference_chunk_size=None, block_size=None, num_threads=None) -> dict:
  """The keyword arguments of `metric_jax.evaluation.knn` for the given settings, the library's defaults for None."""
  import importlib
  knn_module = importlib.import_module("metric_jax.evaluation.knn")  # the module (the package exports the function)
  given = dict(chunk_size=chunk_size, reference_chunk_size=reference_chunk_size, block_size=block_size,
               num_threads=num_threads)
  return {name: getattr(knn_module, f"DEFAULT_{name.upper()}") if value is None else value
          for name, value in given.items()}


def metric_jax_knn(x: np.ndarray, k: int, **settings):
  """`(indices [N, k], scores [N, k])` from `metric_jax.evaluation.knn` (self excluded, `settings` as in
  `knn_settings`), as numpy."""
  from metric_jax.evaluation import knn
  return knn(x, None, k, metric="dot", exclude_self=True, **settings)


def torch_knn(x: np.ndarray, k: int, *, block: int, device: str):
  """`(indices [N, k], scores [N, k])` by blocked `q @ x.T` + `torch.topk` on `device`, self excluded, as numpy."""
  import torch
  xt = torch.from_numpy(x).to(device)
  n = xt.shape[0]
  values = torch.empty((n, k), dtype=torch.float32, device=device)
  index = torch.empty((n, k), dtype=torch.int64, device=device)
  for start in range(0, n, block):
    q = xt[start:start + block]
    rows = torch.arange(q.shape[0], device=device)
    scores = q @ xt.T
    scores[rows, start + rows] = -float("inf")
    values[start:start + block], index[start:start + block] = torch.topk(scores, k, dim=1, largest=True, sorted=True)
    del scores
  return index.to(torch.int32).cpu().numpy(), values.cpu().numpy()


def compare(x: np.ndarray, a_index, a_scores, b_index, b_scores, tolerance: float) -> dict:
  """Row-by-row agreement of two kNN results (see the module docstring)."""
  a_sorted, b_sorted = np.sort(a_index, axis=1), np.sort(b_index, axis=1)
  differ = np.nonzero(np.any(a_sorted != b_sorted, axis=1))[0]
  unexplained = []
  for row in differ[:20000]:
    extra = np.setxor1d(a_index[row], b_index[row])
    scores = x[extra].astype(np.float64) @ x[row].astype(np.float64)
    kth = min(float(a_scores[row, -1]), float(b_scores[row, -1]))
    if np.any(np.abs(scores - kth) > tolerance):
      unexplained.append(int(row))
  return {"rows": int(a_index.shape[0]), "rows_differ": int(differ.size), "checked": int(min(differ.size, 20000)),
          "unexplained": len(unexplained), "unexplained_rows": unexplained[:10],
          "max_score_diff": float(np.max(np.abs(a_scores.astype(np.float64) - b_scores)))}


def _time(run, repeats: int):
  """(first call s, median of `repeats` timed calls s or None, last result)."""
  start = time.perf_counter()
  result = run()
  first = time.perf_counter() - start
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    result = run()
    times.append(time.perf_counter() - start)
  return first, (statistics.median(times) if times else None), result


def _jax_peak_bytes():
  import jax
  try:
    stats = jax.devices()[0].memory_stats() or {}
  except Exception:  # some backends (CPU) have no memory statistics
    return None
  return stats.get("peak_bytes_in_use")


def _versions(torch_device: str) -> str:
  import jax
  import jaxlib
  parts = [f"python {platform.python_version()}", f"jax {jax.__version__}", f"jaxlib {jaxlib.__version__}",
           f"JAX backend {jax.default_backend()} ({jax.devices()[0].device_kind})"]
  try:
    import torch
    parts.append(f"torch {torch.__version__} (CUDA {torch.version.cuda})")
    if torch_device.startswith("cuda") and torch.cuda.is_available():
      parts.append(f"torch device {torch.cuda.get_device_name(0)}")
  except ImportError:
    pass
  return ", ".join(parts)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--num", type=int, default=1_000_000, help="rows N (queries = references)")
  parser.add_argument("--dim", type=int, default=128)
  parser.add_argument("--k", type=int, default=100)
  parser.add_argument("--noise", type=float, default=0.7, help="cluster noise (0.7 clustered, 2.9 unstructured)")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--repeats", type=int, default=2, help="timed runs per method after the first call")
  parser.add_argument("--methods", default="torch,metric_jax",
                      help=f"comma-separated subset of {','.join(METHODS)}, run in this order")
  parser.add_argument("--chunk-size", type=int, default=None,
                      help="metric_jax knn `chunk_size` (queries per call; default: the library's)")
  parser.add_argument("--reference-chunk-size", type=int, default=None,
                      help="metric_jax knn `reference_chunk_size` (default: the library's)")
  parser.add_argument("--block-size", type=int, default=None, help="metric_jax knn `block_size` (default: the library's)")
  parser.add_argument("--num-threads", type=int, default=None,
                      help="metric_jax knn `num_threads` (default: the library's)")
  parser.add_argument("--torch-device", default="cuda")
  parser.add_argument("--torch-block", type=int, default=2048, help="queries per torch score block")
  parser.add_argument("--tie-tolerance", type=float, default=1e-5)
  parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "knn_gpu.md"))
  args = parser.parse_args(argv)
  methods = [m for m in args.methods.split(",") if m]
  unknown = [m for m in methods if m not in METHODS]
  if unknown or not methods:
    parser.error(f"--methods: unknown {unknown}; choose from {', '.join(METHODS)}")

  start = time.perf_counter()
  x = make_embeddings(args.num, args.dim, args.seed, args.noise)
  data_s = time.perf_counter() - start
  print(f"data {x.shape} in {data_s:.1f} s", flush=True)

  rows, results = [], {}
  write = lambda agreement=None: _write(args, argv, rows, agreement, data_s)
  for method in methods:  # in the given order: a run stopped early keeps the methods done before
    if method == "metric_jax":
      settings = knn_settings(args.chunk_size, args.reference_chunk_size, args.block_size, args.num_threads)
      first, median, results["metric_jax"] = _time(lambda: metric_jax_knn(x, args.k, **settings), args.repeats)
      peak = _jax_peak_bytes()
      defaults = settings == knn_settings()
      rows.append(("metric_jax `knn`", ", ".join(f"{k}={v}" for k, v in settings.items())
                   + ("; the library's defaults" if defaults else ""), first, median, peak))
      print(f"metric_jax first {first:.2f} s, median {median}", flush=True)
      write()  # after every method, so that a run stopped early keeps what it measured
    elif method == "torch":
      import torch
      torch.backends.cuda.matmul.allow_tf32 = False
      cuda = args.torch_device.startswith("cuda")
      if cuda:
        torch.cuda.reset_peak_memory_stats()
      first, median, results["torch"] = _time(lambda: torch_knn(x, args.k, block=args.torch_block,
                                                                device=args.torch_device), args.repeats)
      peak = torch.cuda.max_memory_allocated() if cuda else None
      rows.append((f"torch `{args.torch_device}` `q @ x.T` + `topk`",
                   f"block={args.torch_block}, float32 matmul precision {torch.get_float32_matmul_precision()!r}",
                   first, median, peak))
      print(f"torch first {first:.2f} s, median {median}", flush=True)
      if cuda:
        torch.cuda.empty_cache()
      write()

  agreement = None
  if len(results) == 2:
    agreement = compare(x, *results["metric_jax"], *results["torch"], args.tie_tolerance)
    print(f"agreement {agreement}", flush=True)
  print(write(agreement))
  return 0 if agreement is None or agreement["unexplained"] == 0 else 1


def _write(args, argv, rows, agreement, data_s) -> str:
  """Writes `args.out` for the methods measured so far; returns its text."""
  command = "python benchmarks/knn_gpu.py " + " ".join(argv if argv is not None else sys.argv[1:])
  fmt = lambda v, d=2: "—" if v is None else f"{v:.{d}f}"
  lines = ["# Exact kNN on an accelerator: metric_jax next to torch.topk", "",
           "Written by `benchmarks/knn_gpu.py` (see its docstring for the method); every number comes from this run.", "",
           f"- Command: `{command.strip()}`",
           f"- Date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}",
           f"- Machine: {cpu_name()}, {os.cpu_count()} logical cores; {platform.platform()}",
           f"- Versions: {_versions(args.torch_device)}",
           f"- Data: {args.num:,} x {args.dim} float32, L2-normalized Gaussian clusters ({max(args.num // 5, 1):,}"
           f" centres, noise {args.noise:g}, seed {args.seed}); k = {args.k}, inner product, self excluded;"
           f" generated on the host in {data_s:.1f} s (not timed below).",
           f"- Timing: host numpy in, host numpy out; one untimed first call, then the median of {args.repeats} runs.",
           "", "| method | settings | first call s | median s | × torch | peak device MiB |", "|---|---|---:|---:|---:|---:|"]
  torch_median = next((r[3] for r in rows if r[0].startswith("torch")), None)
  for name, settings, first, median, peak in rows:
    ratio = median / torch_median if (median and torch_median) else None
    lines.append(f"| {name} | {settings} | {fmt(first)} | {fmt(median)} | {fmt(ratio)} |"
                 f" {fmt(None if peak is None else peak / 2**20, 0)} |")
  lines.append("")
  if agreement is not None:
    lines.append(f"Agreement: {agreement['rows_differ']:,} of {agreement['rows']:,} rows have different neighbour sets;"
                 f" of the {agreement['checked']:,} checked, {agreement['unexplained']} are not explained by score ties"
                 f" within {args.tie_tolerance:g}" + (f" (rows {agreement['unexplained_rows']})"
                                                     if agreement["unexplained"] else "") +
                 f"; largest difference between the sorted score lists: {agreement['max_score_diff']:.2e}.")
    lines.append("")
  lines.append("Peak device memory: metric_jax from `jax.devices()[0].memory_stats()['peak_bytes_in_use']` (the whole"
               " process so far), torch from `torch.cuda.max_memory_allocated()`; — where the backend reports none.")
  lines.append("")
  out = pathlib.Path(args.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  text = "\n".join(lines)
  out.write_text(text, encoding="utf-8")
  return text


if __name__ == "__main__":
  sys.exit(main())

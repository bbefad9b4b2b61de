"""Loss speed and memory benchmark (issue #2, "Must be fast").

For every registry loss (defaults, plus triplet's hard and semi-hard mining) and each `(B, D)` size, with 4 samples per
class and L2-normalized random embeddings, it times value-and-gradient with respect to the embeddings of

- the metric_jax loss, `jax.jit(jax.value_and_grad(loss))`, compile time measured separately (`lower().compile()`);
- the floor: value-and-gradient of `sum(E @ E.T)` on the same input (one matmul forward, one backward);
- the closest pytorch-metric-learning configuration, forward + backward on torch CPU with the same thread count
  (or on `--torch-device`, e.g. `cuda`, synchronised after each run);

Losses with learnable parameters (proxies, class weights, centres; `losses.has_params`) get parameters from
`losses.init_params` for `--num-classes` C classes and are timed as value-and-gradient with respect to the embeddings
AND the parameters (PML's backward computes both too); their floor is the class matmul `sum(E @ W.T)` with `W` of shape
`[C, D]` (`[C * K, D]` with K centres per class), differentiated with respect to both;

with `block_until_ready` / synchronous torch. Each loss is timed side by side with the floor, in alternating rounds
(`--rounds`), for at least `--repeats` runs and `--min-seconds` seconds, and its ratio is the ratio of those two
medians; PML is the median of `--repeats` runs after warm-up. It also reads the
compiled executable's memory analysis (temporary bytes) for every loss and size, to show that no loss allocates O(B^3)
temporaries (a `[1024, 1024, 1024]` float32 tensor would be 4 GiB).

Run from the repository root:

    python -m benchmarks.losses --sizes 256x128,1024x512 --out benchmarks/results/losses.md
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import math
import os
import platform
import re
import statistics
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks._machine import cpu_name
from metric_jax import losses

SAMPLES_PER_CLASS = 4
NUM_CLASSES = 1000            # classes of the losses with learnable parameters (`--num-classes`)
TORCH_DEVICE_ENV = "METRIC_JAX_BENCH_TORCH_DEVICE"   # `--torch-device`, handed to the PML child processes


@dataclasses.dataclass(frozen=True)
class Config:
  """A metric_jax loss configuration and its closest pytorch-metric-learning counterpart."""
  key: str
  name: str
  hparams: Dict[str, Any]
  pml: Optional[str]            # description of the reference configuration (None: PML has no such loss)


def _pml_factory(key: str, dim: Optional[int] = None, num_classes: int = NUM_CLASSES) -> Optional[Callable]:
  """Returns `fn(embeddings, labels) -> loss` (torch) for the PML configuration matching `key`, or None.

  The losses with learnable parameters are built for `num_classes` classes and embedding dimension `dim`.
  """
  from pytorch_metric_learning import distances, losses as pml_losses, miners

  lp = distances.LpDistance(normalize_embeddings=False)
  lp2 = distances.LpDistance(normalize_embeddings=False, power=2)
  if key in ("contrastive", "gpw_pair"):
    loss = pml_losses.ContrastiveLoss(pos_margin=0.0, neg_margin=1.0, distance=lp)
    return loss
  if key == "pairnet":       # PLoss = max(0, b - Y (m - D^2)) == contrastive on D^2 with margins m - b, m + b.
    return pml_losses.ContrastiveLoss(pos_margin=0.5, neg_margin=1.5, distance=lp2)
  if key in ("triplet", "gpw_triplet"):
    return pml_losses.TripletMarginLoss(margin=0.2, distance=lp)
  if key == "triplet[mining=hard]":
    loss, miner = pml_losses.TripletMarginLoss(margin=0.2, distance=lp), miners.BatchHardMiner(distance=lp)
    return lambda e, y: loss(e, y, miner(e, y))
  if key == "triplet[mining=semihard]":
    loss = pml_losses.TripletMarginLoss(margin=0.2, distance=lp)
    miner = miners.TripletMarginMiner(margin=0.2, type_of_triplets="semihard", distance=lp)
    return lambda e, y: loss(e, y, miner(e, y))
  if key == "npair_mc":
    return pml_losses.NPairsLoss()
  if key == "nca":
    return pml_losses.NCALoss(softmax_scale=1.0, distance=lp2)
  if key == "lifted_structure":
    return pml_losses.LiftedStructureLoss(neg_margin=1.0, pos_margin=0.0, distance=lp)
  if key == "generalized_lifted_structure":
    return pml_losses.GeneralizedLiftedStructureLoss(neg_margin=1.0, pos_margin=0.0, distance=lp)
  if key == "multi_similarity":
    loss, miner = pml_losses.MultiSimilarityLoss(alpha=2.0, beta=50.0, base=0.5), miners.MultiSimilarityMiner(0.1)
    return lambda e, y: loss(e, y, miner(e, y))
  if key == "histogram":
    return pml_losses.HistogramLoss(n_bins=100)
  c, d = num_classes, dim
  if key == "proxy_nca":
    return pml_losses.ProxyNCALoss(c, d, softmax_scale=1.0)
  if key == "proxy_anchor":
    return pml_losses.ProxyAnchorLoss(c, d, margin=0.1, alpha=32)
  if key == "normalized_softmax":
    return pml_losses.NormalizedSoftmaxLoss(c, d, temperature=0.05)
  if key == "cosface":
    return pml_losses.CosFaceLoss(c, d, margin=0.35, scale=64)
  if key == "arcface":
    return pml_losses.ArcFaceLoss(c, d, margin=28.6, scale=64)
  if key == "subcenter_arcface":
    return pml_losses.SubCenterArcFaceLoss(num_classes=c, embedding_size=d, margin=28.6, scale=64, sub_centers=3)
  if key == "softtriple":
    return pml_losses.SoftTripleLoss(c, d, centers_per_class=10, la=20, gamma=0.1, margin=0.01)
  if key == "supcon":
    return pml_losses.SupConLoss(temperature=0.1)
  if key == "ntxent":
    return pml_losses.NTXentLoss(temperature=0.1)
  if key == "circle":
    return pml_losses.CircleLoss(m=0.4, gamma=80)
  return None


CONFIGS = (
    Config("contrastive", "contrastive", {}, "ContrastiveLoss(pos_margin=0, neg_margin=1, LpDistance(normalize=False))"),
    Config("pairnet", "pairnet", {}, "ContrastiveLoss(pos_margin=m-b=0.5, neg_margin=m+b=1.5, LpDistance(power=2))"),
    Config("triplet", "triplet", {}, "TripletMarginLoss(margin=0.2, LpDistance(normalize=False)), all triplets"),
    Config("triplet[mining=hard]", "triplet", {"mining": "hard"}, "TripletMarginLoss(0.2) + BatchHardMiner"),
    Config("triplet[mining=semihard]", "triplet", {"mining": "semihard"},
           "TripletMarginLoss(0.2) + TripletMarginMiner(0.2, 'semihard')"),
    Config("npair_mc", "npair_mc", {}, "NPairsLoss() (dot product; one positive per class)"),
    Config("npair_ovo", "npair_ovo", {}, None),
    Config("nca", "nca", {}, "NCALoss(softmax_scale=1, LpDistance(power=2, normalize=False))"),
    Config("lifted_structure", "lifted_structure", {}, "LiftedStructureLoss(neg_margin=1, pos_margin=0, LpDistance)"),
    Config("generalized_lifted_structure", "generalized_lifted_structure", {},
           "GeneralizedLiftedStructureLoss(neg_margin=1, pos_margin=0, LpDistance)"),
    Config("multi_similarity", "multi_similarity", {}, "MultiSimilarityLoss(2, 50, 0.5) + MultiSimilarityMiner(0.1)"),
    Config("binomial_deviance", "binomial_deviance", {}, None),
    Config("histogram", "histogram", {}, "HistogramLoss(n_bins=100)"),
    Config("gpw_pair", "gpw_pair", {}, "ContrastiveLoss(0, 1, LpDistance) (GPW pair, constant weights = contrastive)"),
    Config("gpw_triplet", "gpw_triplet", {}, "TripletMarginLoss(0.2, LpDistance) (GPW triplet, constant = all triplets)"),
    # Issue 12. Losses with learnable parameters: C = --num-classes classes, gradients w.r.t. embeddings and params.
    Config("proxy_nca", "proxy_nca", {"positive_in_denominator": True},
           "ProxyNCALoss(C, D, softmax_scale=1) (softmax over all proxies = positive_in_denominator=True)"),
    Config("proxy_anchor", "proxy_anchor", {}, "ProxyAnchorLoss(C, D, margin=0.1, alpha=32)"),
    Config("normalized_softmax", "normalized_softmax", {}, "NormalizedSoftmaxLoss(C, D, temperature=0.05)"),
    Config("cosface", "cosface", {}, "CosFaceLoss(C, D, margin=0.35, scale=64)"),
    Config("arcface", "arcface", {}, "ArcFaceLoss(C, D, margin=28.6 degrees, scale=64) (metric_jax: 0.5 rad)"),
    Config("subcenter_arcface", "subcenter_arcface", {},
           "SubCenterArcFaceLoss(C, D, margin=28.6, scale=64, sub_centers=3)"),
    Config("softtriple", "softtriple", {},
           "SoftTripleLoss(C, D, centers_per_class=10, la=20, gamma=0.1, margin=0.01) (PML has no centre"
           " regularizer; metric_jax computes it, tau=0.2)"),
    Config("supcon", "supcon", {}, "SupConLoss(temperature=0.1)"),
    Config("ntxent", "ntxent", {}, "NTXentLoss(temperature=0.1)"),
    Config("circle", "circle", {}, "CircleLoss(m=0.4, gamma=80)"),
)


def _inputs(batch: int, dim: int, seed: int = 0) -> Tuple[np.ndarray, np.ndarray]:
  rng = np.random.default_rng(seed)
  embeddings = rng.normal(size=(batch, dim)).astype(np.float32)
  embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
  labels = rng.permutation(np.arange(batch) // SAMPLES_PER_CLASS).astype(np.int32)
  return embeddings, labels


def _collect(run: Callable[[], Any], times: List[float], *, min_runs: int, max_runs: Optional[int] = None,
             min_seconds: float = 0.0, budget_s: float = 30.0) -> None:
  """Times `run()` into `times` (seconds) until at least `min_runs` runs and `min_seconds` are done, at most `max_runs`
  runs; once `budget_s` seconds are spent it stops after at least 3 runs (only the slowest PML losses reach it)."""
  spent = 0.0
  count = 0
  while (count < min_runs or spent < min_seconds) and (max_runs is None or count < max_runs):
    start = time.perf_counter()
    run()
    times.append(time.perf_counter() - start)
    spent += times[-1]
    count += 1
    if count >= 3 and spent > budget_s:
      break


def _median_ms(run: Callable[[], Any], repeats: int, warmup: int, budget_s: float = 30.0) -> float:
  """Median wall time in ms of `run()` over `repeats` runs after `warmup` runs.

  Slow runs are capped by `budget_s`: timing stops early once that many seconds are spent, after at least 3 runs (and
  warm-up stops after 1 run when that run alone exceeds the budget's tenth)."""
  for _ in range(warmup):
    start = time.perf_counter()
    run()
    if time.perf_counter() - start > budget_s / 10:
      break
  times: List[float] = []
  _collect(run, times, min_runs=repeats, max_runs=repeats, budget_s=budget_s)
  return 1e3 * statistics.median(times)


def _compile_jax(loss_fn: Callable, embeddings, labels, params=None):
  """Returns `(run, compile s, temp bytes)` for `jit(value_and_grad(loss_fn))`; `run()` blocks until done.

  With `params`, `loss_fn(e, y, params)` is differentiated with respect to the embeddings and the parameters.
  """
  e, y = jnp.asarray(embeddings), jnp.asarray(labels)
  if params is None:
    fn, args = jax.jit(jax.value_and_grad(loss_fn)), (e, y)
  else:
    fn = jax.jit(jax.value_and_grad(lambda e_, p, y_: loss_fn(e_, y_, p), argnums=(0, 1)))
    args = (e, jax.tree.map(jnp.asarray, params), y)
  start = time.perf_counter()
  compiled = fn.lower(*args).compile()
  compile_s = time.perf_counter() - start
  memory = compiled.memory_analysis()
  temp_bytes = int(getattr(memory, "temp_size_in_bytes", -1)) if memory is not None else -1
  return (lambda: jax.block_until_ready(compiled(*args))), compile_s, temp_bytes


def _interleaved_ms(run: Callable[[], Any], floor_run: Callable[[], Any], repeats: int, warmup: int,
                    min_seconds: float, rounds: int) -> Tuple[float, float]:
  """Median ms of `run` and of `floor_run`, sampled in alternating rounds so that both see the same machine state.

  Each of the `rounds` rounds times the floor and then the loss, each for at least `repeats / rounds` runs and
  `min_seconds / rounds` seconds (capped by a 30 s budget per measurement, as in `_median_ms`). Sub-millisecond timings on a shared
  2-core machine drift by tens of percent between seconds (thread wake-ups, frequency); the ratio of medians taken
  side by side is what the floor comparison needs.
  """
  for _ in range(warmup):
    floor_run()
    run()
  per_round = max(1, math.ceil(repeats / rounds))
  loss_times: List[float] = []
  floor_times: List[float] = []
  for _ in range(rounds):
    for target, times in ((floor_run, floor_times), (run, loss_times)):
      _collect(target, times, min_runs=per_round, min_seconds=min_seconds / rounds, budget_s=30.0 / rounds)
  return 1e3 * statistics.median(loss_times), 1e3 * statistics.median(floor_times)


def _time_pml(pml_fn: Callable, embeddings, labels, repeats: int, warmup: int, device: str = "cpu") -> float:
  import torch

  e = torch.tensor(embeddings, requires_grad=True, device=device)
  y = torch.tensor(labels.astype(np.int64), device=device)
  if isinstance(pml_fn, torch.nn.Module):
    pml_fn.to(device)
  cuda = torch.device(device).type == "cuda"

  def run():
    e.grad = None
    if isinstance(pml_fn, torch.nn.Module):
      pml_fn.zero_grad(set_to_none=True)       # learnable proxies / weights: a fresh gradient each run
    loss = pml_fn(e, y)
    loss.backward()
    if cuda:
      torch.cuda.synchronize()                 # CUDA kernels run asynchronously: time them to completion
    return loss

  return _median_ms(run, repeats, warmup)


def _pml_worker(key: str, batch: int, dim: int, repeats: int, warmup: int, threads: int, num_classes: int):
  """Child-process entry: prints the PML median ms (run under an address-space limit by `_time_pml_isolated`)."""
  import torch
  torch.set_num_threads(threads)
  embeddings, labels = _inputs(batch, dim)
  pml_fn = _pml_factory(key, dim, num_classes)
  device = os.environ.get(TORCH_DEVICE_ENV, "cpu")
  print(f"PML_MS {_time_pml(pml_fn, embeddings, labels, repeats, warmup, device)!r}", flush=True)


def _time_pml_isolated(key: str, batch: int, dim: int, repeats: int, warmup: int, threads: int, memory_gib: float,
                       num_classes: int = NUM_CLASSES, torch_device: str = "cpu", timeout_s: Optional[float] = None):
  """Times the PML reference in a child process limited to `memory_gib` of address space.

  Some PML losses build `[B, B, B]`-sized intermediates (LiftedStructureLoss at B=1024 needed > 20 GiB here and was
  killed by the OS); in a child with a memory limit that becomes a reported failure instead of killing the benchmark.
  On a CUDA `torch_device` no address-space limit is set (CUDA reserves far more virtual memory than it uses, so a
  limit breaks its start-up); running out of GPU memory is then the reported failure. With `timeout_s`, a child still
  running after that many seconds is stopped and reported. Returns `(ms or None, error or None)`.
  """
  import resource
  import subprocess

  limit = int(memory_gib * 2**30)

  def limit_memory():
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

  command = [sys.executable, "-m", "benchmarks.losses", "--pml-worker", key, str(batch), str(dim), str(repeats),
             str(warmup), str(threads), str(num_classes)]
  cuda = torch_device.startswith("cuda")
  try:
    result = subprocess.run(command, capture_output=True, text=True, preexec_fn=None if cuda else limit_memory,
                            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                            env=dict(os.environ, **{TORCH_DEVICE_ENV: torch_device}), timeout=timeout_s)
  except subprocess.TimeoutExpired:
    return None, f"stopped after {timeout_s:g} s"
  for line in result.stdout.splitlines():
    if line.startswith("PML_MS "):
      return float(line.split()[1]), None
  tail = (result.stderr.strip().splitlines() or ["no output"])[-1]
  if cuda and "out of memory" in result.stderr.lower():
    return None, "out of GPU memory"
  if "memory" in result.stderr.lower() or "alloc" in result.stderr.lower() or result.returncode < 0:
    asked = re.search(r"allocate (\d+) bytes", result.stderr)     # torch: "you tried to allocate N bytes"
    asked = f"; refused: an allocation of {int(asked.group(1)) / 2**20:,.0f} MiB" if asked else ""
    return None, f"out of memory (> {memory_gib:g} GiB limit{asked})"
  return None, tail[:120]


def _floor(e, y):
  del y
  return jnp.sum(e @ e.T)


def _class_floor(e, y, params):
  """The floor of the losses with learnable parameters: the `B x D x rows` matmul with the parameter matrix."""
  del y
  (weights,) = params.values()
  return jnp.sum(e @ weights.T)


def _fmt(x, digits=2):
  if x is None or (isinstance(x, float) and math.isnan(x)):
    return "—"
  return f"{x:.{digits}f}"


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--sizes", default="256x128,1024x512", help="comma-separated BxD sizes")
  parser.add_argument("--repeats", type=int, default=20, help="timed runs per measurement (median reported)")
  parser.add_argument("--warmup", type=int, default=3, help="untimed runs after compilation")
  parser.add_argument("--min-seconds", type=float, default=2.0,
                      help="least time spent timing each metric_jax loss and, beside it, the floor")
  parser.add_argument("--rounds", type=int, default=5, help="alternating floor / loss rounds per measurement")
  parser.add_argument("--losses", default="all", help="comma-separated config keys (see CONFIGS) or 'all'")
  parser.add_argument("--no-pml", action="store_true", help="skip the pytorch-metric-learning reference")
  parser.add_argument("--out", default="benchmarks/results/losses.md", help="Markdown file to write")
  parser.add_argument("--pml-memory-gib", type=float, default=8.0,
                      help="address-space limit of the child process that times each PML loss")
  parser.add_argument("--num-classes", type=int, default=NUM_CLASSES,
                      help="classes C of the losses with learnable parameters (proxies / weights [C, D])")
  parser.add_argument("--torch-device", default="cpu",
                      help="torch device of the PML reference, e.g. cuda (runs are then synchronised before timing)")
  parser.add_argument("--pml-timeout", type=float, default=None,
                      help="seconds after which a PML child process is stopped and reported (default: no limit)")
  parser.add_argument("--pml-worker", nargs=7, help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.pml_worker:
    key, batch, dim, repeats, warmup, threads, num_classes = args.pml_worker
    _pml_worker(key, int(batch), int(dim), int(repeats), int(warmup), int(threads), int(num_classes))
    return

  args.load_start = os.getloadavg()[0]
  sizes = [tuple(int(v) for v in s.lower().split("x")) for s in args.sizes.split(",") if s]
  by_key = {c.key: c for c in CONFIGS}
  if args.losses == "all":
    configs = list(CONFIGS)
  else:
    unknown = [k for k in args.losses.split(",") if k not in by_key]
    if unknown:
      parser.error(f"unknown --losses {unknown}; known: {', '.join(by_key)}")
    configs = [by_key[k] for k in args.losses.split(",")]

  torch_threads = None if args.no_pml else os.cpu_count()

  rows: List[Dict[str, Any]] = []
  floors: Dict[Tuple[int, int], Tuple[float, float, int]] = {}
  class_floors: Dict[Tuple[int, int, int], Tuple[float, float, int]] = {}   # (B, D, rows of W) -> as `floors`
  for batch, dim in sizes:
    embeddings, labels = _inputs(batch, dim)
    floor_run, floor_compile, floor_temp = _compile_jax(_floor, embeddings, labels)
    floor_samples = []
    class_floor_runs: Dict[int, Tuple[Callable, float, int, List[float]]] = {}
    for config in configs:
      row = dict(key=config.key, batch=batch, dim=dim, pml=config.pml)
      try:
        loss = losses.get(config.name)
        if losses.has_params(config.name):
          params = losses.init_params(config.name, jax.random.PRNGKey(0), num_classes=args.num_classes,
                                      embedding_dim=dim, **config.hparams)
          row["param_rows"] = next(iter(params.values())).shape[0]
          if row["param_rows"] not in class_floor_runs:
            class_floor_runs[row["param_rows"]] = (*_compile_jax(_class_floor, embeddings, labels, params), [])
          config_floor, _, _, samples = class_floor_runs[row["param_rows"]]
          fn = lambda e, y, p, loss=loss, hp=config.hparams: loss(e, y, params=p, **hp)
          run, row["compile_s"], row["temp_bytes"] = _compile_jax(fn, embeddings, labels, params)
        else:
          config_floor, samples = floor_run, floor_samples
          fn = lambda e, y, loss=loss, hp=config.hparams: loss(e, y, **hp)
          run, row["compile_s"], row["temp_bytes"] = _compile_jax(fn, embeddings, labels)
        row["ms"], row["floor_ms"] = _interleaved_ms(run, config_floor, args.repeats, args.warmup, args.min_seconds,
                                                     args.rounds)
        samples.append(row["floor_ms"])
      except Exception as error:  # a loss that fails is reported, not hidden
        row["error"] = f"{type(error).__name__}: {str(error).splitlines()[0][:120]}"
      if config.pml is not None and not args.no_pml:
        row["pml_ms"], row["pml_error"] = _time_pml_isolated(config.key, batch, dim, args.repeats, args.warmup,
                                                             torch_threads, args.pml_memory_gib, args.num_classes,
                                                             args.torch_device, args.pml_timeout)
      rows.append(row)
      print(f"  {config.key:32s} {row.get('ms', float('nan')):9.3f} ms  floor {row.get('floor_ms', float('nan')):7.3f} ms"
            f"   PML {row.get('pml_ms') or float('nan'):9.3f} ms   {row.get('error', '')} {row.get('pml_error') or ''}",
            flush=True)
    floor_ms = statistics.median(floor_samples) if floor_samples else float("nan")
    floors[(batch, dim)] = (floor_ms, floor_compile, floor_temp)
    for param_rows, (_, compile_s, temp, samples) in class_floor_runs.items():
      class_floors[(batch, dim, param_rows)] = (statistics.median(samples) if samples else float("nan"), compile_s,
                                                temp)

  _write(args, sizes, configs, rows, floors, torch_threads, class_floors)


def _run_facts(module: str, backend: bool = True) -> List[str]:
  """The Command, Date, Machine and Versions lines of a results file written by `python -m <module>`.

  With `backend=False` the JAX backend is not named, so not started (a parent that only forks workers keeps JAX's
  threads out of its `fork`s).
  """
  import jaxlib
  devices = f", backend {jax.default_backend()} ({len(jax.devices())} device(s))" if backend else ""
  return [f"- Command: `python -m {module} {' '.join(sys.argv[1:])}`".rstrip(),
          f"- Date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}",
          f"- Machine: {cpu_name()}, {os.cpu_count()} logical cores visible; {platform.platform()}",
          f"- Versions: jax {jax.__version__}, jaxlib {jaxlib.__version__}{devices}" + _torch_versions()]


def _write(args, sizes, configs, rows, floors, torch_threads, class_floors=None):
  lines = ["# Loss benchmark: value and gradient w.r.t. the embeddings", ""]
  lines.append("Written by `benchmarks/losses.py`; every number below comes from the run described here.")
  lines.append("")
  lines += _run_facts("benchmarks.losses")
  lines.append(f"- Threads: XLA CPU default (all visible cores), XLA_FLAGS={os.environ.get('XLA_FLAGS', '(unset)')!r};"
               f" torch.set_num_threads({torch_threads})")
  torch_device = getattr(args, "torch_device", "cpu")
  if torch_device != "cpu":
    lines.append(f"- PML device: torch `{torch_device}`, each run followed by `torch.cuda.synchronize()`; no"
                 " address-space limit on its child processes (CUDA needs the virtual memory), so a PML failure"
                 " there is the GPU running out of memory" + (f"; a child still running after {args.pml_timeout:g} s"
                 " is stopped" if args.pml_timeout else "") + ".")
  lines.append(f"- Inputs: L2-normalized Gaussian embeddings, float32, {SAMPLES_PER_CLASS} samples per class; jit compile"
               " time excluded from `ms` and given in its own column.")
  lines.append(f"- metric_jax timing: {args.warmup} warm-up runs, then {args.rounds} alternating rounds of floor and loss,"
               f" each measurement at least {args.repeats} runs and {args.min_seconds:g} s in all; `ms` and `floor ms`"
               " are the medians of the loss's and of the floor's runs taken side by side, and `× floor` is their"
               " ratio (the floor row gives the median of those floor medians). PML: median of"
               f" {args.repeats} runs after {args.warmup} warm-up runs (cut to at least 3 runs once 30 s are spent).")
  lines.append("- Floor: `jit(value_and_grad(lambda E: sum(E @ E.T)))` on the same input. PML: forward + `backward()`"
               " with the configuration listed below (miner time included), each timed in a child process with torch's"
               f" thread count set as below and a {args.pml_memory_gib:g} GiB address-space limit.")
  lines.append(f"- Losses with learnable parameters: C = {args.num_classes} classes (`--num-classes`), parameters from"
               " `losses.init_params`, value and gradient w.r.t. the embeddings and the parameters (PML's backward"
               " computes both); their floor is `value_and_grad(lambda E, W: sum(E @ W.T), (0, 1))` with `W` of"
               " shape `[rows, D]`, rows = C, or C x K for K centres per class (the *class floor* rows below).")
  lines.append(f"- Load: 1-minute load average {args.load_start:.1f} at the start, {os.getloadavg()[0]:.1f} at the end"
               " (the benchmark itself keeps up to 2 cores busy); sub-millisecond timings on a shared machine drift,"
               " which the side-by-side floor absorbs only in part.")
  lines.append("")
  lines.append("| loss | B | D | ms | floor ms | × floor | PML ms | speed-up over PML | compile s | temp MiB |")
  lines.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
  for batch, dim in sizes:
    floor_ms, floor_compile, floor_temp = floors[(batch, dim)]
    if not math.isnan(floor_ms):            # no pair loss timed at this size (e.g. `--losses proxy_anchor`)
      lines.append(f"| *floor* `sum(E @ E.T)` | {batch} | {dim} | {_fmt(floor_ms, 3)} | {_fmt(floor_ms, 3)} | 1.00 |"
                   f" — | — | {_fmt(floor_compile)} | {_fmt(floor_temp / 2**20)} |")
    for (b, d, param_rows), (class_ms, class_compile, class_temp) in sorted((class_floors or {}).items()):
      if (b, d) == (batch, dim):
        lines.append(f"| *class floor* `sum(E @ W.T)`, W [{param_rows}, D] | {batch} | {dim} | {_fmt(class_ms, 3)} |"
                     f" {_fmt(class_ms, 3)} | 1.00 | — | — | {_fmt(class_compile)} | {_fmt(class_temp / 2**20)} |")
    for row in (r for r in rows if (r["batch"], r["dim"]) == (batch, dim)):
      if "error" in row:
        lines.append(f"| {row['key']} | {batch} | {dim} | error: {row['error']} | | | | | | |")
        continue
      ratio = row["ms"] / row["floor_ms"]
      pml_ms = row.get("pml_ms")
      speedup = pml_ms / row["ms"] if pml_ms else None
      pml_cell = row["pml_error"] if row.get("pml_error") else _fmt(pml_ms, 3)
      lines.append(f"| {row['key']} | {batch} | {dim} | {_fmt(row['ms'], 3)} | {_fmt(row['floor_ms'], 3)} | {_fmt(ratio)} |"
                   f" {pml_cell} |"
                   f" {_fmt(speedup)} | {_fmt(row['compile_s'])} | {_fmt(row['temp_bytes'] / 2**20)} |")
  lines.append("")
  lines += _targets(sizes, rows, floors)
  lines += _memory(sizes, rows)
  lines.append("")
  lines.append("## PML configurations")
  lines.append("")
  for config in configs:
    lines.append(f"- `{config.key}`: " + (config.pml if config.pml else "no pytorch-metric-learning equivalent"))
  lines.append("")
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  with open(args.out, "w", encoding="utf-8") as f:
    f.write("\n".join(lines))
  print(f"wrote {args.out}")


def _torch_versions() -> str:
  try:
    import pytorch_metric_learning
    import torch
    return f", torch {torch.__version__}, pytorch-metric-learning {pytorch_metric_learning.__version__}"
  except ImportError:
    return ""


def _targets(sizes, rows, floors):
  lines = ["## Targets", ""]
  slow = [r for r in rows if "ms" in r and r["ms"] > 3 * r["floor_ms"]]
  behind = [r for r in rows if "ms" in r and r.get("pml_ms") and r["ms"] >= r["pml_ms"]]
  failed = [r for r in rows if "error" in r]
  timed = [r for r in rows if "ms" in r]
  with_pml = [r for r in timed if r.get("pml_ms")]
  lines.append(f"- ≤ 3× the floor: {len(timed) - len(slow)} of {len(timed)} measurements meet it." + (
      " Missed by: " + ", ".join(f"`{r['key']}` at B={r['batch']} ({r['ms'] / r['floor_ms']:.2f}×)"
                                 for r in slow) if slow else ""))
  lines.append(f"- Faster than PML: {len(with_pml) - len(behind)} of {len(with_pml)} measurements with a PML"
               " counterpart." + (" Not faster: " + ", ".join(
                   f"`{r['key']}` at B={r['batch']} ({r['pml_ms'] / r['ms']:.2f}×)" for r in behind) if behind else ""))
  pml_failed = [r for r in rows if r.get("pml_error")]
  if pml_failed:
    lines.append("- PML could not run: " + ", ".join(f"`{r['key']}` at B={r['batch']} ({r['pml_error']})"
                                                      for r in pml_failed) + "; not counted above.")
  if failed:
    lines.append("- Failed to run: " + ", ".join(f"`{r['key']}` at B={r['batch']}" for r in failed))
  lines.append("")
  return lines


def _memory(sizes, rows):
  """Temporary memory per loss at the largest B, and its growth exponent between the smallest and largest B."""
  lines = ["## Memory (compiled temporaries)", ""]
  batches = sorted({b for b, _ in sizes})
  big = max(sizes)
  cube_mib = big[0] ** 3 * 4 / 2**20
  lines.append(f"XLA's `compiled.memory_analysis().temp_size_in_bytes` of value-and-gradient. At B={big[0]} a single"
               f" `[B, B, B]` float32 tensor would take {cube_mib:.0f} MiB and a `[B, B]` one"
               f" {big[0] ** 2 * 4 / 2**20:.0f} MiB. Growth exponent k in temp ∝ B^k is estimated between"
               f" B={batches[0]} and B={batches[-1]} (D changes too, so it is only indicative).")
  lines.append("")
  lines.append(f"| loss | temp MiB at B={big[0]}, D={big[1]} | temp / (B²·4 bytes) | growth exponent | > 64 B² floats (O(B³)-like)? |")
  lines.append("|---|---:|---:|---:|---|")
  small = min(sizes)
  for key in dict.fromkeys(r["key"] for r in rows):
    at_big = next((r for r in rows if r["key"] == key and (r["batch"], r["dim"]) == big and "temp_bytes" in r), None)
    at_small = next((r for r in rows if r["key"] == key and (r["batch"], r["dim"]) == small and "temp_bytes" in r),
                    None)
    if at_big is None:
      lines.append(f"| {key} | — | — | — | not measured |")
      continue
    temp = at_big["temp_bytes"]
    per_square = temp / (big[0] ** 2 * 4)
    exponent = None
    if at_small is not None and big[0] != small[0] and at_small["temp_bytes"] > 0 and temp > 0:
      exponent = math.log(temp / at_small["temp_bytes"]) / math.log(big[0] / small[0])
    cubic = "yes" if per_square > 64 else "no"
    lines.append(f"| {key} | {_fmt(temp / 2**20)} | {_fmt(per_square, 1)} | {_fmt(exponent)} | {cubic} |")
  lines.append("")
  return lines


if __name__ == "__main__":
  main()

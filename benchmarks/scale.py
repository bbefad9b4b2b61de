"""Scale benchmarks (issue 11): per-device loss memory under row sharding, and blocked losses at a large batch.

Two parts, each writing its own Markdown file; every measurement runs in a child process of its own.

`devices`: for every registry loss with its defaults, with G = `--batch` L2-normalized embeddings of dimension D and 4
samples per class, it compiles `jax.jit(jax.shard_map(value_and_grad(loss(..., axis_name=AXIS))))` over the local rows
on n = 1, 2, 4, 8 virtual CPU devices (one child process per n, `jax_num_cpu_devices` set before the backend starts)
and reads the compiled executable's `memory_analysis()`: the temporary bytes of one device's program. Nothing runs.
The n = 1 child also compiles the unsharded loss, `jit(value_and_grad(loss))` on the whole `[G, G]` problem: the
"before" column, what every device held when each computed the loss of the all-gathered batch.

`blocked`: for every registry loss with its defaults and `block_size = --block-size`, at G = `--batch`, one child
process per loss compiles and runs `jit(value_and_grad(loss))`, reads its peak RSS (`ru_maxrss`) after the loss's
first run and before anything else runs, then times the loss side by side with the floor in alternating rounds
(`sum(E @ E.T)`; the class matmul `sum(E @ W.T)` for the losses with parameters, as in `benchmarks/losses.py`).
pytorch-metric-learning at the same size runs in `benchmarks/losses.py`'s child process, with an address-space limit
and a timeout.

Losses with learnable parameters get them from `losses.init_params` for `--num-classes` C classes (default G / 4, the
classes of the batch) and are differentiated w.r.t. the embeddings and the parameters.

Run from the repository root:

    python -m benchmarks.scale devices --out benchmarks/results/scale.md
    python -m benchmarks.scale blocked --out benchmarks/results/blocked.md
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional, Tuple

import jax
import numpy as np
from jax.sharding import Mesh, PartitionSpec as P

from benchmarks import losses as bench
from metric_jax import losses

AXIS = "rows"
RESULT = "RESULT "            # prefix of the JSON lines a child process prints, one per loss
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Within this factor of the ideal 1/n at every n, a loss's per-device temporaries "fall as 1/n".
ONE_OVER_N_SLACK = 1.5

# Why a loss misses a target, from reading its code (and measuring); printed next to the misses a run finds.
DEVICE_CAUSES = {
    "npair_mc": "the part that does not shrink is the O(G·D) that row sharding keeps on every device by design (the"
                " all-gathered `[G, D]` keys, the `[G / 2, D]` positives taken from them, and their gradients before"
                " the `psum_scatter`), not a `[G, G]`-sized term: it grows with D (0.9 MiB at D = 32, 3.4 MiB at"
                " D = 128, 16.5 MiB at D = 512, about 2·G·D floats; `python -m benchmarks.scale devices --losses"
                " npair_mc --devices 1,8 --dim 32`). It stands out here because N-pair's quadratic part is small:"
                " the compact `[S / n, S]` anchor × positive matrix with S = G / 2 tuples, a quarter of `[G, G]`"
                " (27 MiB at n = 1, against 370 MiB for contrastive)",
}
# Printed under any time miss: what all of them share.
TIME_CAUSE = (
    "the floor's matmul does D = {dim} multiply-adds per matrix entry (`[G, G]`, or `[G, C]` for the class floor),"
    " while a loss's own work per entry does not shrink with D: the label masks, the hinge / exp / log of every pair,"
    " the row (and column) reductions and their gradients are memory-bound passes over `[block, G]` arrays. At"
    " B = 1024 with D = 512 (`benchmarks/results/losses.md`) every loss met the target against a floor that costs"
    " 512 per entry. Blocks add"
    " the rematerialization: each block's forward pass runs again in the backward pass (`jax.checkpoint` in"
    " `metric_jax/losses/_shard.py`; only the per-row statistics are kept), so the `[block, G]` passes that the"
    " backward needs are paid twice (not for `triplet`, `gpw_triplet` with `normalize=\"none\"`,"
    " `lifted_structure`, `histogram` and `binomial_deviance`, whose blocks form their gradient in the forward pass,"
    " `PairProblem.map_linear`; the last two also visit each unordered pair once, `PairProblem.map_pairs`).")
BLOCKED_CAUSES = {
    "triplet": "all triplets of a PK batch (K - 1 = 3 positives per anchor) are summed in the sort-free layout:"
               " one pass over the `[block, G]` rows per positive slot (3), each several elementwise operations and"
               " row sums, after the window bounds are found (the positive slots come from one sort of the labels,"
               " `mining.label_candidates`), then the distance's VJP (`triplet._slot_totals`, `mining.scan_slots`).",
    "gpw_triplet": "the same 3 positive-slot passes as `triplet`, for each GPW statistic, then the distance's VJP"
                   " (`gpw._triplet_stats_and_row_gradients`).",
    "lifted_structure": "two passes over the blocks: the row log-sum-exps `r_i = log Σ_{k∈N(i)} exp(α − D_ik)` of"
                        " every sample are global statistics that every pair term needs (as its column side), so a"
                        " first pass computes them and a second the pair terms and the gradient"
                        " (`lifted._lifted_symmetric`): each block's distances are built twice, and exp runs on"
                        " every pair three times (the row sums, the pair's log-add-exp and its weight, the"
                        " negatives' gradient weights).",
    "multi_similarity": "ε-mining (row min over the positives, row max over the negatives) before two masked"
                        " log-sum-exps (a max pass and an exp-sum pass each): several passes over each"
                        " `[block, G]` block, whose exponentials the backward recomputes, against one hinge per pair for"
                        " `contrastive` (`multi_similarity._multi_similarity`, `mining.multi_similarity_pairs`).",
    "generalized_lifted_structure": "two masked log-sum-exps per anchor row (positives and negatives; a max pass"
                                    " and an exp-sum pass each), the exponentials recomputed in the backward.",
    "histogram": "two passes over about half of the pairs each (the matrix is symmetric, so each block builds only"
                 " a window of `G / 2 + block` keys and weighs each unordered pair once, `PairProblem.map_pairs`):"
                 " the histograms are a `segment_sum` (scatter-add) of two weights per pair into 2 × 101 bins, then"
                 " the gradient a gather from a slope table per pair (`histogram._histogram`); scatter and gather run"
                 " element by element on the XLA CPU backend.",
    "binomial_deviance": "a softplus (exp and log1p) and a sigmoid of every pair, with separate positive and negative"
                         " weights and normalisers (a pass over the label masks counts the pairs first; then each"
                         " unordered pair once, `PairProblem.map_pairs_linear`).",
    "ntxent": "a softmax over every row (a max pass and an exp-sum pass) with each positive pair's log-probability,"
              " the exponentials recomputed in the backward.",
    "gpw_pair": "mining masks and the weights from stop-gradient distances on every pair, before the weighted sums.",
    "proxy_anchor": "per (sample, proxy) an exp for the positive and for the negative term, and log-sum-exps over the"
                    " samples per proxy (column statistics over all blocks).",
}


# ------------------------------------------------------------------------------------------------------------ shared
def _setup(name: str, batch: int, dim: int, num_classes: int):
  """`(embeddings, labels, params or None, fn(e, y, p=None, **kw))` for the registry loss `name` with its defaults."""
  embeddings, labels = bench._inputs(batch, dim)
  loss = losses.get(name)
  params = None
  if losses.has_params(name):
    params = losses.init_params(name, jax.random.PRNGKey(0), num_classes=num_classes, embedding_dim=dim)

  def fn(e, y, p=None, **kw):
    return loss(e, y, **({} if p is None else {"params": p}), **kw)

  return embeddings, labels, params, fn


def _rss_gib() -> float:
  """Peak resident set size of this process so far (Linux reports KiB)."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def _child(args, worker: str, timeout_s: float) -> Tuple[List[Dict[str, Any]], Optional[str]]:
  """Runs `python -m benchmarks.scale <part> --worker <worker>` with this run's sizes; returns its results and an error
  (the last line of its stderr, or the timeout) when it did not end cleanly."""
  command = [sys.executable, "-m", "benchmarks.scale", args.part, "--worker", worker, "--batch", str(args.batch),
             "--dim", str(args.dim), "--num-classes", str(args.num_classes), "--losses", ",".join(args.names)]
  if args.part == "blocked":
    command += ["--block-size", str(args.block_size), "--repeats", str(args.repeats), "--unblocked-batch",
                str(args.unblocked_batch)]
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  try:
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=env, timeout=timeout_s)
    stdout, error = done.stdout, None
    if done.returncode != 0:
      error = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1][:160]
  except subprocess.TimeoutExpired as expired:
    stdout = expired.stdout.decode() if isinstance(expired.stdout, bytes) else (expired.stdout or "")
    error = f"stopped after {timeout_s:g} s"
  results = [json.loads(line[len(RESULT):]) for line in stdout.splitlines() if line.startswith(RESULT)]
  return results, error


def _error(error: Exception) -> str:
  return f"{type(error).__name__}: {str(error).splitlines()[0][:120]}"


def _save(args, lines: List[str]) -> None:
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  with open(args.out, "w", encoding="utf-8") as f:
    f.write("\n".join(lines) + "\n")


def _mib(num_bytes) -> str:
  return bench._fmt(num_bytes / 2**20) if num_bytes is not None and num_bytes >= 0 else "—"


# ----------------------------------------------------------------------------------------------------------- devices
def _compile_sharded(fn, mesh, embeddings, labels, params) -> Dict[str, Any]:
  """Compiles value-and-gradient of `fn` on the local rows inside `shard_map` over `mesh`; returns its memory."""
  row = P(AXIS)
  local = functools.partial(fn, axis_name=AXIS)
  if params is None:
    grad_fn, args = jax.value_and_grad(local), (embeddings, labels)
    in_specs, out_specs = (row, row), (P(), row)
  else:
    grad_fn, args = jax.value_and_grad(local, argnums=(0, 2)), (embeddings, labels, params)
    in_specs, out_specs = (row, row, P()), (P(), (row, P()))     # the parameters are replicated
  sharded = jax.jit(jax.shard_map(grad_fn, mesh=mesh, in_specs=in_specs, out_specs=out_specs))
  start = time.perf_counter()
  memory = sharded.lower(*args).compile().memory_analysis()
  return dict(compile_s=time.perf_counter() - start, temp=int(memory.temp_size_in_bytes),
              arguments=int(memory.argument_size_in_bytes))


def _devices_worker(args, n: int) -> None:
  jax.config.update("jax_num_cpu_devices", n)          # before anything starts the CPU backend
  if len(jax.devices()) != n:
    raise SystemExit(f"asked for {n} CPU devices, JAX has {len(jax.devices())}")
  mesh = Mesh(np.array(jax.devices()), (AXIS,))
  for name in args.names:
    out: Dict[str, Any] = dict(name=name, n=n)
    try:
      embeddings, labels, params, fn = _setup(name, args.batch, args.dim, args.num_classes)
      out.update(_compile_sharded(fn, mesh, embeddings, labels, params))
      param_bytes = sum(x.nbytes for x in jax.tree.leaves(params))
      out["local_arguments"] = (embeddings.nbytes + labels.nbytes) // n + param_bytes   # one device's inputs
      if n == 1:
        _, _, out["before"] = bench._compile_jax(fn, embeddings, labels, params)
    except Exception as error:  # a loss that fails is reported, not hidden
      out["error"] = _error(error)
    print(RESULT + json.dumps(out), flush=True)


def _devices(args) -> None:
  results: Dict[Tuple[str, int], Dict[str, Any]] = {}
  child_errors = []
  for n in args.devices:
    start = time.perf_counter()
    found, error = _child(args, str(n), args.worker_timeout)
    results.update({(r["name"], n): r for r in found})
    if error:
      child_errors.append(f"n = {n}: {error}")
    print(f"n = {n}: {len(found)} losses compiled in {time.perf_counter() - start:.0f} s {error or ''}", flush=True)
  _save(args, _devices_report(args, results, child_errors))
  print(f"wrote {args.out}")


def _devices_report(args, results, child_errors) -> List[str]:
  ns = args.devices
  g, d, c = args.batch, args.dim, args.num_classes
  ok = [r for r in results.values() if "temp" in r]
  per_device = all(r["arguments"] == r["local_arguments"] for r in ok)
  lines = [f"# Per-device loss memory under row sharding (G = {g}, D = {d})", "",
           "Written by `benchmarks/scale.py`; every number below comes from the run described here. Compile only:"
           " nothing is timed.", ""] + bench._run_facts("benchmarks.scale", backend=False) + [
      f"- Children: one process per device count n in {', '.join(map(str, ns))}, each with"
      " `jax.config.update(\"jax_num_cpu_devices\", n)` before its CPU backend starts.",
      f"- Inputs: G = {g} L2-normalized Gaussian embeddings, D = {d}, float32, {bench.SAMPLES_PER_CLASS} samples per"
      f" class; every registry loss with its defaults; the losses with learnable parameters with C = {c} classes"
      " (`losses.init_params`), differentiated w.r.t. the embeddings and the (replicated) parameters.",
      f"- Sharded: `jax.jit(jax.shard_map(jax.value_and_grad(lambda e, y: loss(e, y, axis_name={AXIS!r}))))` with"
      f" embeddings and labels split by rows (`P({AXIS!r})`: G / n local rows per device), parameters replicated;"
      " the loss gathers the keys, builds its `[G / n, G]` (or `[G / n, C]`) rows and combines global statistics"
      " with `psum`.",
      "- Before: `jax.jit(jax.value_and_grad(loss))` on the whole batch on one device (the `[G, G]` problem): what every"
      " device held before row sharding, when each computed the loss of the all-gathered batch.",
      "- Memory: `compiled.memory_analysis().temp_size_in_bytes`, in MiB. XLA's CPU memory analysis of a"
      " multi-device program describes the program of ONE device (the SPMD-partitioned module), not the sum over"
      " devices: " + (f"for every loss and n its `argument_size_in_bytes` equals one device's inputs"
                      f" ((G / n) x (D + 1) x 4 bytes of local embeddings and labels, plus the replicated"
                      f" parameters), so the temp figures are per device and are not divided."
                      if per_device else "WARNING: the argument bytes did NOT match one device's inputs for every"
                      " loss; see the raw figures before trusting the per-device reading."),
      f"- `× 1/n` is (temp at n) / (temp at n = 1) / (1 / n): 1.00 is exact 1/n scaling. A loss \"falls as 1/n\""
      f" when that factor is at most {ONE_OVER_N_SLACK:g} at every n.",
      ""]
  head = "| loss | before MiB | " + " | ".join(f"n={n} MiB" for n in ns) + " | " + " | ".join(
      f"n={n} / n=1" for n in ns[1:]) + f" | × 1/n at n={ns[-1]} | falls as 1/n |"
  lines += [head, "|---|" + "---:|" * (1 + 2 * len(ns)) + "---|"]
  not_falling = []

  def fixed_mib(name):
    base, last = results[(name, 1)]["temp"], results[(name, ns[-1])]["temp"]
    return (f"temp(n={ns[-1]}) − temp(n=1) / {ns[-1]} = {(last - base / ns[-1]) / 2**20:.2f} MiB per device does"
            " not shrink with n")
  for name in args.names:
    row = [results.get((name, n), {}) for n in ns]
    errors = [f"n={n}: {r.get('error', 'no result')}" for n, r in zip(ns, row) if "temp" not in r]
    first = row[0].get("temp")
    cells = [_mib(results.get((name, 1), {}).get("before"))] + [_mib(r.get("temp")) for r in row]
    factors = [r["temp"] / first * n for n, r in zip(ns[1:], row[1:]) if "temp" in r and first]
    cells += [bench._fmt(r["temp"] / first) if "temp" in r and first else "—" for r in row[1:]]
    cells.append(bench._fmt(row[-1]["temp"] / first * ns[-1]) if "temp" in row[-1] and first else "—")
    falls = not errors and all(f <= ONE_OVER_N_SLACK for f in factors)
    cells.append("yes" if falls else ("error: " + "; ".join(errors) if errors else "**no**"))
    if not falls and not errors:
      not_falling.append(name)
    lines.append(f"| {name} | " + " | ".join(cells) + " |")
  lines += ["", "## Summary", ""]
  fall = [n for n in args.names if n not in not_falling and all("temp" in results.get((n, k), {}) for k in ns)]
  lines.append(f"- {len(fall)} of {len(args.names)} losses fall as 1/n (within {ONE_OVER_N_SLACK:g}× of the ideal"
               " at every n).")
  if not_falling:
    lines.append("- Not falling as 1/n: " + "; ".join(
        f"`{n}`: {fixed_mib(n)}; {DEVICE_CAUSES.get(n, 'cause not yet identified')}" for n in not_falling) + ".")
  else:
    lines.append("- Every loss falls as 1/n; what stays is the O(G·D) part (gathered keys and their gradient) and,"
                 " for the losses with parameters, the replicated O(C·D) parameters and their gradient.")
  if child_errors:
    lines.append("- Child processes that failed: " + "; ".join(child_errors) + ".")
  return lines


# ----------------------------------------------------------------------------------------------------------- blocked
def _blocked_worker(args, name: str) -> None:
  out: Dict[str, Any] = dict(name=name, start_rss=_rss_gib())
  try:
    embeddings, labels, params, fn = _setup(name, args.batch, args.dim, args.num_classes)
    loss_fn = functools.partial(fn, block_size=args.block_size or None)
    run, out["compile_s"], out["temp"] = bench._compile_jax(loss_fn, embeddings, labels, params)
    run()
    out["rss"] = _rss_gib()                         # the loss's peak: nothing else has run in this process
    floor = bench._floor if params is None else bench._class_floor
    floor_run, _, out["floor_temp"] = bench._compile_jax(floor, embeddings, labels, params)
    floor_run()
    out["ms"], out["floor_ms"] = bench._interleaved_ms(run, floor_run, args.repeats, 0, 0.0, args.repeats)
    out["floor_rows"] = None if params is None else next(iter(params.values())).shape[0]
    if args.unblocked_batch:      # the same loss without blocks at a smaller batch, next to its floor there
      small = args.unblocked_batch
      embeddings, labels, params, fn = _setup(name, small, args.dim, small // bench.SAMPLES_PER_CLASS)
      run, _, _ = bench._compile_jax(fn, embeddings, labels, params)
      floor_run, _, _ = bench._compile_jax(floor, embeddings, labels, params)
      run(), floor_run()
      ms, floor_ms = bench._interleaved_ms(run, floor_run, args.repeats, 0, 0.0, args.repeats)
      out["unblocked_ratio"] = ms / floor_ms
  except Exception as error:  # a loss that fails is reported, not hidden
    out["error"] = _error(error)
  print(RESULT + json.dumps(out), flush=True)


def _blocked(args) -> None:
  if args.from_record:
    with open(_record_path(args), encoding="utf-8") as f:
      record = json.load(f)
    _save(args, _blocked_report(argparse.Namespace(**record["args"]), record))
    print(f"wrote {args.out} from {_record_path(args)}")
    return
  configs = {c.key: c for c in bench.CONFIGS}
  rows = []
  args.load_start = os.getloadavg()
  for name in args.names:
    found, error = _child(args, name, args.worker_timeout)
    row = found[0] if found else dict(name=name)
    if error and "error" not in row:
      row["error"] = error
    config = configs.get(name)
    row["pml"] = config.pml if config else None
    if row["pml"] is not None and not args.no_pml:
      row["pml_ms"], row["pml_error"] = bench._time_pml_isolated(
          name, args.batch, args.dim, args.repeats, 1, os.cpu_count(), args.pml_memory_gib, args.num_classes,
          timeout_s=args.pml_timeout)
    rows.append(row)
    print(f"  {name:30s} {row.get('ms', float('nan')):10.1f} ms  floor {row.get('floor_ms', float('nan')):8.1f} ms"
          f"  RSS {row.get('rss', float('nan')):5.2f} GiB  PML {row.get('pml_ms') or row.get('pml_error')}"
          f"  {row.get('error', '')}", flush=True)
    # After every loss, so that a stopped run keeps what it measured: the record (raw results and the run's facts),
    # and the report rendered from it.
    record = dict(args=vars(args), facts=bench._run_facts("benchmarks.scale", backend=False),
                  load_end=os.getloadavg(), rows=rows)
    with open(_record_path(args), "w", encoding="utf-8") as f:
      json.dump(record, f, indent=1)
    _save(args, _blocked_report(args, record))
  print(f"wrote {args.out} and {_record_path(args)}")


def _record_path(args) -> str:
  return os.path.splitext(args.out)[0] + ".json"


def _blocked_report(args, record) -> List[str]:
  """The Markdown report of a blocked run from its record (`args` are the run's)."""
  g, d, c, bs = args.batch, args.dim, args.num_classes, args.block_size
  small = getattr(args, "unblocked_batch", 0)
  rows = record["rows"]
  done = [r for r in rows if "ms" in r]
  lines = [f"# {'Blocked' if bs else 'Unblocked'} losses at G = {g}, D = {d}, block_size = {bs or None}", "",
           "Written by `benchmarks/scale.py` from the record of the run described here (`"
           f"{os.path.basename(_record_path(args))}` beside this file: every number comes from that run). Targets"
           f" (issue 11): peak RSS ≤ {args.rss_target_gib:g} GiB and time ≤ {args.floor_target:g}× the floor.",
           ""] + record["facts"]
  end = record["load_end"]
  starts = [r["start_rss"] for r in rows if "start_rss" in r]
  lines += [
      f"- Load: load averages (1, 5, 15 min) {', '.join(f'{x:.1f}' for x in args.load_start)} at the start,"
      f" {', '.join(f'{x:.1f}' for x in end)} at the end (2 cores shared with other work; the side-by-side floor"
      " absorbs part of the drift).",
      f"- Inputs: G = {g} L2-normalized Gaussian embeddings, D = {d}, float32, {bench.SAMPLES_PER_CLASS} samples per"
      f" class; every registry loss with its defaults and `block_size={bs or None}`" + (
          f" (query rows in blocks of {bs}, each rematerialized in the backward pass)" if bs else " (no blocks)")
      + f"; losses with learnable parameters with C = {c} classes"
      " (`losses.init_params`), differentiated w.r.t. the embeddings and the parameters.",
      "- One child process per loss: compile `jit(value_and_grad(loss))` (`compile s`), one first run, then peak"
      " RSS = `resource.getrusage(RUSAGE_SELF).ru_maxrss` of that process, read before anything else runs in it"
      " (it includes the Python / JAX runtime and the compiler's own peak: the children started at"
      + (f" {min(starts):.2f}–{max(starts):.2f} GiB" if starts else " — GiB") + " before compiling).",
      f"- Time: after one untimed run of each, {args.repeats} alternating rounds of one floor run and one loss run;"
      " `ms` and `floor ms` are the medians, `× floor` their ratio. Floor: `jit(value_and_grad(lambda E:"
      " sum(E @ E.T)))` (unblocked: it holds the `[G, G]` matrix); for the losses with parameters the class floor"
      " `value_and_grad(lambda E, W: sum(E @ W.T), (0, 1))` with W the parameter matrix (`[C, D]`, or `[C·K, D]`"
      " for K centres per class).",
      f"- PML: pytorch-metric-learning (configuration as in `benchmarks/results/losses.md`) at the same size, forward +"
      f" `backward()`, median of {args.repeats} runs after 1 warm-up run, torch.set_num_threads({os.cpu_count()}), in"
      f" `benchmarks/losses.py`'s child process with a {args.pml_memory_gib:g} GiB address-space limit, stopped"
      f" after {args.pml_timeout:g} s." + (" (Not run: `--no-pml`.)" if args.no_pml else "")
      + " `proxy_nca`'s PML counterpart puts the positive proxy in the softmax denominator (same cost).",
      (f"- Last column: the same loss WITHOUT blocks at G = {small} (C = {small // bench.SAMPLES_PER_CLASS} for the"
       " losses with parameters), timed the same way next to its own floor in the same child process, after the"
       " measurements above: a loss above 3× there misses for its own per-pair work at this D, not because of the"
       " blocks." if small else "- No unblocked comparison (`--unblocked-batch 0`)."),
      "",
      "| loss | ms | floor ms | × floor | ≤ 3× floor | peak RSS GiB | ≤ RSS target | compile s | temp MiB"
      f" | PML ms or failure | speed-up over PML | unblocked × floor at G={small} |",
      "|---|---:|---:|---:|---|---:|---|---:|---:|---|---:|---:|"]
  for floor_rows in sorted({r.get("floor_rows") for r in done}, key=lambda x: -1 if x is None else x):
    same = [r for r in done if r.get("floor_rows") == floor_rows]
    label = "*floor* `sum(E @ E.T)`" if floor_rows is None else f"*class floor* `sum(E @ W.T)`, W [{floor_rows}, D]"
    lines.append(f"| {label} | {bench._fmt(statistics.median(r['floor_ms'] for r in same), 1)} | | 1.00 | | | | |"
                 f" {_mib(same[0]['floor_temp'])} | | | |")
  for r in rows:
    if "ms" not in r:
      lines.append(f"| {r['name']} | error: {r.get('error', 'no result')} | | | **MISS** | | **MISS** | | | | | |")
      continue
    ratio = r["ms"] / r["floor_ms"]
    pml = bench._fmt(r["pml_ms"], 1) if r.get("pml_ms") else (r.get("pml_error") or ("no PML equivalent"
                                                                                       if r["pml"] is None else "—"))
    lines.append(f"| {r['name']} | {bench._fmt(r['ms'], 1)} | {bench._fmt(r['floor_ms'], 1)} | {bench._fmt(ratio)} |"
                 f" {_pass(ratio <= args.floor_target)} | {bench._fmt(r['rss'])} |"
                 f" {_pass(r['rss'] <= args.rss_target_gib)} | {bench._fmt(r['compile_s'])} | {_mib(r['temp'])} |"
                 f" {pml} | {bench._fmt(r['pml_ms'] / r['ms']) if r.get('pml_ms') else '—'} |"
                 f" {bench._fmt(r.get('unblocked_ratio'))} |")
  lines += ["", "## Summary", ""]
  slow = [r for r in done if r["ms"] > args.floor_target * r["floor_ms"]]
  heavy = [r for r in done if r["rss"] > args.rss_target_gib]
  failed = [r for r in rows if "ms" not in r]
  lines.append(f"- Time ≤ {args.floor_target:g}× the floor: {len(done) - len(slow)} of {len(rows)} losses." + (
      " Missed by " + ", ".join(f"`{r['name']}` ({r['ms'] / r['floor_ms']:.2f}×)" for r in slow) + "." if slow else ""))
  if slow and small:
    already = [r for r in slow if r.get("unblocked_ratio", 0) > args.floor_target]
    lines.append(f"- Of these, {len(already)} miss without blocks at G = {small} too" + (
        ": " + ", ".join(f"`{r['name']}` ({r['unblocked_ratio']:.2f}×)" for r in already) if already else "")
        + "; the blocks push " + (", ".join(f"`{r['name']}` ({r['unblocked_ratio']:.2f}× → "
                                            f"{r['ms'] / r['floor_ms']:.2f}×)" for r in slow if r not in already)
                                  or "no other loss") + " over the target.")
  if slow:
    lines.append(f"- Why: {TIME_CAUSE.format(dim=d)}")
  lines.append(f"- Peak RSS ≤ {args.rss_target_gib:g} GiB: {len(done) - len(heavy)} of {len(rows)} losses" + (
      "; missed by " + ", ".join(f"`{r['name']}` ({r['rss']:.2f} GiB)" for r in heavy) + "." if heavy else
      f" (largest: `{max(done, key=lambda r: r['rss'])['name']}`, {max(r['rss'] for r in done):.2f} GiB)."
      if done else "."))
  if failed:
    lines.append("- Did not run: " + ", ".join(f"`{r['name']}` ({r.get('error')})" for r in failed) + ".")
  for name in dict.fromkeys(r["name"] for r in slow + heavy + failed):
    if name in BLOCKED_CAUSES:
      lines.append(f"- `{name}`: {BLOCKED_CAUSES[name]}")
  with_pml = [r for r in rows if r.get("pml") is not None and not args.no_pml]
  ran = [r for r in with_pml if r.get("pml_ms")]
  if with_pml:
    lines.append(f"- PML: {len(ran)} of {len(with_pml)} losses with a counterpart ran at this size" + (
        f" (speed-up of metric_jax over PML {min(r['pml_ms'] / r['ms'] for r in ran if 'ms' in r):.2f}–"
        f"{max(r['pml_ms'] / r['ms'] for r in ran if 'ms' in r):.2f}×)" if any("ms" in r for r in ran) else "")
        + "; the others: " + ("; ".join(f"{error}: " + ", ".join(f"`{name}`" for name in names)
                                        for error, names in _group_by_error(with_pml).items()) or "none") + ".")
    if any("refused" in (r.get("pml_error") or "") for r in with_pml):
      lines.append("- A refused allocation is the one that crossed the address-space limit, not the total: a small"
                   " one (0 MiB: under 0.5 MiB) means that earlier tensors had already used up the limit.")
  return lines


def _group_by_error(rows) -> Dict[str, List[str]]:
  """The losses whose PML run failed, grouped by the failure."""
  groups: Dict[str, List[str]] = {}
  for r in rows:
    if not r.get("pml_ms"):
      groups.setdefault(r.get("pml_error") or "no result", []).append(r["name"])
  return groups


def _pass(ok: bool) -> str:
  return "PASS" if ok else "**MISS**"


# -------------------------------------------------------------------------------------------------------------- main
def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parts = parser.add_subparsers(dest="part", required=True)
  devices = parts.add_parser("devices", help="per-device temporary memory of the sharded losses on n CPU devices")
  blocked = parts.add_parser("blocked", help="time and peak RSS of the blocked losses next to the floor and PML")
  for part, batch, out in ((devices, 4096, "benchmarks/results/scale.md"),
                           (blocked, 16384, "benchmarks/results/blocked.md")):
    part.add_argument("--batch", type=int, default=batch, help="global batch G")
    part.add_argument("--dim", type=int, default=128, help="embedding dimension D")
    part.add_argument("--num-classes", type=int, default=None,
                      help="classes C of the losses with learnable parameters (default: G / 4, the batch's classes)")
    part.add_argument("--losses", default="all", help="comma-separated registry names or 'all'")
    part.add_argument("--out", default=out, help="Markdown file to write")
    part.add_argument("--worker-timeout", type=float, default=900.0, help="seconds allowed to each child process")
    part.add_argument("--worker", help=argparse.SUPPRESS)
  devices.add_argument("--devices", default="1,2,4,8", help="comma-separated device counts n (the first is the base)")
  blocked.add_argument("--block-size", type=int, default=1024, help="query rows per block (0: unblocked, None)")
  blocked.add_argument("--repeats", type=int, default=3, help="timed runs of the loss and of the floor (median)")
  blocked.add_argument("--unblocked-batch", type=int, default=4096,
                       help="also time each loss without blocks at this smaller batch, next to its floor (0: skip)")
  blocked.add_argument("--no-pml", action="store_true", help="skip the pytorch-metric-learning reference")
  blocked.add_argument("--pml-memory-gib", type=float, default=8.0, help="address-space limit of the PML child")
  blocked.add_argument("--pml-timeout", type=float, default=120.0, help="seconds after which a PML child is stopped")
  blocked.add_argument("--rss-target-gib", type=float, default=4.0, help="peak RSS target per loss")
  blocked.add_argument("--floor-target", type=float, default=3.0, help="time target, as a multiple of the floor")
  blocked.add_argument("--from-record", action="store_true",
                       help="only render --out again from the run's record (<out>.json), e.g. after adding a cause")
  args = parser.parse_args(argv)

  args.names = losses.names() if args.losses == "all" else args.losses.split(",")
  unknown = [n for n in args.names if n not in losses.names()]
  if unknown:
    parser.error(f"unknown --losses {unknown}; registered: {', '.join(losses.names())}")
  classes_in_batch = args.batch // bench.SAMPLES_PER_CLASS
  args.num_classes = args.num_classes or classes_in_batch
  if args.num_classes < classes_in_batch:
    parser.error(f"--num-classes must cover the batch's {classes_in_batch} classes (labels are 0 ... G / 4 - 1)")
  if args.part == "devices":
    args.devices = [int(n) for n in args.devices.split(",")]
    if any(args.batch % n for n in args.devices):
      parser.error(f"--batch {args.batch} must split evenly over --devices {args.devices}")
  if args.worker:
    worker = _devices_worker if args.part == "devices" else _blocked_worker
    worker(args, int(args.worker) if args.part == "devices" else args.worker)
  else:
    (_devices if args.part == "devices" else _blocked)(args)


if __name__ == "__main__":
  main()

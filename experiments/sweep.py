"""The sweep runner: one command for any comparison of configs.

  python -m experiments.sweep --sweep experiments/sweeps/<name>.py --workdir runs/<name> [--results_dir experiments/results]
      [--only variant1,variant2] [--seeds 0,1] [--tables_only]

A sweep file is code: its `get_sweep()` returns a `Sweep` naming the base config file, the variants (a name and dotted
config overrides each), the seeds, optional groups of variants among which the validation set picks one (a small
hyperparameter grid), the claims to check, and optional extra tables / plots (`extra(results, out_dir)`).

Runs execute in order with a progress line (run i of n, elapsed, estimate left). Each run lives in
`<workdir>/<variant>/seed_<s>` and resumes from its checkpoints. A finished run leaves its small record in the repository
at `<results_dir>/<sweep>/<variant>/seed_<s>.json`; a run whose record is there (or, with an identical config, in any
other sweep's records) is never redone, so a sweep continues on any machine and re-running a finished sweep only
rewrites the tables. The runner writes `<results_dir>/<sweep>.md` (command, machine, versions, protocol, the table of
mean ± std over seeds at the selected step, the claims), `<sweep>.json` and plots `<sweep>_*.png`.
"""

from __future__ import annotations

import dataclasses
import glob
import importlib.util
import json
import os
import shlex
import sys
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from experiments import config_tools, report


@dataclasses.dataclass(frozen=True)
class Variant:
  """One configuration of a sweep: `name` (a directory name) and dotted config overrides.

  `group`: variants of one group are a hyperparameter grid; the one with the best mean validation score (MAP@R, or the
  runs' `config.selection_metric`) represents the group in the main table (never chosen on test). `label`: the name
  shown in tables and plots (default `name`)."""
  name: str
  overrides: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  group: Optional[str] = None
  label: Optional[str] = None


@dataclasses.dataclass(frozen=True)
class Claim:
  """A paper's claim checked on the sweep's results: `better` beats `worse` on the test `metric` (rows are variant
  or group names). Verdict: held (better by more than one std of the difference), did not hold (worse by more than
  that), inconclusive otherwise."""
  paper: str
  text: str
  better: str
  worse: str
  metric: str = "map@r"


@dataclasses.dataclass(frozen=True)
class Sweep:
  name: str
  base: str                                   # config file, e.g. experiments/configs/omniglot.py
  variants: Sequence[Variant]
  seeds: Sequence[int] = (0, 1, 2)
  title: str = ""
  protocol: str = ""                          # one paragraph for the results file
  base_overrides: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  claims: Sequence[Claim] = ()
  metrics: Sequence[str] = ("recall@1", "recall@2", "recall@4", "recall@8", "map@r", "r_precision", "nmi")
  extra: Optional[Callable[[dict, str], List[str]]] = None   # extra(results, results_dir) -> Markdown lines
  # Seeds on which every value of a grid (a `group`) is run and compared on validation; the chosen value alone then runs
  # on the remaining seeds. None: every grid value runs on every seed and the choice uses all of them.
  grid_seeds: Optional[Sequence[int]] = None

  def expected_jobs(self, seeds: Sequence[int], chosen: Mapping[str, str]) -> List[Tuple[Variant, int]]:
    """The (variant, seed) pairs a complete sweep runs: every seed for ungrouped variants and, with `grid_seeds`, the
    grid seeds for every grid value plus the other seeds for the value `chosen[group]` (once known)."""
    jobs = []
    for v in self.variants:
      for s in seeds:
        if not v.group or self.grid_seeds is None or s in self.grid_seeds or chosen.get(v.group) == v.name:
          jobs.append((v, s))
    return jobs


def load_sweep(path: str) -> Sweep:
  spec = importlib.util.spec_from_file_location(f"sweep_{os.path.basename(path)[:-3]}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  sweep = module.get_sweep()
  names = [v.name for v in sweep.variants]
  if len(set(names)) != len(names):
    raise ValueError(f"sweep {sweep.name}: variant names repeat: {sorted(n for n in names if names.count(n) > 1)}.")
  return sweep


def load_base_config(path: str):
  spec = importlib.util.spec_from_file_location("sweep_base_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def variant_config(sweep: Sweep, variant: Variant, seed: int):
  c = config_tools.apply_overrides(load_base_config(sweep.base), dict(sweep.base_overrides))
  c = config_tools.apply_overrides(c, dict(variant.overrides))
  with c.unlocked():
    c.name = f"{sweep.name}/{variant.name}"
    c.seed = int(seed)
    c.seeds = (int(seed),)
    c.progress = False
  from metric_jax.train import from_config
  from_config.loss_hparams(c)  # a misspelt hyperparameter fails before anything runs
  return c


def record_path(results_dir: str, sweep: str, variant: str, seed: int) -> str:
  return os.path.join(results_dir, sweep, variant, f"seed_{seed}.json")


def diverged_path(results_dir: str, sweep: str, variant: str, seed: int) -> str:
  """Where a run whose loss became non-finite is recorded (a grid value that diverges is a result, not a crash)."""
  return os.path.join(results_dir, sweep, variant, f"diverged_seed_{seed}.json")


def _diverged(results_dir: str, sweep: str, variant: str, seed: int, config_hash: Optional[str] = None):
  """The divergence record of (variant, seed), if any (and, given `config_hash`, only one of that config)."""
  path = diverged_path(results_dir, sweep, variant, seed)
  if not os.path.exists(path):
    return None
  with open(path) as f:
    record = json.load(f)
  return record if config_hash is None or record.get("config_hash") == config_hash else None


def _index_records(results_dir: str) -> Dict[str, str]:
  """config hash -> path of a finished record, over every sweep's records (identical configs may be reused)."""
  index = {}
  for path in sorted(glob.glob(os.path.join(results_dir, "*", "*", "seed_*.json"))):
    try:
      with open(path) as f:
        r = json.load(f)
    except (OSError, json.JSONDecodeError):
      continue
    h = config_tools.record_hash(r) if r.get("finished") else None
    if h:
      index.setdefault(h, path)
  return index


def _save_record(path: str, record: dict) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(record, f, separators=(",", ":"))
  os.replace(tmp, path)


def run_sweep(sweep: Sweep, workdir: str, results_dir: str, *, command: str, only: Optional[Sequence[str]] = None,
              seeds: Optional[Sequence[int]] = None, tables_only: bool = False, log=print) -> dict:
  """Runs every (variant, seed) not finished yet, then writes the tables; returns the results dict."""
  seeds = tuple(seeds) if seeds else tuple(sweep.seeds)
  variants = [v for v in sweep.variants if not only or v.name in only]
  if only:
    unknown = sorted(set(only) - {v.name for v in sweep.variants})
    if unknown:
      raise ValueError(f"--only names {unknown}, not variants of {sweep.name}: {[v.name for v in sweep.variants]}.")
  names = {v.name for v in variants}
  index = _index_records(results_dir)
  t0 = time.perf_counter()
  durations = []
  # With `grid_seeds`, the grid values run on those seeds first; the value validation picks then runs on the others.
  jobs = [(v, s) for v, s in sweep.expected_jobs(seeds, {}) if v.name in names]
  _run_jobs(sweep, jobs, workdir, results_dir, index, durations, t0, command=command, tables_only=tables_only, log=log)
  if sweep.grid_seeds is not None:
    chosen = collect_results(sweep, results_dir, seeds)["rows"]
    more = [(v, s) for v, s in sweep.expected_jobs(seeds, chosen) if v.name in names and (v, s) not in jobs]
    _run_jobs(sweep, more, workdir, results_dir, index, durations, t0, command=command, tables_only=tables_only,
              log=log)
  results = collect_results(sweep, results_dir, seeds)
  write_tables(sweep, results, results_dir, command)
  return results


def _run_jobs(sweep: Sweep, jobs, workdir: str, results_dir: str, index: dict, durations: list, t0: float, *,
              command: str, tables_only: bool, log) -> None:
  from experiments import run
  from metric_jax.train.loop import NonFiniteError
  for i, (variant, seed) in enumerate(jobs, 1):
    path = record_path(results_dir, sweep.name, variant.name, seed)
    c = variant_config(sweep, variant, seed)
    plain = config_tools.to_plain(c)
    h = config_tools.config_hash(plain)
    if _diverged(results_dir, sweep.name, variant.name, seed, h) is not None:
      continue  # deterministic: the same config diverges again
    if os.path.exists(path):
      with open(path) as f:
        existing = json.load(f)
      if config_tools.record_hash(existing) == h and existing.get("finished"):
        continue
      log(f"[{i}/{len(jobs)}] {variant.name} seed {seed}: the record at {path} is of another config; redoing it.")
    if h in index and index[h] != path:
      with open(index[h]) as f:
        reused = json.load(f)
      reused = dict(reused, name=c.name, reused_from=os.path.relpath(index[h], results_dir))
      _save_record(path, reused)
      log(f"[{i}/{len(jobs)}] {variant.name} seed {seed}: identical config finished in {index[h]}; reused.")
      continue
    if tables_only:
      continue
    elapsed = time.perf_counter() - t0
    left = len([1 for v, s in jobs[i - 1:]
                if not os.path.exists(record_path(results_dir, sweep.name, v.name, s))])
    eta = f"{np.mean(durations) * left / 60:.0f} min left" if durations else "estimate after the first run"
    log(f"[{i}/{len(jobs)}] {sweep.name}: {variant.name} seed {seed} (elapsed {elapsed / 60:.1f} min, {eta})")
    t_run = time.perf_counter()
    try:
      record = run.run_one(c, os.path.join(workdir, variant.name, f"seed_{seed}"), command=command, log=log,
                           write_artifacts=False)
    except NonFiniteError as e:
      _save_record(diverged_path(results_dir, sweep.name, variant.name, seed),
                   {"name": c.name, "seed": int(seed), "config": plain, "config_hash": h, "command": command,
                    "finished": False, "diverged": str(e), "machine": run.machine(), "versions": run.versions()})
      log(f"[{i}/{len(jobs)}] {variant.name} seed {seed}: diverged ({e}); recorded, the sweep goes on.")
      continue
    durations.append(time.perf_counter() - t_run)
    _save_record(path, record)
    index[h] = path


def collect_results(sweep: Sweep, results_dir: str, seeds: Sequence[int]) -> dict:
  """`{"name": sweep name, "variants": {name: {"records": [...], "summary": ...}}, "rows": {row: variant name},
  "missing": [...]}`."""
  out = {"name": sweep.name, "variants": {}, "missing": [], "diverged": []}
  selection_seeds, metrics = {}, set()
  for v in sweep.variants:
    records, found = [], []
    for s in seeds:
      path = record_path(results_dir, sweep.name, v.name, s)
      if os.path.exists(path):
        with open(path) as f:
          records.append(json.load(f))
        found.append(s)
      elif (d := _diverged(results_dir, sweep.name, v.name, s)) is not None:
        out["diverged"].append({"variant": v.name, "label": v.label or v.name, "seed": s, "message": d["diverged"]})
    if records:
      out["variants"][v.name] = {"records": records, "summary": report.summarize(records),
                                 "label": v.label or v.name, "group": v.group, "overrides": dict(v.overrides)}
      selection_seeds[v.name] = found
      metrics.update(r["config"].get("selection_metric", "map@r") for r in records)
  if len(metrics) > 1:
    raise ValueError(f"sweep {sweep.name}: the records select steps by different validation metrics "
                     f"{sorted(metrics)}; one sweep compares its variants on one.")
  out["selection_metric"] = metric = metrics.pop() if metrics else "map@r"
  rows, chosen = {}, {}
  for v in sweep.variants:
    if v.name not in out["variants"]:
      continue
    key = v.group or v.name
    val = out["variants"][v.name]["summary"]["selected"].get("validation", {}).get(metric)
    values = val["values"] if val else []
    if v.group and sweep.grid_seeds is not None:   # compare the grid values on the seeds every one of them ran
      values = [x for x, s in zip(values, selection_seeds[v.name]) if s in sweep.grid_seeds]
    score = float(np.mean(values)) if values else -np.inf
    if key not in rows or score > chosen[key]:
      rows[key], chosen[key] = v.name, score
  out["rows"] = rows
  out["missing"] = [f"{v.name}/seed_{s}" for v, s in sweep.expected_jobs(seeds, rows)
                    if not os.path.exists(record_path(results_dir, sweep.name, v.name, s))
                    and _diverged(results_dir, sweep.name, v.name, s) is None]
  out["expected"] = len(sweep.expected_jobs(seeds, rows))
  return out


def _row_stat(results: dict, row: str, metric: str, split: str = "test") -> Optional[dict]:
  name = results["rows"].get(row)
  if name is None:
    return None
  return results["variants"][name]["summary"]["selected"].get(split, {}).get(metric)


def claim_verdict(results: dict, claim: Claim) -> dict:
  """Mean difference better - worse with its std (seeds paired by index); verdict by one std."""
  a = _row_stat(results, claim.better, claim.metric)
  b = _row_stat(results, claim.worse, claim.metric)
  if a is None or b is None:
    return {"verdict": "not run yet", "better": a, "worse": b}
  n = min(a["n"], b["n"])
  diff = np.asarray(a["values"][:n]) - np.asarray(b["values"][:n])
  mean = float(diff.mean())
  std = float(diff.std(ddof=1)) if n > 1 else float("nan")
  if n < 2:
    verdict = "inconclusive (one seed)"
  elif mean > std:
    verdict = "held"
  elif mean < -std:
    verdict = "did not hold"
  else:
    verdict = "inconclusive"
  return {"verdict": verdict, "better": a, "worse": b, "difference": mean, "difference_std": std, "seeds": n}


def _label(results, row):
  name = results["rows"][row]
  v = results["variants"][name]
  return v["label"] + (f" [{name}]" if v["group"] else "")


def write_tables(sweep: Sweep, results: dict, results_dir: str, command: str) -> None:
  from experiments import run
  os.makedirs(results_dir, exist_ok=True)
  any_record = next((v["records"][0] for v in results["variants"].values()), None)
  lines = [f"# {sweep.title or sweep.name}", "", "Written by the sweep runner from the run records in "
           f"`{os.path.join(results_dir, sweep.name)}/`. Command:", "", "```bash", command, "```", ""]
  if any_record is not None:
    lines += [f"Machine: {any_record['machine']}; versions: "
              + ", ".join(f"{k} {v}" for k, v in any_record["versions"].items()) + ".", ""]
  if sweep.protocol:
    lines += ["Protocol: " + sweep.protocol, ""]
  done = sum(len(v["records"]) for v in results["variants"].values())
  diverged = results.get("diverged", [])
  lines += [f"Runs finished: {done} of {results.get('expected', len(sweep.variants) * len(sweep.seeds))} (seeds "
            f"{', '.join(map(str, sweep.seeds))})"
            + (f"; diverged: {len(diverged)} (listed below)" if diverged else "")
            + (f"; missing: {', '.join(results['missing'])}." if results["missing"] else "."), ""]
  metrics = list(sweep.metrics)
  first_rows = list(results["rows"])
  has_val = any(v["summary"]["selected"].get("validation") for v in results["variants"].values())
  sel = results.get("selection_metric", "map@r")
  sel_name = "MAP@R" if sel == "map@r" else sel
  head = ["variant"] + [f"test {m}" for m in metrics] + ([f"val {sel}"] if has_val else []) + ["steps"]
  grid_rule = (f"the grid value with the best validation {sel_name} on seed(s) "
               f"{', '.join(map(str, sweep.grid_seeds))}, then run on every seed" if sweep.grid_seeds is not None else
               f"the grid value with the best validation {sel_name}")
  lines += [f"Test metrics at the selected step, mean ± std over seeds (groups: {grid_rule}):", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for row in first_rows:
    name = results["rows"][row]
    s = results["variants"][name]["summary"]
    cells = [_label(results, row)] + [report.fmt(s["selected"]["test"].get(m)) for m in metrics]
    if has_val:
      cells.append(report.fmt(s["selected"].get("validation", {}).get(sel)))
    cells.append(",".join(map(str, s["selected_steps"])))
    lines.append("| " + " | ".join(cells) + " |")
  lines.append("")
  diverged_seeds = {}
  for d in diverged:
    diverged_seeds.setdefault(d["variant"], []).append(str(d["seed"]))
  grouped = [v for v in sweep.variants if v.group and (v.name in results["variants"] or v.name in diverged_seeds)]
  if grouped:
    shown = ["map@r", "recall@1"] if sel == "map@r" else metrics[:2]
    lines += [f"Every grid value (validation {sel_name} decides; test shown for completeness):", "",
              f"| variant | group | val {sel} | " + " | ".join(f"test {m}" for m in shown) + " |",
              "|---|---|---|" + "---|" * len(shown)]
    for v in grouped:
      if v.name not in results["variants"]:
        lines.append(f"| {v.name} | {v.group} | diverged (seed {', '.join(diverged_seeds[v.name])}) | "
                     + " | ".join("–" for _ in shown) + " |")
        continue
      s = results["variants"][v.name]["summary"]["selected"]
      mark = " (chosen)" if results["rows"].get(v.group) == v.name else ""
      lines.append(f"| {v.name}{mark} | {v.group} | {report.fmt(s.get('validation', {}).get(sel))} | "
                   + " | ".join(report.fmt(s["test"].get(m)) for m in shown) + " |")
    lines.append("")
  if any(v["summary"]["untrained"].get("test") for v in results["variants"].values()):
    v0 = next(iter(results["variants"].values()))["summary"]["untrained"]["test"]
    lines += ["Untrained network (first variant's seeds): "
              + ", ".join(f"test {m} {report.fmt(v0.get(m))}" for m in metrics if m in v0) + ".", ""]
  if diverged:
    lines += ["Diverged runs (the loss or its gradient became non-finite; recorded in `diverged_seed_<s>.json`, not "
              "redone, never chosen):", ""]
    lines += [f"- {d['label']} seed {d['seed']}: {d['message'].split('; training stopped')[0]}" for d in diverged]
    lines.append("")
  verdicts = [(c, claim_verdict(results, c)) for c in sweep.claims]
  if verdicts:
    lines += ["Claims (verdict: held when the mean paired difference exceeds one std of it, did not hold when it is "
              "below minus one std, else inconclusive):", "", "| paper | claim | metric | ours: better | ours: worse | "
              "difference | verdict |", "|---|---|---|---|---|---|---|"]
    for c, v in verdicts:
      diff = (f"{v['difference']:+.4f} ± {v['difference_std']:.4f}" if "difference" in v else "–")
      lines.append(f"| {c.paper} | {c.text} | test {c.metric} | {report.fmt(v['better'])} | {report.fmt(v['worse'])} "
                   f"| {diff} | {v['verdict']} |")
    lines.append("")
  plots = plot_sweep(sweep, results, results_dir)
  lines += ["Plots: " + ", ".join(f"`{os.path.basename(p)}`" for p in plots) + ".", ""]
  if sweep.extra is not None and results["variants"]:
    lines += list(sweep.extra(results, results_dir) or [])
  lines += ["Variants (overrides of the base config `" + sweep.base + "`" +
            (f" with {json.dumps(dict(sweep.base_overrides))}" if sweep.base_overrides else "") + "):", ""]
  lines += [f"- `{v.name}`: `{json.dumps(dict(v.overrides))}`" for v in sweep.variants]
  lines.append("")
  with open(os.path.join(results_dir, f"{sweep.name}.md"), "w") as f:
    f.write("\n".join(lines))
  summary = {"name": sweep.name, "command": command, "base": sweep.base, "seeds": list(sweep.seeds),
             "rows": results["rows"], "missing": results["missing"], "diverged": diverged,
             "variants": {k: {kk: vv for kk, vv in v.items() if kk != "records"} for k, v in
                          results["variants"].items()},
             "claims": [{"paper": c.paper, "text": c.text, "better": c.better, "worse": c.worse, "metric": c.metric,
                         **{k: val for k, val in v.items()}} for c, v in verdicts]}
  with open(os.path.join(results_dir, f"{sweep.name}.json"), "w") as f:
    json.dump(summary, f, indent=1)


def plot_sweep(sweep: Sweep, results: dict, results_dir: str) -> List[str]:
  """`<sweep>_bars.png` (test MAP@R and Recall@1 per row, or the sweep's first two metrics when the runs do not
  measure MAP@R; error bars = std over seeds) and `<sweep>_curves.png` (the validation selection metric over steps,
  mean over seeds, per row)."""
  if not results["variants"]:
    return []
  plt = report._plt()
  rows = list(results["rows"])
  paths = []
  fig, axes = plt.subplots(1, 2, figsize=(max(8, 0.5 * len(rows) + 4), 4.2))
  measured = next(iter(results["variants"].values()))["summary"]["selected"]["test"]
  bar_metrics = ("map@r", "recall@1") if "map@r" in measured else tuple(sweep.metrics[:2])
  for ax, metric in zip(axes, bar_metrics):
    means = [(_row_stat(results, r, metric) or {"mean": np.nan})["mean"] for r in rows]
    stds = [(_row_stat(results, r, metric) or {}).get("std") or 0.0 for r in rows]
    ax.bar(range(len(rows)), means, yerr=stds, capsize=2, color="tab:blue", alpha=0.8)
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels([results["variants"][results["rows"][r]]["label"] for r in rows], rotation=60, ha="right",
                       fontsize=7)
    ax.set_ylabel(f"test {metric}")
    ax.grid(axis="y", alpha=0.3)
    lo = np.nanmin(means) if np.isfinite(np.nanmin(means)) else 0
    ax.set_ylim(max(0.0, lo - 0.1), None)
  fig.suptitle(f"{sweep.name}: test metrics at the selected step (mean ± std over seeds)", fontsize=9)
  fig.tight_layout()
  path = os.path.join(results_dir, f"{sweep.name}_bars.png")
  fig.savefig(path, dpi=100)
  plt.close(fig)
  paths.append(path)

  def eval_curve(recs):
    key = "validation" if "validation" in recs[0]["untrained"] else "test"
    measured = recs[0]["untrained"][key]
    metric = next((m for m in (results.get("selection_metric"), "map@r") if m in measured), next(iter(measured)))
    steps = [0] + [e["step"] for e in recs[0]["evals"]]
    vals = np.asarray([[rec["untrained"][key][metric]] + [e[key][metric] for e in rec["evals"]] for rec in recs
                       if len(rec["evals"]) == len(recs[0]["evals"])])
    return steps, vals.mean(0), f"{key} {metric} (mean over seeds)"

  def loss_curve(recs):
    curves = [np.asarray(rec["train_curve"], np.float64).reshape(-1, 2) for rec in recs]
    n = min(len(cv) for cv in curves)
    mean = np.mean([cv[:n, 1] for cv in curves], axis=0)
    return curves[0][:n, 0], mean, "training loss (interval mean, mean over seeds)"

  for suffix, curve, title, log_scale in (("curves", eval_curve, "evaluation curves", False),
                                          ("loss", loss_curve, "training loss", True)):
    fig, ax = plt.subplots(figsize=(7, 4.2))
    cmap = plt.get_cmap("tab20")
    ylabel = ""
    for i, r in enumerate(rows):
      v = results["variants"][results["rows"][r]]
      x, y, ylabel = curve(v["records"])
      ax.plot(x, y, color=cmap(i % 20), lw=1.1, label=v["label"])
    ax.set(xlabel="step", ylabel=ylabel, title=f"{sweep.name}: {title}")
    if log_scale:
      ax.set_yscale("symlog", linthresh=1e-2)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    path = os.path.join(results_dir, f"{sweep.name}_{suffix}.png")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    paths.append(path)
  return paths


def main(argv=None):
  import argparse
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--sweep", required=True, help="sweep file, e.g. experiments/sweeps/losses_omniglot.py")
  parser.add_argument("--workdir", default=None, help="run directories (default runs/<sweep name>)")
  parser.add_argument("--results_dir", default="experiments/results", help="records, tables and plots")
  parser.add_argument("--only", default="", help="comma-separated variant names to run (tables cover all)")
  parser.add_argument("--seeds", default="", help="comma-separated seeds instead of the sweep's")
  parser.add_argument("--tables_only", action="store_true", help="run nothing; rebuild tables from the records")
  parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                      help="extra override of every variant (e.g. num_steps=20 for a smoke test; the records then "
                           "hold that config, so use another --results_dir)")
  args = parser.parse_args(argv)
  sweep = load_sweep(args.sweep)
  if args.set:
    extra_overrides = dict(sweep.base_overrides)
    for item in args.set:
      key, _, value = item.partition("=")
      extra_overrides[key] = config_tools.parse_value(value)
    sweep = dataclasses.replace(sweep, base_overrides=extra_overrides)
  from absl import logging as absl_logging
  absl_logging.set_verbosity(absl_logging.WARNING)
  command = "python -m experiments.sweep " + " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
  only = [s for s in args.only.split(",") if s]
  seeds = [int(s) for s in args.seeds.split(",") if s]
  results = run_sweep(sweep, args.workdir or os.path.join("runs", sweep.name), args.results_dir, command=command,
                      only=only, seeds=seeds or None, tables_only=args.tables_only,
                      log=lambda m: print(m, flush=True))
  print(f"wrote {os.path.join(args.results_dir, sweep.name + '.md')} "
        f"({sum(len(v['records']) for v in results['variants'].values())} runs; {len(results['missing'])} missing)")


if __name__ == "__main__":
  main()

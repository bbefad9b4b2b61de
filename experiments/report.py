"""Tables and plots built from run records (`experiments.run`): per run, over seeds, and the publishing into
`experiments/results/` that never overwrites another experiment's files."""

from __future__ import annotations

import json
import os
from typing import Dict, List, Optional, Sequence

import numpy as np

from experiments import config_tools

HEADLINE = ("recall@1", "recall@2", "recall@4", "recall@8", "map@r", "r_precision", "nmi", "softmax_accuracy",
            "knn_accuracy", "svm_accuracy", "verification@1", "verification@71")


def stat(values: Sequence[float]) -> dict:
  v = np.asarray(values, np.float64)
  return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else None, "n": int(len(v)),
          "values": v.tolist()}


def fmt(s: Optional[dict], digits: int = 4) -> str:
  """`mean ± std` over seeds; the value alone for one seed (never a "± 0" that hides n = 1)."""
  if s is None:
    return "–"
  if s["std"] is None:
    return f"{s['mean']:.{digits}f}"
  return f"{s['mean']:.{digits}f} ± {s['std']:.{digits}f}"


def metric_keys(metrics: dict) -> List[str]:
  return [k for k in HEADLINE if k in metrics] + sorted(k for k in metrics if k not in HEADLINE)


def seed_stats(records: List[dict], where: str, split: str) -> Dict[str, dict]:
  """Mean ± std over records of `record[where][split][metric]` (`where` = selected | final | untrained)."""
  first = records[0][where].get(split)
  if first is None:
    return {}
  return {k: stat([r[where][split][k] for r in records]) for k in metric_keys(first)}


def summarize(records: List[dict]) -> dict:
  """Over-seed statistics of a list of records of one config."""
  out = {"seeds": [r["seed"] for r in records], "selection": records[0]["selection"]["rule"],
         "selected_steps": [r["selection"]["step"] for r in records], "config": records[0]["config"],
         "config_hash": records[0]["config_hash"], "data": records[0]["data"],
         "wall_seconds": [round(r["timing"]["wall_seconds"], 1) for r in records]}
  for where in ("selected", "final", "untrained"):
    out[where] = {split: seed_stats(records, where, split) for split in ("test", "validation", "train_classes")
                  if records[0][where].get(split) is not None}
  return out


# -- plots -------------------------------------------------------------------------------------------------------------

def _plt():
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  return plt


def plot_curves(records: List[dict], path: str, title: str, labels: Optional[List[str]] = None) -> None:
  """Training loss (interval means) and the evaluation curves (the validation selection metric, test Recall@1 / MAP@R /
  accuracy)."""
  plt = _plt()
  fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
  colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
  for i, r in enumerate(records):
    color = colors[i % len(colors)]
    label = labels[i] if labels else f"seed {r['seed']}"
    curve = np.asarray(r["train_curve"], np.float64).reshape(-1, 2)
    axes[0].plot(curve[:, 0], curve[:, 1], color=color, label=label, lw=1.2)
    steps = [0] + [e["step"] for e in r["evals"]]
    series = []
    if "validation" in r["untrained"]:
      series.append(("validation", r["config"].get("selection_metric", "map@r"), "-"))
    test_key = next(k for k in ("map@r", "softmax_accuracy", "knn_accuracy", "recall@1") if k in r["untrained"]["test"])
    series.append(("test", test_key, "--"))
    for split, key, style in series:
      vals = [r["untrained"][split][key]] + [e[split][key] for e in r["evals"]]
      axes[1].plot(steps, vals, style, color=color, lw=1.2, label=f"{label}: {split} {key}")
    axes[1].axvline(r["selection"]["step"], color=color, lw=0.6, alpha=0.5)
  axes[0].set(xlabel="step", ylabel="training loss (interval mean)", title=f"{title}: training loss")
  axes[1].set(xlabel="step", ylabel="metric", title="evaluation (vertical line: selected step)")
  for ax in axes:
    ax.legend(fontsize=6)
    ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def plot_embedding(embeddings, labels, path: str, title: str, max_colored: int = 10) -> None:
  """2-D PCA of the test embeddings; with more than `max_colored` classes, that many are coloured (legend) and the rest
  drawn in light grey, so the plot stays readable with 100+ classes."""
  from sklearn.decomposition import PCA
  plt = _plt()
  labels = np.asarray(labels)
  xy = PCA(n_components=2, random_state=0).fit_transform(np.asarray(embeddings, np.float64))
  classes = np.unique(labels)
  fig, ax = plt.subplots(figsize=(5.2, 4.6))
  shown = classes[:max_colored]
  rest = ~np.isin(labels, shown)
  if rest.any():
    ax.scatter(xy[rest, 0], xy[rest, 1], c="0.85", s=4, label=f"{len(classes) - len(shown)} other classes")
  cmap = plt.get_cmap("tab10")
  for i, cl in enumerate(shown):
    m = labels == cl
    ax.scatter(xy[m, 0], xy[m, 1], color=cmap(i % 10), s=8, label=f"test class {int(cl)}")
  ax.legend(fontsize=6, loc="best", markerscale=1.5)
  ax.set_title(f"{title}: test embeddings (PCA)", fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


# -- per run -----------------------------------------------------------------------------------------------------------

def _metric_table(columns: Dict[str, Dict[str, str]]) -> List[str]:
  keys = []
  for col in columns.values():
    keys += [k for k in col if k not in keys]
  names = list(columns)
  lines = ["| metric | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
  lines += [f"| {k} | " + " | ".join(columns[n].get(k, "–") for n in names) + " |" for k in keys]
  return lines


def write_run_artifacts(run_dir: str, record: dict, trainer, state, sets) -> None:
  """`results.md`, `results.json` (= the record), `curves.png`, `embedding.png` of one run."""
  from experiments.run import embed_all
  sel, fin = record["selected"], record["final"]
  columns = {"untrained": {}, f"selected (step {sel['step']})": {}, f"last (step {fin['step']})": {}}
  for name, src in zip(columns, (record["untrained"], sel, fin)):
    for split in ("test", "validation", "train_classes"):
      for k, v in (src.get(split) or {}).items():
        columns[name][f"{split} {k}"] = f"{v:.4f}"
  d = record["data"]
  lines = [f"# Run: {record['name']}, seed {record['seed']}", "", "Command:", "", "```bash", record["command"], "```",
           "", "Data: " + "; ".join(f"{k} {v['images']} images / {v['classes']} classes" for k, v in d.items())
           + f". Step selection: {record['selection']['rule']} (step {record['selection']['step']}). "
           f"Wall time {record['timing']['wall_seconds']:.1f} s; machine: {record['machine']}.", ""]
  lines += _metric_table(columns)
  lines += ["", "Plots: `curves.png` (training loss, evaluation curves), `embedding.png` (PCA of the test embeddings).",
            "", "Config (`config.json`):", "", "```"] + config_tools.readable_lines(record["config"]) + ["```", ""]
  with open(os.path.join(run_dir, "results.md"), "w") as f:
    f.write("\n".join(lines))
  with open(os.path.join(run_dir, "results.json"), "w") as f:
    json.dump(record, f, indent=1)
  title = f"{record['name']} seed {record['seed']}"
  plot_curves([record], os.path.join(run_dir, "curves.png"), title)
  x, y = sets.test
  plot_embedding(embed_all(trainer, state, x, min(512, len(x))), y, os.path.join(run_dir, "embedding.png"), title)


# -- over seeds --------------------------------------------------------------------------------------------------------

def summary_markdown(name: str, command: str, summary: dict, records: List[dict], *, plots_prefix: str = "") -> str:
  first = records[0]
  d = summary["data"]
  n = len(records)
  rows = {"untrained": summary["untrained"], "trained": summary["selected"]}
  lines = [f"# Results: {name}", "", "Written by the run itself. Command:", "", "```bash", command, "```", "",
           f"Seeds {', '.join(map(str, summary['seeds']))} "
           f"({'mean ± sample std over ' + str(n) + ' runs' if n > 1 else 'one run: no spread'}); dataset "
           f"`{first['config']['dataset']}` ({first['config']['split']} split): "
           + "; ".join(f"{k} {v['images']} images / {v['classes']} classes" for k, v in d.items())
           + f"; {first['config']['num_steps']} steps per run; reported step: {summary['selection']} "
           f"(steps {', '.join(map(str, summary['selected_steps']))}); machine: {first['machine']}; wall time per "
           f"run: {', '.join(f'{w:.0f} s' for w in summary['wall_seconds'])}.", "",
           "Untrained = the same network at initialisation (same seed), evaluated the same way.", ""]
  for split in ("test", "validation", "train_classes"):
    if split not in rows["trained"]:
      continue
    lines += [f"{split.replace('_', ' ').capitalize()}:", "", "| metric | untrained | trained |", "|---|---|---|"]
    for k, s in rows["trained"][split].items():
      lines.append(f"| {k} | {fmt(rows['untrained'][split].get(k))} | {fmt(s)} |")
    lines.append("")
  shown = [k for k in ("recall@1", "map@r", "nmi", "softmax_accuracy") if k in first["selected"]["test"]][:3]
  lines += ["Per seed (test, reported step): " + "; ".join(
      f"seed {r['seed']}: " + ", ".join(f"{k} {r['selected']['test'][k]:.4f}" for k in shown) for r in records), "",
            f"Plots: `{plots_prefix}curves.png` (training loss and evaluation curves of every seed), "
            f"`{plots_prefix}embedding.png` (PCA of the test embeddings, seed {records[0]['seed']}).", "",
            "Config:", "", "```"] + config_tools.readable_lines({k: v for k, v in first["config"].items()
                                                                if k != "seed"}) + ["```", ""]
  return "\n".join(lines)


def write_seed_summary(workdir: str, name: str, command: str, records: List[dict]) -> dict:
  """`summary.md`, `summary.json`, `curves.png`, `embedding.png` (first seed's) in `workdir`."""
  import shutil
  summary = summarize(records)
  with open(os.path.join(workdir, "summary.md"), "w") as f:
    f.write(summary_markdown(name, command, summary, records))
  with open(os.path.join(workdir, "summary.json"), "w") as f:
    json.dump({"name": name, "command": command, **summary}, f, indent=1)
  plot_curves(records, os.path.join(workdir, "curves.png"), name)
  first_dir = os.path.join(workdir, f"seed_{records[0]['seed']}")
  if os.path.exists(os.path.join(first_dir, "embedding.png")):
    shutil.copyfile(os.path.join(first_dir, "embedding.png"), os.path.join(workdir, "embedding.png"))
  return summary


class PublishCollisionError(ValueError):
  """`results_dir` already holds results of another experiment under this name."""


def check_publish(results_dir: str, name: str, config_hash: str, *, overwrite: bool) -> None:
  """Refuses to overwrite `<results_dir>/<name>.*` written from a different config (unless `overwrite`)."""
  path = os.path.join(results_dir, f"{name}.json")
  if overwrite or not os.path.exists(path):
    return
  with open(path) as f:
    old = json.load(f)
  if config_tools.record_hash(old) not in (None, config_hash):
    raise PublishCollisionError(
        f"{path} holds the results of another config named {name!r} (config hash {old.get('config_hash')} vs "
        f"{config_hash}). Give this run its own name (--config.name=...) or pass --overwrite.")


def publish(results_dir: str, name: str, workdir: str, command: str, records: List[dict], *,
            overwrite: bool = False) -> None:
  """`<name>.md`, `<name>.json`, `<name>_curves.png`, `<name>_embedding.png` in `results_dir`."""
  import shutil
  summary = summarize(records)
  check_publish(results_dir, name, summary["config_hash"], overwrite=overwrite)
  os.makedirs(results_dir, exist_ok=True)
  with open(os.path.join(results_dir, f"{name}.md"), "w") as f:
    f.write(summary_markdown(name, command, summary, records, plots_prefix=f"{name}_"))
  with open(os.path.join(results_dir, f"{name}.json"), "w") as f:
    json.dump({"name": name, "command": command, **summary}, f, indent=1)
  for plot in ("curves", "embedding"):
    src = os.path.join(workdir, f"{plot}.png")
    if os.path.exists(src):
      shutil.copyfile(src, os.path.join(results_dir, f"{name}_{plot}.png"))


__all__ = ["stat", "fmt", "summarize", "plot_curves", "plot_embedding", "write_run_artifacts", "write_seed_summary",
           "publish", "check_publish", "PublishCollisionError", "summary_markdown"]

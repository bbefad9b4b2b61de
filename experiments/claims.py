"""The claims table: every seed paper's claims checked by the sweeps, gathered from their results.

  python -m experiments.claims [--results_dir experiments/results]

Reads `<results_dir>/<sweep>.json` of every sweep (written by `python -m experiments.sweep`) and writes
`<results_dir>/claims.md`: one line per claim with our numbers (test metric at the validation-selected step, mean ±
std over seeds), the mean paired difference and the verdict (held / did not hold / inconclusive when the difference is
within one std of it, or not run yet).
"""

from __future__ import annotations

import argparse
import glob
import json
import os

from experiments import report

ORDER = ("pairnet_mnist", "pairnet_mnist_3k", "gpw_omniglot", "dmlda_omniglot", "npair_omniglot", "histogram_omniglot")


def gather(results_dir: str):
  rows = []
  paths = sorted(glob.glob(os.path.join(results_dir, "*.json")),
                 key=lambda p: (ORDER.index(os.path.basename(p)[:-5]) if os.path.basename(p)[:-5] in ORDER else 99, p))
  for path in paths:
    with open(path) as f:
      summary = json.load(f)
    for c in summary.get("claims", []) if isinstance(summary, dict) else []:
      rows.append((summary["name"], c))
  return rows


def markdown(rows) -> str:
  lines = ["# Claims of the seed papers, checked", "", "Written by `python -m experiments.claims` from the sweeps' "
           "results. Verdict: held when the mean paired difference (better - worse, seeds paired) exceeds one std of "
           "it, did not hold when it is below minus one std, inconclusive otherwise.", "",
           "| paper | claim | sweep | metric | ours: better | ours: worse | difference | verdict |",
           "|---|---|---|---|---|---|---|---|"]
  for sweep, c in rows:
    diff = (f"{c['difference']:+.4f} ± {c['difference_std']:.4f}" if c.get("difference") is not None else "–")
    lines.append(f"| {c['paper']} | {c['text']} | `{sweep}` | test {c['metric']} | {report.fmt(c.get('better'))} | "
                 f"{report.fmt(c.get('worse'))} | {diff} | {c['verdict']} |")
  return "\n".join(lines + [""])


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--results_dir", default="experiments/results")
  args = parser.parse_args(argv)
  text = markdown(gather(args.results_dir))
  with open(os.path.join(args.results_dir, "claims.md"), "w") as f:
    f.write(text)
  print(text)


if __name__ == "__main__":
  main()

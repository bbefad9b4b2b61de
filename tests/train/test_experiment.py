"""The experiment entry point end to end on sklearn_digits (few steps): results table, plots, metrics, resume."""

import json
import os

from ml_collections import config_flags  # noqa: F401  (the entry point's dependency)

from experiments import train as experiment
from experiments.configs import default


def test_default_experiment_writes_results_plots_and_resumes(tmp_path):
  c = default.get_config()
  c.num_steps, c.eval_every, c.checkpoint_every, c.log_every, c.progress = 4, 2, 2, 1, False
  workdir = str(tmp_path / "run")
  out = experiment.train_and_evaluate(c, workdir, command="python -m experiments.train (test)")
  for name in ("results.md", "results.json", "loss.png", "embedding.png", "metrics.jsonl", "untrained.json"):
    assert os.path.getsize(os.path.join(workdir, name)) > 0, name
  assert os.listdir(os.path.join(workdir, "tb"))
  table = open(os.path.join(workdir, "results.md")).read()
  assert "| recall@1 |" in table and "| nmi |" in table and "python -m experiments.train (test)" in table
  records = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  assert [r["step"] for r in records if r["split"] == "train"] == [1, 2, 3, 4]
  assert {r["step"] for r in records if r["split"] == "eval"} == {2, 4}
  assert 0.0 <= out["trained"]["recall@1"] <= 1.0 and out["summary"]["start_step"] == 0
  # a second run of the same length finds the final checkpoint and trains no further
  again = experiment.train_and_evaluate(c, workdir, command="again")
  assert again["summary"]["start_step"] == 4
  assert again["trained"]["recall@1"] == out["trained"]["recall@1"]


def test_seeds_are_summarised_as_mean_and_sample_std_and_published(tmp_path):
  c = default.get_config()
  c.num_steps, c.eval_every, c.checkpoint_every, c.log_every, c.progress = 2, 2, 2, 1, False
  c.seeds = (3, 4)
  workdir = str(tmp_path / "run")
  summary = experiment.run_seeds(c, workdir, "python -m experiments.train (seeds test)")
  per_seed = [json.load(open(os.path.join(workdir, f"seed_{s}", "results.json"))) for s in (3, 4)]
  assert [r["seed"] for r in per_seed] == [3, 4]
  for metric in ("recall@1", "nmi"):
    a, b = (r["trained"][metric] for r in per_seed)
    stats = summary["stats"]["trained"][metric]
    assert abs(stats["mean"] - (a + b) / 2) < 1e-12
    assert abs(stats["std"] - abs(a - b) / 2 ** 0.5) < 1e-12  # sample std of two values
  table = open(os.path.join(workdir, "summary.md")).read()
  assert "Seeds 3, 4" in table and "(seeds test)" in table and "| recall@1 |" in table and " ± " in table
  results_dir = str(tmp_path / "results")
  experiment.publish(summary, c.name, results_dir)
  assert sorted(os.listdir(results_dir)) == ["default.md", "default_embedding.png", "default_loss.png"]

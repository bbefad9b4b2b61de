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


def _small_pairnet(c):
  """The S0 configuration shrunk to sklearn_digits (8x8): a small SAME-padded LeNet, few steps."""
  c.dataset = "sklearn_digits"
  c.model.padding, c.model.lenet_kernel, c.model.lenet_channels, c.model.lenet_hidden = "SAME", 3, (4, 8), 32
  c.batch_size, c.num_steps, c.eval_every, c.checkpoint_every, c.log_every, c.progress = 16, 3, 3, 3, 1, False


def test_pairnet_two_channel_run_reports_softmax_knn_and_svm_accuracy(tmp_path):
  from experiments.configs import pairnet_mnist
  c = pairnet_mnist.get_config()
  _small_pairnet(c)
  c.samples_per_class = 20
  out = experiment.train_and_evaluate(c, str(tmp_path / "run"), command="pairnet (test)")
  for key in ("softmax_accuracy", "knn_accuracy", "svm_accuracy"):
    assert 0.0 <= out["trained"][key] <= 1.0 and 0.0 <= out["untrained"][key] <= 1.0, key
  assert out["num_train"] == 20 * 10 and out["num_train_classes"] == out["num_test_classes"] == 10


def test_pairnet_limited_sweep_writes_the_table_and_plot(tmp_path):
  from experiments import pairnet_limited
  results = pairnet_limited.sweep(str(tmp_path / "runs"), [16, 20], ["singlenet", "siamese"], num_steps=2,
                                  seeds=[0, 1], command="sweep (test)", configure=_small_pairnet)
  assert sorted(results) == [("siamese", 16), ("siamese", 20), ("singlenet", 16), ("singlenet", 20)]
  text = pairnet_limited.write_results(results, [16, 20], ["singlenet", "siamese"], "sweep (test)",
                                       str(tmp_path / "results"), num_steps=2)
  assert os.path.getsize(tmp_path / "results" / "pairnet_mnist_accuracy.png") > 0
  assert open(tmp_path / "results" / "pairnet_mnist.md").read() == text
  softmax_table = text.split("## Test accuracy: softmax (W1)")[1].split("##")[0]
  assert "| singlenet |" in softmax_table and "| siamese |" not in softmax_table  # siamese never trains W1
  knn = results[("siamese", 20)]["stats"]["trained"]["knn_accuracy"]
  assert f"{knn['mean']:.4f} ± {knn['std']:.4f}" in text.split("1-NN on fc1")[1].split("##")[0]

"""S0's follow-up sweeps change only what they say they change relative to `pairnet_mnist`."""

from experiments import config_tools
from experiments import sweep as sweep_lib


def _plain(sw, variant, seed=0):
  return config_tools.to_plain(sweep_lib.variant_config(sw, variant, seed))


def _differing(a, b):
  """Keys that change what a run computes (the run's `name` is where it is filed, not what it computes)."""
  return [k for k in config_tools.differing_keys(a, b, ignore_safe=False) if k != "name"]


def test_the_3000_step_sweep_is_pairnet_mnist_with_only_the_budget_changed():
  base = sweep_lib.load_sweep("experiments/sweeps/pairnet_mnist.py")
  longer = sweep_lib.load_sweep("experiments/sweeps/pairnet_mnist_3k.py")
  assert [v.name for v in longer.variants] == [v.name for v in base.variants]
  assert longer.seeds == base.seeds and [c.better for c in longer.claims] == [c.better for c in base.claims]
  for a, b in zip(base.variants, longer.variants):
    assert _differing(_plain(base, a), _plain(longer, b)) == ["checkpoint_every", "num_steps"]
  assert _plain(longer, longer.variants[0])["num_steps"] == 3000


def test_the_learning_rate_check_changes_the_split_budget_and_rate_only():
  base = sweep_lib.load_sweep("experiments/sweeps/pairnet_mnist.py")
  check = sweep_lib.load_sweep("experiments/sweeps/pairnet_mnist_lr.py")
  reference = next(v for v in base.variants if v.name == "siamese_nall")
  for v in check.variants:
    differing = _differing(_plain(base, reference), _plain(check, v))
    expected = {"num_steps", "selection_metric", "validation",
                "validation_per_class"}
    if v.overrides["optimizer.learning_rate"] != 0.01:
      expected.add("optimizer.learning_rate")
    if v.overrides["objective.kind"] != "siamese":
      expected.add("objective.kind")
    assert set(differing) == expected, v.name


def test_table_1_layout_reads_trained_rows_at_the_selected_step_and_the_untrained_reference(tmp_path):
  from experiments.sweeps import pairnet_mnist

  def stat(mean):
    return {"mean": mean, "std": 0.001, "n": 3}

  variants = {}
  for m_i, method in enumerate(pairnet_mnist.METHODS):
    test = {"softmax_accuracy": stat(0.90 + m_i / 100), "knn_accuracy": stat(0.80 + m_i / 100),
            "svm_accuracy": stat(0.70 + m_i / 100)}
    untrained = {"knn_accuracy": stat(0.55), "svm_accuracy": stat(0.45), "softmax_accuracy": stat(0.1)}
    variants[f"{method}_n60"] = {"summary": {"selected": {"test": test}, "untrained": {"test": untrained}}}
  lines = pairnet_mnist.extra({"name": "tiny", "variants": variants}, str(tmp_path))
  rows = {line.split(" | ")[0].lstrip("| "): line.split(" | ")[1] for line in lines if line.startswith("| ")}
  assert rows["siamese (1-NN)"].startswith("0.8000")
  assert rows["pair-soft (linear SVM)"].startswith("0.7300")          # pairnet's features, SVM
  assert rows["pairnet (softmax)"].startswith("0.9300")
  assert rows["untrained network (1-NN)"].startswith("0.5500")
  assert rows["untrained network (linear SVM)"].startswith("0.4500")
  assert "–" in next(line for line in lines if line.startswith("| untrained network (1-NN)"))  # N = 100 not run
  assert (tmp_path / "tiny_accuracy.png").stat().st_size > 0

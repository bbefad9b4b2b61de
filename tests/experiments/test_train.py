"""`experiments.train` / `experiments.run`: records, summaries, resume without redoing, the restart config check,
loss hyperparameters from the command line, publishing without overwriting another experiment's results."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from experiments import config_tools, report, run
from metric_jax.train import from_config
from tests.conftest import REPO_ROOT
from tests.experiments._tiny import tiny_config


def _run(c, workdir, **kw):
  return run.run_seeds(c, str(workdir), command="python -m experiments.train (test)", log=lambda m: None, **kw)


def test_run_writes_record_results_plots_and_interval_mean_losses(tmp_path):
  c = tiny_config(log_every=2)
  records = _run(c, tmp_path / "w")
  run_dir = tmp_path / "w" / "seed_0"
  for name in ("record.json", "results.md", "results.json", "curves.png", "embedding.png", "metrics.jsonl",
               "untrained.json", "config.json", "run.json", "preprocess.npz"):
    assert os.path.getsize(run_dir / name) > 0, name
  rec = records[0]
  assert [e["step"] for e in rec["evals"]] == [2, 4] and rec["selection"] == {"rule": "last step", "step": 4}
  assert [s for s, _ in rec["train_curve"]] == [2, 4]
  lines = [json.loads(l) for l in open(run_dir / "metrics.jsonl")]
  train = [l for l in lines if l["split"] == "train"]
  # each logged loss is the mean of the interval's per-step losses: it lies between them, never just the last one
  assert all(np.isfinite(l["loss"]) and "grad_norm" in l for l in train)
  table = open(run_dir / "results.md").read()
  assert table.startswith("# Run: default, seed 0") and "optimizer.learning_rate = 0.001" in table
  assert "```yaml" not in table
  summary = report.write_seed_summary(str(tmp_path / "w"), c.name, "cmd", records)
  text = open(tmp_path / "w" / "summary.md").read()
  assert "one run: no spread" in text and " ± " not in text.split("Untrained")[1]  # no "± 0.0000" for one seed
  assert summary["selected"]["test"]["recall@1"]["std"] is None


def test_finished_run_is_not_redone_and_more_steps_continue(tmp_path):
  c = tiny_config()
  first = _run(c, tmp_path / "w")[0]
  mtime = os.path.getmtime(tmp_path / "w" / "seed_0" / "record.json")
  logs = []
  again = run.run_seeds(c, str(tmp_path / "w"), command="again", log=logs.append)[0]
  assert again == first and os.path.getmtime(tmp_path / "w" / "seed_0" / "record.json") == mtime
  assert any("not redone" in m for m in logs)
  longer = tiny_config(num_steps=6)
  logs = []
  out = run.run_seeds(longer, str(tmp_path / "w"), command="longer", log=logs.append)[0]
  assert any("resuming from step 4" in m for m in logs)
  assert [e["step"] for e in out["evals"]] == [2, 4, 6]
  steps = [json.loads(l)["step"] for l in open(tmp_path / "w" / "seed_0" / "metrics.jsonl")
           if json.loads(l)["split"] == "train"]
  assert steps == sorted(set(steps)) == [1, 2, 3, 4, 5, 6]


def test_changed_config_is_refused_with_the_differing_keys_and_overwrite_restarts(tmp_path):
  _run(tiny_config(), tmp_path / "w")
  with pytest.raises(run.ConfigMismatchError, match=r"optimizer\.learning_rate: 0\.001 -> 0\.01.*--overwrite"):
    _run(tiny_config(**{"optimizer.learning_rate": 0.01}), tmp_path / "w")
  with pytest.raises(run.ConfigMismatchError, match=r"model\.embedding_dim: 8 -> 16"):
    _run(tiny_config(**{"model.embedding_dim": 16}), tmp_path / "w")
  _run(tiny_config(**{"optimizer.schedule": "cosine"}), tmp_path / "w2")
  with pytest.raises(run.ConfigMismatchError, match=r"num_steps"):  # the cosine schedule depends on num_steps
    _run(tiny_config(**{"optimizer.schedule": "cosine", "num_steps": 6}), tmp_path / "w2")
  rec = _run(tiny_config(**{"model.embedding_dim": 16}), tmp_path / "w", overwrite=True)[0]
  assert rec["config"]["model"]["embedding_dim"] == 16


def test_loss_hparams_from_flags_and_misspelt_names():
  argv = ["prog", "--config", "x.py", "--config.objective.loss_hparams.margin=0.2",
          "--config.objective.loss_hparams.mining", "semihard", "--config.num_steps=3"]
  rest, hp = config_tools.split_loss_hparam_flags(argv)
  assert rest == ["prog", "--config", "x.py", "--config.num_steps=3"] and hp == {"margin": 0.2, "mining": "semihard"}
  c = tiny_config(**{"objective.loss": "triplet"})
  config_tools.set_loss_hparams(c, hp)
  assert from_config.loss_hparams(c) == {"margin": 0.2, "mining": "semihard"}
  config_tools.set_loss_hparams(c, {"margn": 0.1})
  with pytest.raises(from_config.ConfigError, match=r"'margn'.*triplet.*it takes: .*margin.*mining"):
    from_config.loss_hparams(c)


def test_cli_sets_loss_hparams_and_refuses_a_misspelt_one(tmp_path):
  base = [sys.executable, "-m", "experiments.train", "--config", "experiments/configs/default.py",
          "--workdir", str(tmp_path / "w"), "--config.num_steps=2", "--config.eval_every=2", "--config.seeds=(0,)",
          "--config.progress=False", "--config.objective.loss=triplet"]
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  bad = subprocess.run(base + ["--config.objective.loss_hparams.margn=0.2"], cwd=REPO_ROOT, env=env,
                       capture_output=True, text=True, timeout=300)
  assert bad.returncode == 2 and "'margn'" in bad.stderr and "margin" in bad.stderr.split("it takes:")[1]
  ok = subprocess.run(base + ["--config.objective.loss_hparams.margin=0.3"], cwd=REPO_ROOT, env=env,
                      capture_output=True, text=True, timeout=300)
  assert ok.returncode == 0, ok.stderr[-3000:]
  saved = json.load(open(tmp_path / "w" / "seed_0" / "config.json"))
  assert saved["objective"]["loss_hparams"] == {"margin": 0.3}


def test_publish_never_overwrites_another_experiments_results(tmp_path):
  c = tiny_config()
  records = _run(c, tmp_path / "a")
  report.write_seed_summary(str(tmp_path / "a"), c.name, "cmd a", records)
  report.publish(str(tmp_path / "res"), c.name, str(tmp_path / "a"), "cmd a", records)
  assert sorted(os.listdir(tmp_path / "res")) == ["default.json", "default.md", "default_curves.png",
                                                  "default_embedding.png"]
  other = _run(tiny_config(**{"objective.loss": "contrastive"}), tmp_path / "b")
  with pytest.raises(report.PublishCollisionError, match="--config.name"):
    report.publish(str(tmp_path / "res"), c.name, str(tmp_path / "b"), "cmd b", other)
  report.publish(str(tmp_path / "res"), c.name, str(tmp_path / "a"), "cmd a again", records)  # same config: fine


def _small_pairnet(c):
  """The S0 configuration shrunk to sklearn_digits (8x8): a small SAME-padded LeNet, few steps."""
  c.dataset = "sklearn_digits"
  c.model.padding, c.model.lenet_kernel, c.model.lenet_channels, c.model.lenet_hidden = "SAME", 3, (4, 8), 32
  c.batch_size, c.num_steps, c.eval_every, c.checkpoint_every, c.log_every, c.progress = 16, 3, 3, 3, 1, False
  c.seeds = (0,)
  return c


def test_pairnet_two_channel_run_reports_softmax_knn_and_svm_accuracy(tmp_path):
  from experiments.configs import pairnet_mnist
  c = _small_pairnet(pairnet_mnist.get_config())
  c.samples_per_class = 20
  rec = _run(c, tmp_path / "w")[0]
  for key in ("softmax_accuracy", "knn_accuracy", "svm_accuracy"):
    assert 0.0 <= rec["selected"]["test"][key] <= 1.0 and 0.0 <= rec["untrained"]["test"][key] <= 1.0, key
  assert rec["data"]["train"] == {"images": 200, "classes": 10}


def test_limited_split_with_validation_selects_the_step_on_held_out_training_images(tmp_path):
  from experiments.configs import pairnet_mnist
  c = _small_pairnet(pairnet_mnist.get_config())
  c.samples_per_class, c.num_steps, c.eval_every = 20, 4, 2
  c.validation, c.validation_per_class, c.selection_metric = True, 10, "softmax_accuracy"
  rec = _run(c, tmp_path / "w")[0]
  # sklearn_digits: 1797 images, a stratified half is the pool (~90 per class); 10 per class are held out first.
  assert rec["data"]["train"] == {"images": 200, "classes": 10}
  assert rec["data"]["validation"] == {"images": 100, "classes": 10}
  assert [e["step"] for e in rec["evals"]] == [2, 4]
  assert set(rec["evals"][0]["validation"]) == {"knn_accuracy", "softmax_accuracy"}
  best = max(rec["evals"], key=lambda e: (e["validation"]["softmax_accuracy"], -e["step"]))
  assert rec["selection"] == {"rule": "best validation softmax_accuracy", "step": best["step"]}
  assert rec["selected"] == best
  # experiments.knn_distance re-evaluates the latest checkpoint: its cosine numbers are the record's last evaluation.
  from experiments import knn_distance
  acc = knn_distance.evaluate_run(str(tmp_path / "w" / "seed_0"))
  assert acc.pop(("step",)) == 4
  assert len(acc) == 8 and all(0.0 <= v <= 1.0 for v in acc.values())
  assert acc[("trained", "test", "cosine")] == pytest.approx(rec["final"]["test"]["knn_accuracy"], abs=1e-6)
  assert acc[("trained", "validation", "cosine")] == pytest.approx(rec["final"]["validation"]["knn_accuracy"],
                                                                   abs=1e-6)
  assert acc[("untrained", "test", "cosine")] == pytest.approx(rec["untrained"]["test"]["knn_accuracy"], abs=1e-6)
  refused = (({"selection_metric": "map@r"}, r"config\.selection_metric.*'limited'.*'map@r'"),
             ({"validation_per_class": 0}, r"config\.validation_per_class.*positive"))
  for i, (changes, match) in enumerate(refused):
    bad = _small_pairnet(pairnet_mnist.get_config())
    bad.validation, bad.validation_per_class, bad.selection_metric = True, 10, "knn_accuracy"
    for key, value in changes.items():
      bad[key] = value
    with pytest.raises(from_config.ConfigError, match=match):
      run.run_one(bad, str(tmp_path / f"bad{i}"), command="test", log=lambda m: None)


def test_negative_class_mining_run_resumes_exactly(tmp_path):
  """S3's mining reads the current network; batches are computed on demand, so 2 + 2 steps == 4 steps."""
  from metric_jax import train
  kw = {"sampler": "npair", "npair_mining": True, "classes_per_batch": 4, "objective.loss": "npair_mc",
        "model.normalize": False}
  _run(tiny_config(**kw), tmp_path / "full")
  _run(tiny_config(**kw, num_steps=2), tmp_path / "split")
  _run(tiny_config(**kw), tmp_path / "split")  # continues from step 2 (num_steps is a safe key)
  full = train.restore(str(tmp_path / "full"))[2]
  split = train.restore(str(tmp_path / "split"))[2]
  import jax
  for a, b in zip(jax.tree.leaves(full.params), jax.tree.leaves(split.params)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)


def test_bfloat16_backbone_trains_finite_and_close_to_float32(tmp_path):
  """Mixed precision: bf16 backbone compute, float32 parameters / optimizer state / heads / loss."""
  import jax
  from metric_jax import train
  kw = {"num_steps": 60, "eval_every": 60, "checkpoint_every": 60, "log_every": 10}
  f32 = _run(tiny_config(**kw), tmp_path / "f32")[0]
  bf16 = _run(tiny_config(**kw, **{"model.dtype": "bfloat16"}), tmp_path / "bf16")[0]
  assert all(np.isfinite(loss) for _, loss in bf16["train_curve"])
  state = train.restore(str(tmp_path / "bf16"))[2]
  assert {str(x.dtype) for x in jax.tree.leaves(state.params)} == {"float32"}
  assert {str(x.dtype) for x in jax.tree.leaves(state.opt_state) if hasattr(x, "dtype") and x.ndim} == {"float32"}
  for key in ("recall@1", "map@r"):
    assert abs(bf16["final"]["test"][key] - f32["final"]["test"][key]) < 0.05, key
    assert bf16["final"]["test"][key] > bf16["untrained"]["test"][key]


def test_learnable_loss_parameters_train_with_their_multiplier_and_are_restored(tmp_path):
  """Proxies live in the train state next to S2's alpha, get their own learning-rate multiplier and are checkpointed."""
  import jax
  from metric_jax import losses, train
  c = tiny_config(**{"objective.loss": "proxy_anchor", "optimizer.loss_lr_multiplier": 100.0})
  _run(c, tmp_path / "w")
  state = train.restore(str(tmp_path / "w"))[2]
  init = losses.init_params("proxy_anchor", jax.random.PRNGKey(0), num_classes=5, embedding_dim=8)
  trained = state.loss_params["base"]
  assert jax.tree.structure(trained) == jax.tree.structure(init)
  for a, b in zip(jax.tree.leaves(trained), jax.tree.leaves(init)):
    assert a.shape == b.shape and not np.allclose(np.asarray(a), np.asarray(b))


def test_memory_run_uses_the_memory_shows_its_keys_restores_it_and_refuses_a_changed_memory(tmp_path):
  """Cross-batch memory from the config: `memory_used` > 0 from `start_step` on, the keys in config.json and
  results.md, `restore` gives the buffer back, and a restart with other memory settings is refused naming the key."""
  from metric_jax import train
  c = tiny_config(**{"memory.size": 100, "memory.start_step": 2})   # batch 40: the buffer wraps (160 > 100)
  _run(c, tmp_path / "w")
  run_dir = tmp_path / "w" / "seed_0"
  used = {l["step"]: l["memory_used"] for l in map(json.loads, open(run_dir / "metrics.jsonl"))
          if l["split"] == "train"}
  assert used == {1: 0.0, 2: 0.0, 3: 80.0, 4: 100.0}   # step s (1-based) sees the batches of steps < s, from step 3
  assert json.load(open(run_dir / "config.json"))["memory"] == {"size": 100, "start_step": 2}
  table = open(run_dir / "results.md").read()
  assert "memory.size = 100" in table and "memory.start_step = 2" in table
  _, config, state = train.restore(str(tmp_path / "w"))
  assert config.memory.size == 100
  assert state.memory["embeddings"].shape == (100, 8) and np.asarray(state.memory["valid"]).all()
  assert int(state.memory["next"]) == (4 * 40) % 100
  assert np.allclose(np.linalg.norm(np.asarray(state.memory["embeddings"]), axis=1), 1.0, atol=1e-5)
  with pytest.raises(run.ConfigMismatchError, match=r"memory\.size: 100 -> 50"):
    _run(tiny_config(**{"memory.size": 50, "memory.start_step": 2}), tmp_path / "w")
  with pytest.raises(run.ConfigMismatchError, match=r"memory\.start_step: 2 -> 0"):
    _run(tiny_config(**{"memory.size": 100}), tmp_path / "w")
  with pytest.raises(run.ConfigMismatchError, match=r"memory\.size: 100 -> 0"):
    _run(tiny_config(), tmp_path / "w")


def _without_added_keys(plain):
  """A config as code from before `memory`, `model.dtype` and `npair_mining` existed saved it."""
  old = {k: v for k, v in plain.items() if k not in ("memory", "npair_mining")}
  old["model"] = {k: v for k, v in plain["model"].items() if k != "dtype"}
  return old


def test_runs_saved_before_the_memory_section_keep_their_hash_and_resume(tmp_path):
  """A config.json / record without `memory`, `model.dtype` or `npair_mining` (written before they existed) equals
  them at their defaults: same hash, no restart refusal, the finished run is not redone, also when the record's stored
  hash came from an earlier hash function (it is recomputed from the stored config); turning the memory on is a
  change."""
  plain = config_tools.to_plain(tiny_config())
  old = _without_added_keys(plain)
  assert config_tools.config_hash(old) == config_tools.config_hash(plain)
  assert config_tools.record_hash({"config": old, "config_hash": "stale"}) == config_tools.config_hash(plain)
  bf16 = config_tools.to_plain(tiny_config(**{"model.dtype": "bfloat16"}))
  assert config_tools.config_hash(bf16) != config_tools.config_hash(plain)
  assert config_tools.differing_keys(old, plain) == []
  on = config_tools.to_plain(tiny_config(**{"memory.size": 16}))
  assert config_tools.config_hash(on) != config_tools.config_hash(plain)
  assert config_tools.differing_keys(old, on) == ["memory.size"]
  _run(tiny_config(), tmp_path / "w")
  run_dir = tmp_path / "w" / "seed_0"
  for name in ("config.json", "record.json"):   # rewrite them as a run of the earlier code would have left them
    saved = json.load(open(run_dir / name))
    if name == "config.json":
      saved = _without_added_keys(saved)
    else:
      saved["config"], saved["config_hash"] = _without_added_keys(saved["config"]), "from-an-earlier-hash-function"
    json.dump(saved, open(run_dir / name, "w"))
  logs = []
  run.run_seeds(tiny_config(), str(tmp_path / "w"), command="again", log=logs.append)
  assert any("not redone" in m for m in logs)
  with pytest.raises(run.ConfigMismatchError, match=r"memory\.size: 0 -> 16"):
    _run(tiny_config(**{"memory.size": 16}), tmp_path / "w")

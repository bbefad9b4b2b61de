"""The sweep runner on a tiny sweep over sklearn_digits: variants x seeds, records in the results directory, resume and
skip-finished, reuse of identical configs across sweeps, grid selection on validation, claims, tables and plots."""

import json
import os
import re
import textwrap

import pytest

from experiments import sweep as sweep_lib

SWEEP_FILE = textwrap.dedent('''
    from experiments.sweep import Claim, Sweep, Variant

    def get_sweep():
      return Sweep(
          name="{name}", base="experiments/configs/default.py", seeds=(0, 1),
          base_overrides={{"num_steps": 4, "eval_every": 2, "checkpoint_every": 2, "log_every": 1,
                          "validation": True, "classes_per_batch": 3, "model.lenet_channels": (4, 8), "model.lenet_hidden": 16}},
          variants=[
              Variant("ms", {{"objective.loss": "multi_similarity"}}),
              Variant("contrastive_m05", {{"objective.loss": "contrastive", "objective.loss_hparams.neg_margin": 0.5}},
                      group="contrastive"),
              Variant("contrastive_m1", {{"objective.loss": "contrastive", "objective.loss_hparams.neg_margin": 1.0}},
                      group="contrastive"),
          ],
          claims=[Claim("T", "ms beats contrastive", "ms", "contrastive")], grid_seeds={grid_seeds})
''')


def _write(tmp_path, name, grid_seeds=None):
  path = tmp_path / f"{name}.py"
  path.write_text(SWEEP_FILE.format(name=name, grid_seeds=grid_seeds))
  return str(path)


def test_tiny_sweep_runs_resumes_skips_and_tabulates(tmp_path):
  results_dir = str(tmp_path / "results")
  logs = []
  sw = sweep_lib.load_sweep(_write(tmp_path, "tiny"))
  out = sweep_lib.run_sweep(sw, str(tmp_path / "runs"), results_dir, command="sweep (test)", log=logs.append)
  assert sorted(out["variants"]) == ["contrastive_m05", "contrastive_m1", "ms"] and not out["missing"]
  progress = [m for m in logs if m.startswith("[") and "elapsed" in m]
  assert [m.split("]")[0] for m in progress] == [f"[{i}/6" for i in range(1, 7)]  # a progress line per run
  assert all("min left" in m for m in progress[1:])
  for v in ("ms", "contrastive_m05", "contrastive_m1"):
    for s in (0, 1):
      rec = json.load(open(os.path.join(results_dir, "tiny", v, f"seed_{s}.json")))
      assert rec["finished"] and rec["seed"] == s and rec["selection"]["rule"] == "best validation map@r"
      assert rec["selected"]["step"] in (2, 4) and "validation" in rec["selected"]
  # the group row is the grid value with the best mean validation MAP@R
  val = {v: out["variants"][v]["summary"]["selected"]["validation"]["map@r"]["mean"]
         for v in ("contrastive_m05", "contrastive_m1")}
  assert out["rows"]["contrastive"] == max(val, key=val.get)
  text = open(os.path.join(results_dir, "tiny.md")).read()
  assert "sweep (test)" in text and "| test map@r" not in text.split("Test metrics")[0]
  assert "ms beats contrastive" in text and "Runs finished: 6 of 6" in text
  assert "(chosen)" in text
  for plot in ("tiny_bars.png", "tiny_curves.png", "tiny_loss.png"):
    assert os.path.getsize(os.path.join(results_dir, plot)) > 0
  summary = json.load(open(os.path.join(results_dir, "tiny.json")))
  assert summary["claims"][0]["verdict"] in ("held", "did not hold", "inconclusive")
  # Re-running a finished sweep runs nothing (even without the run directories, and for a record saved before the
  # config had `memory`, `model.dtype` and `npair_mining`, hashed by an earlier function) and rewrites the tables.
  import shutil
  shutil.rmtree(tmp_path / "runs")
  old_path = os.path.join(results_dir, "tiny", "ms", "seed_0.json")
  old = json.load(open(old_path))
  old["config"] = {k: v for k, v in old["config"].items() if k not in ("memory", "npair_mining")}
  old["config"]["model"].pop("dtype")
  old["config_hash"] = "from-an-earlier-hash-function"
  json.dump(old, open(old_path, "w"))
  logs.clear()
  sweep_lib.run_sweep(sw, str(tmp_path / "runs"), results_dir, command="again", log=logs.append)
  assert logs == [] and not (tmp_path / "runs").exists()
  assert "again" in open(os.path.join(results_dir, "tiny.md")).read()
  # Another sweep with an identical variant config reuses the record instead of training again.
  other = sweep_lib.load_sweep(_write(tmp_path, "other"))
  logs.clear()
  sweep_lib.run_sweep(other, str(tmp_path / "runs2"), results_dir, command="other", log=logs.append,
                      only=["ms"])
  assert sum("reused" in m for m in logs) == 2 and not (tmp_path / "runs2").exists()
  assert json.load(open(os.path.join(results_dir, "other", "ms", "seed_0.json")))["reused_from"] == \
      os.path.join("tiny", "ms", "seed_0.json")
  # grid_seeds=(0,): every grid value runs on seed 0, validation on seed 0 picks one, only that one runs on seed 1
  # (here every config is reused from `tiny`, so nothing trains).
  grid = sweep_lib.load_sweep(_write(tmp_path, "grid", grid_seeds=(0,)))
  logs.clear()
  out = sweep_lib.run_sweep(grid, str(tmp_path / "runs3"), results_dir, command="grid", log=logs.append)
  seed0 = {v: json.load(open(os.path.join(results_dir, "tiny", v, "seed_0.json")))["selected"]["validation"]["map@r"]
           for v in ("contrastive_m05", "contrastive_m1")}
  chosen = max(seed0, key=seed0.get)
  other_value = ({"contrastive_m05", "contrastive_m1"} - {chosen}).pop()
  assert out["rows"]["contrastive"] == chosen and not out["missing"] and out["expected"] == 5
  assert sum("reused" in m for m in logs) == 5
  assert os.path.exists(os.path.join(results_dir, "grid", chosen, "seed_1.json"))
  assert not os.path.exists(os.path.join(results_dir, "grid", other_value, "seed_1.json"))
  assert "Runs finished: 5 of 5" in open(os.path.join(results_dir, "grid.md")).read()


def test_sweep_errors_name_the_problem(tmp_path):
  sw = sweep_lib.load_sweep(_write(tmp_path, "bad"))
  with pytest.raises(ValueError, match="not variants of bad"):
    sweep_lib.run_sweep(sw, str(tmp_path / "r"), str(tmp_path / "res"), command="x", only=["nope"])
  with pytest.raises(KeyError, match="learning_rat"):
    sweep_lib.variant_config(sw, sweep_lib.Variant("v", {"optimizer.learning_rat": 0.1}), 0)


DIVERGING_SWEEP = textwrap.dedent('''
    from experiments.sweep import Sweep, Variant

    def get_sweep():
      return Sweep(
          name="lr", base="experiments/configs/default.py", seeds=(0,),
          base_overrides={"num_steps": 4, "eval_every": 2, "checkpoint_every": 2, "log_every": 1, "validation": True,
                          "classes_per_batch": 3, "model.lenet_channels": (4, 8), "model.lenet_hidden": 16,
                          "optimizer.name": "sgd"},
          variants=[Variant("lr_small", {"optimizer.learning_rate": 1e-3}, group="lr"),
                    Variant("lr_huge", {"optimizer.learning_rate": 1e30}, group="lr")])
''')


def test_a_diverging_grid_value_is_recorded_not_redone_and_never_chosen(tmp_path):
  path = tmp_path / "lr.py"
  path.write_text(DIVERGING_SWEEP)
  sw = sweep_lib.load_sweep(str(path))
  results_dir = str(tmp_path / "results")
  logs = []
  results = sweep_lib.run_sweep(sw, str(tmp_path / "runs"), results_dir, command="x", log=logs.append)
  assert results["rows"] == {"lr": "lr_small"} and results["missing"] == []
  assert [(d["variant"], d["seed"]) for d in results["diverged"]] == [("lr_huge", 0)]
  assert re.match(r"step \d+: the (loss|gradient norm) is (nan|inf|-inf) ", results["diverged"][0]["message"])
  record = json.load(open(sweep_lib.diverged_path(results_dir, "lr", "lr_huge", 0)))
  assert record["finished"] is False and record["config"]["optimizer"]["learning_rate"] == 1e30
  assert not os.path.exists(sweep_lib.record_path(results_dir, "lr", "lr_huge", 0))
  table = open(os.path.join(results_dir, "lr.md")).read()
  assert "Runs finished: 1 of 2 (seeds 0); diverged: 1 (listed below)." in table
  assert "| lr_huge | lr | diverged (seed 0) |" in table and "- lr_huge seed 0: step " in table
  logs.clear()
  sweep_lib.run_sweep(sw, str(tmp_path / "runs"), results_dir, command="x", log=logs.append)
  assert not any("lr_huge" in m for m in logs)  # the same config diverges again: not redone

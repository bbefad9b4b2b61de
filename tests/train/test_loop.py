"""The training loop: a non-finite loss or gradient stops training at its step with the last good checkpoint kept;
a SIGKILLed experiment resumes from its last checkpoint (at most one interval lost), says so, and leaves no duplicate
records; with the cross-batch memory on it ends exactly where an uninterrupted run ends (parameters and buffer)."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from flax import nnx

from metric_jax import models, train
from tests.conftest import REPO_ROOT

SHAPE = (8, 8, 1)


def _trainer():
  model = models.Embedder(models.LeNet(SHAPE, None, channels=(2, 4), hidden=8, kernel_size=3, padding="SAME",
                                       rngs=nnx.Rngs(0)), SHAPE, 4, rngs=nnx.Rngs(1))
  _, params, _ = train.split_model(model)
  opt = train.make_optimizer({"model": params, "loss": {}}, optimizer="sgd", learning_rate=0.01)
  return train.Trainer(model, train.metric_objective("contrastive"), opt)


def _batches(nan_at):
  def make(start):
    step = start
    while True:
      rng = np.random.default_rng(step)
      labels = np.repeat(np.arange(4), 2).astype(np.int32)
      images = rng.normal(size=(8,) + SHAPE).astype(np.float32)
      if step == nan_at:
        images[3, 2, 2, 0] = np.nan
      yield {"image": images, "label": labels, "valid": np.ones(8, bool)}
      step += 1
  return make


def test_non_finite_loss_stops_at_its_step_and_keeps_the_last_good_checkpoint(tmp_path):
  trainer = _trainer()
  state = trainer.init_state(seed=0)
  with pytest.raises(train.NonFiniteError, match=r"step 6: the (loss|gradient norm) is nan.*last good checkpoint is 4"):
    train.fit(trainer, state, _batches(nan_at=5), num_steps=10, workdir=str(tmp_path), checkpoint_every=2,
              log_every=1, progress=False)
  ckpt = train.Checkpointer(str(tmp_path / "checkpoints"))
  assert ckpt.latest_step() == 4
  restored, _ = ckpt.restore(trainer.init_state(seed=0))
  ckpt.close()
  assert all(np.isfinite(np.asarray(x)).all() for x in __import__("jax").tree.leaves(restored.params))


def _metrics(path):
  return [json.loads(l) for l in open(path) if l.strip()]


def test_sigkilled_experiment_resumes_says_so_and_keeps_one_record_per_step(tmp_path):
  workdir = tmp_path / "w"
  cmd = [sys.executable, "-m", "experiments.train", "--config", "experiments/configs/default.py", "--workdir",
         str(workdir), "--config.num_steps=200", "--config.checkpoint_every=20", "--config.log_every=1",
         "--config.eval_every=100", "--config.seeds=(0,)", "--config.progress=False"]
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  run_log = workdir / "seed_0" / "metrics.jsonl"
  proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  deadline = time.time() + 300
  try:
    while time.time() < deadline:
      assert proc.poll() is None, "the run ended before it could be killed"
      if run_log.exists() and any(r["split"] == "train" and r["step"] >= 50 for r in _metrics(run_log)):
        break
      time.sleep(0.1)
    os.kill(proc.pid, signal.SIGKILL)
  finally:
    proc.wait()
  last_logged = max(r["step"] for r in _metrics(run_log) if r["split"] == "train")
  done = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stderr[-3000:]
  resumed = [line for line in (done.stdout + done.stderr).splitlines() if "resuming from step" in line]
  assert len(resumed) == 1
  step = int(resumed[0].split("resuming from step")[1].split()[0])
  assert step % 20 == 0 and last_logged - step <= 20  # at most one checkpoint interval lost
  records = _metrics(run_log)
  train_steps = [r["step"] for r in records if r["split"] == "train"]
  assert train_steps == list(range(1, 201))  # no step twice, none missing
  assert [r["step"] for r in records if r["split"] == "test"] == [100, 200]
  # a third invocation finds the seed finished and evaluates nothing again
  again = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert again.returncode == 0 and "not redone" in again.stdout
  assert _metrics(run_log) == records


def _checkpoint_steps(run_dir):
  root = run_dir / "checkpoints"
  return sorted(int(d) for d in os.listdir(root) if d.isdigit()) if root.is_dir() else []


def test_sigkilled_experiment_with_cross_batch_memory_resumes_to_exactly_the_uninterrupted_state(tmp_path):
  """`config.memory` on (K = 100 > the batch of 40, so the buffer wraps; in use from step 10), killed after a checkpoint
  at step >= 40: the resumed run's parameters, optimizer state, RNG and buffer equal an uninterrupted run's exactly."""
  import jax

  def cmd(workdir):
    return [sys.executable, "-m", "experiments.train", "--config", "experiments/configs/default.py", "--workdir",
            str(workdir), "--config.num_steps=160", "--config.checkpoint_every=20", "--config.eval_every=80",
            "--config.log_every=1", "--config.seeds=(0,)", "--config.progress=False", "--config.memory.size=100",
            "--config.memory.start_step=10"]

  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env.pop("XLA_FLAGS", None)
  killed = tmp_path / "killed"
  run_dir = killed / "seed_0"
  proc = subprocess.Popen(cmd(killed), cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  deadline = time.time() + 300
  try:
    while time.time() < deadline and not [s for s in _checkpoint_steps(run_dir) if s >= 40]:
      assert proc.poll() is None, "the run ended before it could be killed"
      time.sleep(0.1)
    os.kill(proc.pid, signal.SIGKILL)
  finally:
    proc.wait()
  killed_at = max(_checkpoint_steps(run_dir))
  assert 40 <= killed_at < 160
  used = {r["step"]: r["memory_used"] for r in _metrics(run_dir / "metrics.jsonl") if r["split"] == "train"}
  assert used[10] == 0 and used[killed_at] == 100   # the memory was full and in use before the kill

  resumed = subprocess.run(cmd(killed), cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert f"resuming from step {killed_at}" in resumed.stdout + resumed.stderr
  used = {r["step"]: r["memory_used"] for r in _metrics(run_dir / "metrics.jsonl") if r["split"] == "train"}
  assert sorted(used) == list(range(1, 161)) and used[killed_at + 1] == 100   # the restored buffer, in use at once
  full = subprocess.run(cmd(tmp_path / "full"), cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert full.returncode == 0, full.stderr[-3000:]

  a, b = train.restore(str(tmp_path / "full"))[2], train.restore(str(killed))[2]
  assert int(a.step) == int(b.step) == 160
  assert int(a.memory["next"]) == (160 * 40) % 100 and np.asarray(a.memory["valid"]).all()
  flat_a, tree_a = jax.tree_util.tree_flatten_with_path(a)
  flat_b, tree_b = jax.tree_util.tree_flatten_with_path(b)
  assert tree_a == tree_b and any("memory" in jax.tree_util.keystr(path) for path, _ in flat_a)
  for (path, x), (_, y) in zip(flat_a, flat_b):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=jax.tree_util.keystr(path))
  records = [json.load(open(d / "seed_0" / "record.json")) for d in (tmp_path / "full", killed)]
  assert records[0]["final"] == records[1]["final"]   # the same final evaluation, to the last digit

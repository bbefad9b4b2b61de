"""The training loop: a non-finite loss or gradient stops training at its step with the last good checkpoint kept;
a SIGKILLed experiment resumes from its last checkpoint (at most one interval lost), says so, and leaves no duplicate
records."""

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
         str(workdir), "--config.num_steps=400", "--config.checkpoint_every=20", "--config.log_every=1",
         "--config.eval_every=200", "--config.seeds=(0,)", "--config.progress=False"]
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
  assert train_steps == list(range(1, 401))  # no step twice, none missing
  assert [r["step"] for r in records if r["split"] == "test"] == [200, 400]
  # a third invocation finds the seed finished and evaluates nothing again
  again = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert again.returncode == 0 and "not redone" in again.stdout
  assert _metrics(run_log) == records

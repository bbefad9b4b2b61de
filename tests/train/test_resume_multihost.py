"""Exact resume after SIGKILL (with the cross-batch memory on: parameters AND buffer), and two processes x 2 CPU devices
== one process x 4 devices with a row-sharded registry loss (subprocesses, gloo)."""

import os
import signal
import subprocess
import sys
import time

import numpy as np

from tests._processes import free_port, run_together
from tests.conftest import REPO_ROOT

STEPS = 6
# The resume test trains with a registry loss and a cross-batch memory of 12 > 8 = the global batch, so the buffer
# wraps around during the run and the resumed run must continue from exactly the buffer of its checkpoint.
MEMORY = ("--loss", "contrastive", "--memory_size", 12)


def _env(devices=None):
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO_ROOT))
  env.pop("XLA_FLAGS", None)
  return env


def _worker(*args):
  return [sys.executable, "-m", "tests.train._worker", *map(str, args)]


def _run(args, timeout=240):
  proc = subprocess.run(_worker(*args), cwd=REPO_ROOT, env=_env(), capture_output=True, text=True, timeout=timeout)
  assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
  return proc


def _load(path):
  with np.load(path) as f:
    return {k: f[k] for k in f.files}


def _checkpoint_steps(workdir):
  root = os.path.join(workdir, "checkpoints")
  if not os.path.isdir(root):
    return []
  return sorted(int(d) for d in os.listdir(root) if d.isdigit())


def test_sigkilled_run_resumes_to_exactly_the_uninterrupted_parameters(tmp_path):
  full = tmp_path / "full.npz"
  _run(["--out", full, "--steps", STEPS, "--devices", 2, *MEMORY])

  workdir = tmp_path / "run"
  proc = subprocess.Popen(_worker("--out", tmp_path / "never.npz", "--steps", STEPS, "--devices", 2, "--workdir",
                                  workdir, "--checkpoint_every", 1, "--sleep", 1.0, *MEMORY),
                          cwd=REPO_ROOT, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  deadline = time.time() + 200
  try:
    while time.time() < deadline and not [s for s in _checkpoint_steps(workdir) if s >= 2]:
      assert proc.poll() is None, "the worker ended before it could be killed"
      time.sleep(0.2)
    assert [s for s in _checkpoint_steps(workdir) if s >= 2], "no checkpoint appeared in time"
    os.kill(proc.pid, signal.SIGKILL)
  finally:
    proc.wait(timeout=60)
  assert proc.returncode == -signal.SIGKILL
  killed_at = max(_checkpoint_steps(workdir))
  assert killed_at < STEPS

  resumed = tmp_path / "resumed.npz"
  _run(["--out", resumed, "--steps", STEPS, "--devices", 2, "--workdir", workdir, "--checkpoint_every", 1, *MEMORY])
  a, b = _load(full), _load(resumed)
  assert int(b.pop("start_step")) >= 2 and int(a.pop("start_step")) == 0
  assert a.keys() == b.keys()
  assert any(k.startswith("['memory']") for k in a), sorted(a)
  assert a["['memory']['valid']"].all() and int(a["['memory']['next']"]) == (STEPS * 8) % 12   # wrapped, full
  for k in a:
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_two_processes_with_two_devices_each_match_one_process_with_four(tmp_path):
  single = tmp_path / "single.npz"
  _run(["--out", single, "--steps", 3, "--devices", 4, "--loss", "multi_similarity"])
  port = free_port()
  outs = [tmp_path / f"multi{i}.npz" for i in range(2)]
  procs = run_together([_worker("--out", outs[i], "--steps", 3, "--devices", 2, "--coordinator", f"localhost:{port}",
                                "--num_processes", 2, "--process_id", i, "--loss", "multi_similarity")
                        for i in range(2)], _env(), timeout=240)
  for p in procs:
    assert p.returncode == 0, p.log[-4000:]
  assert not outs[1].exists()  # only process 0 writes
  a, b = _load(single), _load(outs[0])
  assert a.keys() == b.keys()
  for k in a:
    np.testing.assert_allclose(a[k], b[k], rtol=1e-5, atol=1e-5, err_msg=k)

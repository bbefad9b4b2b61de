"""Helpers for the tests that start several processes (multi-host `jax.distributed` over gloo on localhost)."""

from __future__ import annotations

import socket
import subprocess
from typing import Dict, List, Sequence

from tests.conftest import REPO_ROOT


def free_port() -> int:
  """A TCP port on localhost that is free now (for a `jax.distributed` coordinator)."""
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def run_together(commands: Sequence[Sequence[str]], env: Dict[str, str], timeout: float) -> List[subprocess.Popen]:
  """Starts every command at once (cwd: the repository root), waits for all and returns the finished processes with
  their combined output in `.log`; processes still running after `timeout` seconds (or after an error) are killed."""
  procs = [subprocess.Popen(list(map(str, cmd)), cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True) for cmd in commands]
  try:
    for p in procs:
      p.log = p.communicate(timeout=timeout)[0]
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  return procs

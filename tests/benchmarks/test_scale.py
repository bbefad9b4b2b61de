"""benchmarks/scale.py at tiny sizes: both parts run end to end through their child processes and write a results file
whose tables parse, with a row for every loss asked for. No timing is asserted (a shared 2-core machine)."""

import json
import subprocess
import sys

from benchmarks import _gpu_report
from tests.conftest import REPO_ROOT

LOSSES = ["contrastive", "proxy_anchor"]        # a pair loss and a loss with learnable parameters


def _run(tmp_path, *argv):
  out = tmp_path / "out.md"
  done = subprocess.run([sys.executable, "-m", "benchmarks.scale", *argv, "--batch", "64", "--dim", "8",
                         "--losses", ",".join(LOSSES), "--out", str(out)], cwd=REPO_ROOT, capture_output=True,
                        text=True, timeout=300)
  assert done.returncode == 0, done.stdout + done.stderr
  return out


def _table(out):
  text = out.read_text()
  (table,) = [t for t in _gpu_report.parse_tables(text) if t and "loss" in t[0]]
  return text, table


def test_devices_writes_per_device_memory_for_each_device_count(tmp_path):
  text, table = _table(_run(tmp_path, "devices", "--devices", "1,2"))
  assert [row["loss"] for row in table] == LOSSES
  for row in table:
    for column in ("before MiB", "n=1 MiB", "n=2 MiB", "n=2 / n=1", "× 1/n at n=2"):
      assert float(row[column]) > 0, (row, column)
    assert row["falls as 1/n"] in ("yes", "**no**"), row
  # XLA's memory analysis describes one device's program: its argument bytes are the local shard.
  assert "so the temp figures are per device and are not divided" in text
  assert "- Command: `python -m benchmarks.scale devices" in text and "## Summary" in text


def test_blocked_writes_time_rss_targets_and_pml(tmp_path):
  out = _run(tmp_path, "blocked", "--block-size", "16", "--repeats", "1", "--pml-timeout", "120",
             "--unblocked-batch", "32")
  text, table = _table(out)
  rows = {row["loss"]: row for row in table}
  assert set(LOSSES) <= set(rows)
  assert "*floor* `sum(E @ E.T)`" in rows and "*class floor* `sum(E @ W.T)`, W [16, D]" in rows
  for name in LOSSES:
    row = rows[name]
    for column in ("ms", "floor ms", "× floor", "peak RSS GiB", "compile s", "temp MiB",
                   "unblocked × floor at G=32"):
      assert float(row[column]) > 0, (row, column)
    assert row["≤ 3× floor"] in ("PASS", "**MISS**") and row["≤ RSS target"] in ("PASS", "**MISS**"), row
    assert float(row["PML ms or failure"]) > 0, row       # PML runs at this size
  assert "- Load: load averages" in text and "## Summary" in text
  # The run's record holds the raw results; the report renders again from it alone, identically.
  record = json.loads((tmp_path / "out.json").read_text())
  assert [r["name"] for r in record["rows"]] == LOSSES and record["args"]["block_size"] == 16
  out.unlink()
  done = subprocess.run([sys.executable, "-m", "benchmarks.scale", "blocked", "--from-record", "--out", str(out)],
                        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
  assert done.returncode == 0, done.stdout + done.stderr
  assert out.read_text() == text

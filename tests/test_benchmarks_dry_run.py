"""benchmarks/accelerator.sh and its report: the script's budget logic end to end, and gpu.md assembled from sections.

The full CPU dry run (`bash benchmarks/accelerator.sh --dry-run`, about two minutes on 2 cores) is too slow for the
suite; here the script runs with a budget too small for any section, so that every section is skipped with a note
and the report is still written (a few seconds, no JAX), and the report writer reads hand-made section files.
"""

import json
import os
import pathlib
import subprocess
import sys

import pytest

from benchmarks import _gpu_report

REPO = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "accelerator.sh"


def test_scripts_parse():
  for name in ("accelerator.sh", "fetch_wheels.sh"):
    subprocess.run(["bash", "-n", str(REPO / "benchmarks" / name)], check=True)


def test_dry_run_out_of_budget_skips_every_section_and_still_writes_the_report(tmp_path):
  results = REPO / "benchmarks" / "results" / "gpu.md"
  before = results.read_bytes() if results.exists() else None
  env = dict(os.environ, OUT=str(tmp_path), ACCELERATOR_BUDGET_S="5", PYTHON=sys.executable)
  done = subprocess.run(["bash", str(SCRIPT), "--dry-run"], env=env, cwd=REPO, capture_output=True, text=True,
                        timeout=120)
  assert done.returncode == 0, done.stdout + done.stderr
  text = (tmp_path / "gpu.md").read_text()
  assert "CPU dry run at tiny sizes" in text
  rows = [r for table in _gpu_report.parse_tables(text) for r in table if "section" in r]
  names = [r["section"] for r in rows]
  assert names == ["facts", "tests", "losses G=64", "losses G=128", "train", "knn N=2000", "knn N=4000",
                   "knn N=2000, default chunks"]
  assert all(r["note"].startswith("skipped:") for r in rows), rows
  assert (tmp_path / "log").read_text().count("skipped") == len(names)
  # A dry run never writes the committed GPU results.
  assert (results.read_bytes() if results.exists() else None) == before


LOSSES_MD = """# Loss benchmark

| loss | B | D | ms | floor ms | × floor | PML ms | speed-up over PML | compile s | temp MiB |
|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|
| *floor* `sum(E @ E.T)` | 1024 | 512 | 0.500 | 0.500 | 1.00 | — | — | 0.07 | 6.00 |
| contrastive | 1024 | 512 | 0.600 | 0.500 | 1.20 | 3.000 | 5.00 | 0.23 | 21.00 |
| triplet | 1024 | 512 | 2.000 | 0.500 | 4.00 | out of GPU memory | — | 1.20 | 93.02 |
| nca | 1024 | 512 | 0.800 | 0.500 | 1.60 | 1.600 | 2.00 | 0.40 | 13.07 |

## Targets
"""

TRAIN_MD = """# Train-step benchmark (GPU)

| case | dtype | input | batch | steps | compile (s) | step (ms) | step images/s | × float32 | data (ms) | data images/s | data share |
|---|---|---|---|---|---|---|---|---|---|---|---|
| ResNet-14 | float32 | 64x64x3 | 256 | 20 | 9.00 | 40.00 | 6400 | 1.00 | — | — | — |
| ResNet-14 | bfloat16 | 64x64x3 | 256 | 20 | 9.00 | 16.00 | 16000 | 2.50 | — | — | — |
"""

KNN_MD = """# Exact kNN

- Data: 1,000,000 x 128 float32, L2-normalized Gaussian clusters

| method | settings | first call s | median s | × torch | peak device MiB |
|---|---|---:|---:|---:|---:|
| torch `cuda` `q @ x.T` + `topk` | block=2048 | 6.00 | 5.00 | 1.00 | 9000 |
| metric_jax `knn` | chunk_size=2048 | 9.00 | 6.00 | 1.20 | 5000 |

Agreement: 3 of 1,000,000 rows have different neighbour sets; of the 3 checked, 0 are not explained by score ties.
"""

JUNIT = """<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest" errors="1" failures="1"
 skipped="2" tests="10" time="12.5"><testcase classname="tests.a" name="test_ok" time="1"/>
<testcase classname="tests.a" name="test_bad" time="1"><failure message="assert 1 == 2&#10;more">x</failure></testcase>
<testcase classname="tests.b" name="test_err" time="1"><error message="boom">y</error></testcase>
</testsuite></testsuites>"""


def test_report_reads_the_sections(tmp_path):
  (tmp_path / "facts.json").write_text(json.dumps({
      "date": "2026-01-01T00:00:00+00:00", "gpus": ["NVIDIA H100 80GB HBM3, 81559 MiB, 580.159.04"],
      "driver_cuda": "13.0", "jax_backend": "gpu", "jax_devices": ["gpu:NVIDIA H100 80GB HBM3"],
      "versions": {"jax": "0.11.2", "torch": "2.11.0"}}))
  (tmp_path / "sections.tsv").write_text("tests\t124\t120\t120\tstopped at its 120 s budget: results so far only\n"
                                         "knn\t—\t0\t80\tskipped: 3 s left of the 470 s total, needs at least 20 s\n")
  (tmp_path / "tests.xml").write_text(JUNIT)
  (tmp_path / "tests.collected").write_text("475\n")
  (tmp_path / "losses_1024.md").write_text(LOSSES_MD)
  (tmp_path / "train.md").write_text(TRAIN_MD)
  (tmp_path / "knn.md").write_text(KNN_MD)
  out = tmp_path / "gpu.md"
  _gpu_report.write(tmp_path, out, dry_run=False, command="bash benchmarks/accelerator.sh")
  text = out.read_text()
  assert "dry run" not in text
  assert "- GPU: NVIDIA H100 80GB HBM3, 81559 MiB, 580.159.04" in text
  # 10 run - 1 failure - 1 error - 2 skipped = 6 passed, of 475 selected.
  assert "6 passed, 1 failed, 1 errors, 2 skipped; 10 run of the 475 selected" in text
  assert "`tests.a::test_bad` (failure: assert 1 == 2)" in text
  # Ratios: 1.20, 4.00, 1.60 × floor; PML speed-ups 5.00 and 2.00 (median 3.50); triplet's PML failed.
  assert ("G = 1024, D = 512: floor 0.500 ms; metric_jax 1.20–4.00× the floor (largest: `triplet`), 2 of 3 within 3×;"
          " speed-up over PML on the same device 2.00–5.00× (median 3.50× over 2 losses);"
          " PML could not run: `triplet` (out of GPU memory).") in text
  assert "bfloat16 16.00 ms per step (16000 images/s), 2.50× the float32 step rate." in text
  assert "| knn | — | 0 | 80 | skipped: 3 s left" in text
  assert "- N x D = 1,000,000 x 128:" in text
  assert "  - metric_jax `knn` (chunk_size=2048): 6.00 s median, first call 9.00 s, 1.20× torch." in text
  assert "  - torch `cuda` `q @ x.T` + `topk` (block=2048): 5.00 s median, first call 6.00 s." in text
  assert "  - Agreement: 3 of 1,000,000 rows" in text
  assert "## Exact kNN, full N" in text
  assert "#### Targets" in text          # section files nest under the report's headings
  assert "run both cases on that one device" in text


@pytest.mark.parametrize("text, expected", [
    ("| a | b |\n|---|--:|\n| 1 | 2 |\n| 3 | 4 |\n\nprose\n| c |\n|---|\n| 5 |",
     [[{"a": "1", "b": "2"}, {"a": "3", "b": "4"}], [{"c": "5"}]]),
    ("| not a table |\nprose", []),
])
def test_parse_tables(text, expected):
  assert _gpu_report.parse_tables(text) == expected

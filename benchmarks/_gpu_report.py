"""Pieces of `benchmarks/accelerator.sh`: the machine facts it records, and the gpu.md it assembles from its sections.

  python -m benchmarks._gpu_report facts OUT.json
  python -m benchmarks._gpu_report write --work DIR --out gpu.md [--dry-run] [--command TEXT]

`facts` records the GPU (`nvidia-smi`), the driver and CUDA versions, the host CPU and the versions of python, jax (and
its CUDA plugin), flax, optax, torch (CUDA, cuDNN) and pytorch-metric-learning, as JSON. `write` reads what the
script's sections left in DIR (`facts.json`; `sections.tsv`: name, exit status, seconds, budget, note; `tests.xml`, the
JUnit report of pytest, and `tests.collected`; `losses_<G>.md`; `train.md`; `knn_small.md`, `knn.md`,
`knn_defaults.md`) and writes one Markdown file: the run's facts, a summary with the ratios, then every section's own
tables.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import pathlib
import platform
import re
import statistics
import subprocess
import sys
import xml.etree.ElementTree as ET
from typing import Dict, List, Optional

if __package__ in (None, ""):
  sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from benchmarks._machine import cpu_name  # noqa: E402

KNN_FILES = {"knn_small.md": "Exact kNN, smaller N", "knn.md": "Exact kNN, full N",
             "knn_defaults.md": "Exact kNN, the library's default chunk sizes"}
PACKAGES = ("jax", "jaxlib", "jax-cuda13-plugin", "jax-cuda12-plugin", "flax", "optax", "orbax-checkpoint", "torch",
            "pytorch-metric-learning", "faiss-cpu", "numpy", "pytest")


def _run(command: List[str]) -> Optional[str]:
  try:
    return subprocess.run(command, capture_output=True, text=True, timeout=30, check=True).stdout
  except (OSError, subprocess.SubprocessError):
    return None


def facts() -> Dict[str, object]:
  """What the report's header says about the machine and the software."""
  out: Dict[str, object] = {"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
                            "python": platform.python_version(), "platform": platform.platform(),
                            "cpu": cpu_name(), "cores": os.cpu_count()}
  gpus = _run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"])
  out["gpus"] = [line.strip() for line in gpus.splitlines() if line.strip()] if gpus else []
  smi = _run(["nvidia-smi"]) or ""
  match = re.search(r"CUDA Version:\s*([0-9.]+)", smi)
  out["driver_cuda"] = match.group(1) if match else None
  versions = {}
  for name in PACKAGES:
    try:
      versions[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      pass
  out["versions"] = versions
  try:
    import jax
    out["jax_backend"] = jax.default_backend()
    out["jax_devices"] = [f"{d.platform}:{d.device_kind}" for d in jax.devices()]
  except Exception as error:  # the report says why JAX could not start rather than failing
    out["jax_error"] = f"{type(error).__name__}: {error}"
  try:
    import torch
    out["torch_cuda"] = torch.version.cuda
    out["torch_cuda_available"] = torch.cuda.is_available()
    if torch.cuda.is_available():
      out["torch_device"] = torch.cuda.get_device_name(0)
      out["cudnn"] = torch.backends.cudnn.version()
  except Exception as error:
    out["torch_error"] = f"{type(error).__name__}: {error}"
  out["env"] = {k: os.environ[k] for k in ("JAX_PLATFORMS", "XLA_PYTHON_CLIENT_PREALLOCATE", "XLA_FLAGS")
                if k in os.environ}
  return out


def parse_tables(text: str) -> List[List[Dict[str, str]]]:
  """Every Markdown table of `text` as a list of rows, each a dict from header cell to cell text."""
  tables, block = [], []
  for line in text.splitlines() + [""]:
    if line.startswith("|"):
      block.append([cell.strip() for cell in line.strip().strip("|").split("|")])
      continue
    if len(block) >= 2 and set("".join(block[1])) <= set("-: "):
      header = block[0]
      tables.append([dict(zip(header, row)) for row in block[2:]])
    block = []
  return tables


def _number(cell: Optional[str]) -> Optional[float]:
  try:
    return float(cell.replace(",", "")) if cell is not None else None
  except ValueError:
    return None


def tests_summary(path: pathlib.Path) -> Dict[str, object]:
  """Counts and failing test ids of a pytest JUnit XML report."""
  root = ET.parse(path).getroot()
  suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
  counts = {key: sum(int(s.get(key, 0)) for s in suites) for key in ("tests", "failures", "errors", "skipped")}
  counts["time"] = sum(float(s.get("time", 0.0)) for s in suites)
  failed = []
  for case in root.iter("testcase"):
    for kind in ("failure", "error"):
      element = case.find(kind)
      if element is not None:
        message = (element.get("message") or "").splitlines()
        failed.append(f"`{case.get('classname')}::{case.get('name')}` ({kind}: {message[0][:160] if message else ''})")
  counts["failed_ids"] = failed
  counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
  return counts


def _demote(text: str, levels: int = 2) -> str:
  """Headings one or more levels down, so that a section file nests under the report's own headings."""
  return re.sub(r"^(#+) ", lambda m: "#" * min(6, len(m.group(1)) + levels) + " ", text, flags=re.M)


def _losses_summary(work: pathlib.Path) -> List[str]:
  lines = []
  for path in sorted(work.glob("losses_*.md"), key=lambda p: int(re.sub(r"\D", "", p.stem) or 0)):
    size = path.stem.split("_", 1)[1]
    rows = [r for table in parse_tables(path.read_text(encoding="utf-8")) for r in table
            if "× floor" in r and "loss" in r]
    dims = sorted({r["D"] for r in rows if r.get("D")})
    floor = next((r for r in rows if r["loss"].startswith("*floor*")), None)
    losses = [r for r in rows if not r["loss"].startswith("*")]
    ratios = [(r["loss"], _number(r.get("× floor"))) for r in losses]
    ratios = [(k, v) for k, v in ratios if v is not None]
    speedups = [(r["loss"], _number(r.get("speed-up over PML"))) for r in losses]
    speedups = [(k, v) for k, v in speedups if v is not None]
    pml_failed = [f"`{r['loss']}` ({r['PML ms']})" for r in losses if r.get("PML ms") and _number(r["PML ms"]) is None
                  and r["PML ms"] not in ("—", "")]
    errors = [r["loss"] for r in losses if r.get("ms", "").startswith("error")]
    text = f"- G = {size}, D = {'/'.join(dims) or '?'}:" + (f" floor {floor['ms']} ms" if floor else "")
    if ratios:
      worst = max(ratios, key=lambda kv: kv[1])
      text += (f"; metric_jax {min(v for _, v in ratios):.2f}–{worst[1]:.2f}× the floor (largest: `{worst[0]}`),"
               f" {sum(v <= 3 for _, v in ratios)} of {len(ratios)} within 3×")
    if speedups:
      text += (f"; speed-up over PML on the same device {min(v for _, v in speedups):.2f}–"
               f"{max(v for _, v in speedups):.2f}× (median {statistics.median(v for _, v in speedups):.2f}× over"
               f" {len(speedups)} loss{'es' if len(speedups) > 1 else ''})")
    if pml_failed:
      text += "; PML could not run: " + ", ".join(pml_failed)
    if errors:
      text += "; metric_jax failed: " + ", ".join(f"`{e}`" for e in errors)
    lines.append(text + ".")
  return lines


def _train_summary(work: pathlib.Path) -> List[str]:
  path = work / "train.md"
  if not path.exists():
    return []
  lines = []
  for table in parse_tables(path.read_text(encoding="utf-8")):
    for r in table:
      if r.get("dtype") == "bfloat16":
        lines.append(f"- {r.get('case')}, batch {r.get('batch')}: bfloat16 {r.get('step (ms)')} ms per step"
                     f" ({r.get('step images/s')} images/s), {r.get('× float32')}× the float32 step rate.")
      elif r.get("dtype") == "float32":
        lines.append(f"- {r.get('case')}, batch {r.get('batch')}: float32 {r.get('step (ms)')} ms per step"
                     f" ({r.get('step images/s')} images/s).")
  return lines


def _knn_summary(work: pathlib.Path) -> List[str]:
  lines = []
  for name in KNN_FILES:
    path = work / name
    if not path.exists():
      continue
    text = path.read_text(encoding="utf-8")
    size = re.search(r"^- Data: ([0-9,]+ x [0-9]+)", text, flags=re.M)
    lines.append(f"- N x D = {size.group(1) if size else '?'}:")
    for table in parse_tables(text):
      for r in table:
        if "method" in r:
          ratio = (f", {r['× torch']}× torch" if r.get("× torch") not in (None, "—")
                   and not r["method"].startswith("torch") else "")
          lines.append(f"  - {r['method']} ({r.get('settings')}): {r.get('median s')} s median, first call"
                       f" {r.get('first call s')} s{ratio}.")
    agreement = re.search(r"^Agreement: .*$", text, flags=re.M)
    if agreement:
      lines.append(f"  - {agreement.group(0)}")
  return lines


def write(work: pathlib.Path, out: pathlib.Path, dry_run: bool, command: str) -> None:
  info = json.loads((work / "facts.json").read_text()) if (work / "facts.json").exists() else {}
  versions = info.get("versions", {})
  title = "# metric_jax on an accelerator (issue 11.6)"
  lines = [title, ""]
  if dry_run:
    lines += ["**CPU dry run at tiny sizes: a check of the script, NOT GPU results.**", ""]
  lines.append("Written by `benchmarks/accelerator.sh` (sections: the GPU tests, the loss benchmark next to"
               " pytorch-metric-learning on the same device, train steps float32 vs bfloat16, exact kNN next to"
               " `torch.topk`); every number below comes from this run.")
  lines.append("")
  lines.append(f"- Command: `{command}`")
  lines.append(f"- Date: {info.get('date', datetime.datetime.now().astimezone().isoformat(timespec='seconds'))}")
  gpus = info.get("gpus") or []
  lines.append(f"- GPU: {'; '.join(gpus) if gpus else 'none seen by nvidia-smi'} (name, memory, driver);"
               f" CUDA {info.get('driver_cuda') or '—'} (driver), torch built for CUDA {info.get('torch_cuda') or '—'},"
               f" cuDNN {info.get('cudnn') or '—'}")
  lines.append(f"- JAX backend: {info.get('jax_backend', '—')}, devices {info.get('jax_devices', '—')}"
               + (f"; JAX error: {info['jax_error']}" if "jax_error" in info else ""))
  lines.append(f"- Host: {info.get('cpu', '—')}, {info.get('cores', '—')} logical cores; {info.get('platform', '—')}")
  lines.append(f"- Versions: python {info.get('python', '—')}, "
               + ", ".join(f"{k} {v}" for k, v in versions.items()))
  lines.append(f"- Environment: {', '.join(f'{k}={v}' for k, v in info.get('env', {}).items()) or '—'}"
               " (no preallocation, so that JAX and torch share the device)")
  lines.append("- Precision of float32 matrix products: the tests and the loss benchmark run with"
               " `JAX_DEFAULT_MATMUL_PRECISION=highest` (true float32, like torch's default `allow_tf32=False`; JAX's"
               " own default lets XLA use TF32 on the tensor cores); the train step's float32 rows use JAX's default"
               " (TF32 allowed), its bfloat16 rows a bfloat16 backbone; the kNN asks for `Precision.HIGHEST` in"
               " metric_jax and turns TF32 off in torch.")
  lines.append("")
  sections = []
  if (work / "sections.tsv").exists():
    for line in (work / "sections.tsv").read_text().splitlines():
      parts = line.split("\t")
      if len(parts) >= 5:
        sections.append(parts[:5])
  if sections:
    lines += ["| section | exit status | seconds | budget s | note |", "|---|---:|---:|---:|---|"]
    lines += [f"| {n} | {rc} | {s} | {b} | {note} |" for n, rc, s, b, note in sections]
    lines.append("")

  lines += ["## Summary", ""]
  tests = None
  if (work / "tests.xml").exists():
    try:
      tests = tests_summary(work / "tests.xml")
    except ET.ParseError as error:
      lines.append(f"- Tests: the JUnit report could not be read ({error}).")
  collected = None
  if (work / "tests.collected").exists():
    collected = int((work / "tests.collected").read_text().split()[0])
  if tests is not None:
    tests["of"] = f" of the {collected} selected" if collected is not None and collected != tests["tests"] else ""
    lines.append(f"- Tests on the device: {tests['passed']} passed, {tests['failures']} failed, {tests['errors']} errors,"
                 f" {tests['skipped']} skipped; {tests['tests']} run{tests['of']} ({tests['time']:.0f} s).")
  elif not (work / "tests.xml").exists():
    lines.append("- Tests: no report (see the section table).")
  loss_lines = _losses_summary(work)
  lines += ["- Losses (value and gradient w.r.t. the embeddings, and the parameters where a loss has some):"] + ["  " + l for l in loss_lines] if loss_lines else \
      ["- Losses: no results (see the section table)."]
  train_lines = _train_summary(work)
  lines += ["- Train steps:"] + ["  " + l for l in train_lines] if train_lines else \
      ["- Train steps: no results (see the section table)."]
  knn_lines = _knn_summary(work)
  lines += ["- Exact kNN:"] + ["  " + l for l in knn_lines] if knn_lines else ["- Exact kNN: no results."]
  lines.append("")

  lines += ["## Tests", ""]
  if (work / "tests.cmd").exists():
    lines += [f"Command: `{(work / 'tests.cmd').read_text().strip()}`", ""]
  if tests is not None:
    lines.append(f"{tests['passed']} passed, {tests['failures']} failed, {tests['errors']} errors, {tests['skipped']}"
                 f" skipped; {tests['tests']} run{tests['of']}." + (
                     " With one GPU, `jax.devices()[:4]` holds one device, so the tests that compare 1 and 4 devices"
                     " run both cases on that one device." if info.get("jax_backend") == "gpu" and len(info.get("jax_devices", [])) == 1
                     else ""))
    if tests["failed_ids"]:
      lines += ["", "Failed:", ""] + [f"- {t}" for t in tests["failed_ids"][:40]]
      if len(tests["failed_ids"]) > 40:
        lines.append(f"- … and {len(tests['failed_ids']) - 40} more (see the log)")
    lines.append("")
  for path in sorted(work.glob("losses_*.md"), key=lambda p: int(re.sub(r"\D", "", p.stem) or 0)):
    lines += [f"## Losses, G = {path.stem.split('_', 1)[1]}", "", _demote(path.read_text(encoding='utf-8')).strip(), ""]
  for name, heading in (("train.md", "Train steps"), *KNN_FILES.items()):
    if (work / name).exists():
      lines += [f"## {heading}", "", _demote((work / name).read_text(encoding="utf-8")).strip(), ""]
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text("\n".join(lines) + "\n", encoding="utf-8")


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  sub = parser.add_subparsers(dest="what", required=True)
  p_facts = sub.add_parser("facts")
  p_facts.add_argument("out")
  p_write = sub.add_parser("write")
  p_write.add_argument("--work", required=True)
  p_write.add_argument("--out", required=True)
  p_write.add_argument("--dry-run", action="store_true")
  p_write.add_argument("--command", default="bash benchmarks/accelerator.sh")
  args = parser.parse_args(argv)
  if args.what == "facts":
    info = facts()
    pathlib.Path(args.out).write_text(json.dumps(info, indent=1))
    print(json.dumps(info, indent=1))
    if "jax_error" in info:
      return 1
    return 0
  write(pathlib.Path(args.work), pathlib.Path(args.out), args.dry_run, args.command)
  print(f"wrote {args.out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())

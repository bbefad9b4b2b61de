"""Train-step benchmark: throughput (images/s) and compile time of the SPMD step, float32 or bfloat16, and where time goes.

  python benchmarks/train.py            (or: python -m benchmarks.train)   [--steps 20] [--devices 1]
      [--cases lenet28,resnet28,resnet64] [--dtype float32[,bfloat16]] [--out benchmarks/results/train.md]

JAX runs on the CPU unless `JAX_PLATFORMS` says otherwise (`JAX_PLATFORMS=cuda` on a GPU machine).

Cases (`--cases`, see CASES): LeNet on MNIST-size inputs (28x28x1, batch 128), the small ResNet on Omniglot-size inputs
(28x28x1 and 64x64x1, batch 64), for accelerators a ResNet-14 (widths 64-128-256, two basic blocks per stage) on
64x64x3 inputs at batch 256, and a tiny ResNet for dry runs; each step is the multi-similarity loss on the global batch
with BatchNorm synchronised. `--dtype bfloat16` is `config.model.dtype = "bfloat16"`: the backbone computes in bfloat16,
parameters, optimizer state, heads, embeddings and loss stay float32. Data loading is measured separately: a
`BatchLoader` with a PK sampler and the default uint8 -> float transform produces the same batches on the host (where
`metric_jax.data` cannot be imported, e.g. without tensorflow-datasets, the same PK batch is built with numpy and the
data columns are left empty). Writes `--out` with the command, machine and versions.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import platform
import sys
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
  sys.path.insert(0, str(ROOT))
os.environ.setdefault("JAX_PLATFORMS", "cpu")

# name -> (label, backbone kind, input shape, batch, steps divisor). Backbone kinds are built in `_backbone`.
CASES = {
    "lenet28": ("LeNet (S0), MNIST size", "lenet", (28, 28, 1), 128, 1),
    "resnet28": ("SmallResNet, Omniglot 28px", "small_resnet", (28, 28, 1), 64, 1),
    "resnet64": ("SmallResNet, Omniglot 64px", "small_resnet", (64, 64, 1), 64, 4),
    "resnet14_64": ("ResNet-14 (64-128-256, 2 blocks per stage), 64px RGB", "resnet14", (64, 64, 3), 256, 1),
    "tiny": ("tiny ResNet (8-16), dry run", "tiny_resnet", (16, 16, 1), 16, 1),
}
DEFAULT_CASES = "lenet28,resnet28,resnet64"
DTYPES = ("float32", "bfloat16")


def _backbone(kind, shape, dtype):
  """The backbone of a case, computing in `dtype` (None: float32)."""
  from flax import nnx
  from metric_jax import models
  if kind == "lenet":
    return models.LeNet(shape, None, dtype=dtype, rngs=nnx.Rngs(0))
  if kind == "small_resnet":
    return models.SmallResNet(shape, dtype=dtype, rngs=nnx.Rngs(0))
  if kind == "resnet14":
    return models.SmallResNet(shape, widths=(64, 128, 256), blocks_per_stage=2, dtype=dtype, rngs=nnx.Rngs(0))
  if kind == "tiny_resnet":
    return models.SmallResNet(shape, widths=(8, 16), dtype=dtype, rngs=nnx.Rngs(0))
  raise ValueError(f"unknown backbone kind {kind!r}")


def _numpy_pk_batch(rng, images, labels, batch):
  """A PK batch (batch / 4 classes x 4 images) as `BatchLoader` makes it: float32 images in [0, 1], labels, valid."""
  classes = rng.choice(np.unique(labels), batch // 4, replace=False)
  idx = np.concatenate([rng.choice(np.nonzero(labels == c)[0], 4, replace=False) for c in classes])
  return {"image": images[idx].astype(np.float32) * np.float32(1 / 255), "label": labels[idx],
          "valid": np.ones(batch, bool)}


def _case(name, steps, devices, dtype_name):
  import jax
  import jax.numpy as jnp
  from flax import nnx
  from metric_jax import models, train

  label, kind, shape, batch, divisor = CASES[name]
  steps = max(3, steps // divisor)
  dtype = jnp.bfloat16 if dtype_name == "bfloat16" else None
  model = models.Embedder(_backbone(kind, shape, dtype), shape, 64, rngs=nnx.Rngs(1))
  _, params, _ = train.split_model(model)
  tx = train.make_optimizer({"model": params, "loss": {}}, optimizer="adam", learning_rate=1e-4)
  trainer = train.Trainer(model, train.metric_objective("multi_similarity"), tx,
                          mesh=train.make_mesh(jax.devices()[:devices]))
  state = trainer.init_state(seed=0)
  rng = np.random.default_rng(0)
  num_classes, per_class = max(32, batch // 4), 20
  images = rng.integers(0, 256, size=(num_classes * per_class,) + shape, dtype=np.uint8)
  labels = np.repeat(np.arange(num_classes), per_class).astype(np.int32)

  data_s, data_note = None, ""
  try:
    from metric_jax import data
  except ImportError as error:  # no tensorflow-datasets: time the step on a numpy PK batch
    b = _numpy_pk_batch(rng, images, labels, batch)
    data_note = f"metric_jax.data unavailable ({type(error).__name__}: {error})"
  else:
    sampler = data.PKSampler(labels, batch // 4, 4, seed=0)
    loader = data.BatchLoader(images, labels, sampler, prefetch=0)
    t = time.perf_counter()
    for _ in range(steps):
      b = next(loader)
    data_s = (time.perf_counter() - t) / steps
    loader.close()

  sharded = trainer.shard_batch(b)
  t = time.perf_counter()
  compiled = trainer.train_step.lower(state, sharded).compile()
  compile_s = time.perf_counter() - t
  state, m = compiled(state, sharded)  # warm-up
  jax.block_until_ready(m["loss"])
  times = []
  for _ in range(steps):
    t = time.perf_counter()
    state, m = compiled(state, trainer.shard_batch(b))
    jax.block_until_ready(m["loss"])
    times.append(time.perf_counter() - t)
  step_s = float(np.median(times))
  loss = float(m["loss"])
  return {"name": name, "case": label, "dtype": dtype_name, "shape": "x".join(map(str, shape)), "batch": batch,
          "devices": devices, "steps": steps, "compile_s": compile_s, "step_ms": 1e3 * step_s,
          "step_img_s": batch / step_s, "data_ms": None if data_s is None else 1e3 * data_s,
          "data_img_s": None if data_s is None else batch / data_s,
          "data_share": None if data_s is None else data_s / (data_s + step_s), "loss": loss, "data_note": data_note}


def _fmt(value, spec):
  return "—" if value is None else format(value, spec)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--steps", type=int, default=20)
  parser.add_argument("--devices", type=int, default=1)
  parser.add_argument("--cases", default=DEFAULT_CASES, help=f"comma-separated, from {', '.join(CASES)}")
  parser.add_argument("--dtype", default="float32", help=f"comma-separated backbone compute dtypes: {', '.join(DTYPES)}")
  parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "train.md"))
  args = parser.parse_args(argv)
  cases = [c for c in args.cases.split(",") if c]
  dtypes = [d for d in args.dtype.split(",") if d]
  if not cases or any(c not in CASES for c in cases):
    parser.error(f"--cases must name some of {', '.join(CASES)}, got {args.cases!r}")
  if not dtypes or any(d not in DTYPES for d in dtypes):
    parser.error(f"--dtype must name some of {', '.join(DTYPES)}, got {args.dtype!r}")
  import jax
  if args.devices > 1:
    jax.config.update("jax_num_cpu_devices", args.devices)
  import flax
  import optax

  rows = []
  for name in cases:
    for dtype_name in dtypes:
      rows.append(_case(name, args.steps, args.devices, dtype_name))
      r = rows[-1]
      print(f"  {r['case']} {r['dtype']}: compile {r['compile_s']:.2f} s, step {r['step_ms']:.2f} ms", flush=True)
      text = _report(rows, argv, jax, flax, optax)
      os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
      with open(args.out, "w") as f:  # after every case, so that a run stopped early keeps what it measured
        f.write(text)
  print(text)


def _report(rows, argv, jax, flax, optax) -> str:
  """The Markdown results file for the cases measured so far."""
  backend = jax.default_backend()
  device = jax.devices()[0].device_kind
  command = "python benchmarks/train.py " + " ".join(argv if argv is not None else sys.argv[1:])
  noisy = ("The cores are shared with other processes, so the figures are noisy (expect +-30%)." if backend == "cpu"
           else "")
  lines = [
      f"# Train-step benchmark ({backend.upper() if backend != 'cpu' else 'CPU'})", "",
      f"Command: `{command.strip()}`", "",
      f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores ({platform.processor() or 'cpu'}), "
      f"{jax.device_count()} JAX device(s) on backend `{backend}` ({device}). {noisy}".rstrip(), "",
      f"Versions: python {platform.python_version()}, jax {jax.__version__}, flax {flax.__version__}, "
      f"optax {optax.__version__}.", "",
      "Step: one jitted `shard_map` train step (forward, all_gather, multi-similarity loss on the global batch, "
      "backward, psum, Adam update), median over steps after one warm-up, the batch copied to the device inside each "
      "step. `dtype` is the backbone's computation dtype (`config.model.dtype`); parameters, optimizer state, heads and "
      "loss are float32 either way. Data: host-side `BatchLoader` batch (PK sampler, uint8 gather, float conversion) "
      "without prefetching; with the loader's background prefetch thread it overlaps the step, so the data share is "
      "the cost if it did not.", "",
      "| case | dtype | input | batch | steps | compile (s) | step (ms) | step images/s | × float32 | data (ms) "
      "| data images/s | data share |",
      "|---|---|---|---|---|---|---|---|---|---|---|---|",
  ]
  for r in rows:
    base = next((b for b in rows if b["name"] == r["name"] and b["dtype"] == "float32"), None)
    speedup = base["step_ms"] / r["step_ms"] if base is not None else None
    share = None if r["data_share"] is None else 100 * r["data_share"]
    lines.append(f"| {r['case']} | {r['dtype']} | {r['shape']} | {r['batch']} | {r['steps']} | {r['compile_s']:.2f} | "
                 f"{r['step_ms']:.2f} | {r['step_img_s']:.0f} | {_fmt(speedup, '.2f')} | {_fmt(r['data_ms'], '.2f')} | "
                 f"{_fmt(r['data_img_s'], '.0f')} | {_fmt(share, '.1f')}{'' if share is None else '%'} |")
  notes = sorted({r["data_note"] for r in rows if r["data_note"]})
  if notes:
    lines += ["", "Data columns empty: " + "; ".join(notes) + "."]
  return "\n".join(lines) + "\n"


if __name__ == "__main__":
  main()

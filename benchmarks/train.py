"""Train-step benchmark: throughput (images/s) and compile time of the SPMD step on the CPU, and where time goes.

  python benchmarks/train.py            (or: python -m benchmarks.train)   [--steps 20] [--devices 1]

Cases: LeNet on MNIST-size inputs (28x28x1, batch 128, multi-similarity loss) and the small ResNet on
Omniglot-size inputs (28x28x1 and 64x64x1, batch 64, BatchNorm synchronised). Data loading is measured separately: a
`BatchLoader` with a PK sampler and the default uint8 -> float transform produces the same batches on the host.
Writes benchmarks/results/train.md with the command, machine and versions.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import platform
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
  sys.path.insert(0, str(ROOT))
os.environ.setdefault("JAX_PLATFORMS", "cpu")


def _case(name, make_backbone, shape, batch, steps, devices):
  import jax
  import numpy as np
  from flax import nnx
  from metric_jax import data, models, train

  model = models.Embedder(make_backbone(shape), shape, 64, rngs=nnx.Rngs(1))
  _, params, _ = train.split_model(model)
  tx = train.make_optimizer({"model": params, "loss": {}}, optimizer="adam", learning_rate=1e-4)
  trainer = train.Trainer(model, train.metric_objective("multi_similarity"), tx,
                          mesh=train.make_mesh(jax.devices()[:devices]))
  state = trainer.init_state(seed=0)
  rng = np.random.default_rng(0)
  num_classes, per_class = 32, 20
  images = rng.integers(0, 256, size=(num_classes * per_class,) + shape, dtype=np.uint8)
  labels = np.repeat(np.arange(num_classes), per_class).astype(np.int32)
  sampler = data.PKSampler(labels, batch // 4, 4, seed=0)
  loader = data.BatchLoader(images, labels, sampler, prefetch=0)

  t = time.perf_counter()
  for _ in range(steps):
    b = next(loader)
  data_s = (time.perf_counter() - t) / steps

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
  loader.close()
  return {"case": name, "shape": "x".join(map(str, shape)), "batch": batch, "devices": devices,
          "compile_s": compile_s, "step_ms": 1e3 * step_s, "step_img_s": batch / step_s, "data_ms": 1e3 * data_s,
          "data_img_s": batch / data_s, "data_share": data_s / (data_s + step_s)}


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--steps", type=int, default=20)
  parser.add_argument("--devices", type=int, default=1)
  parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "train.md"))
  args = parser.parse_args(argv)
  import jax
  if args.devices > 1:
    jax.config.update("jax_num_cpu_devices", args.devices)
  import flax
  import optax
  from flax import nnx
  from metric_jax import models

  lenet = lambda s: models.LeNet(s, None, rngs=nnx.Rngs(0))
  resnet = lambda s: models.SmallResNet(s, rngs=nnx.Rngs(0))
  rows = [
      _case("LeNet (S0), MNIST size", lenet, (28, 28, 1), 128, args.steps, args.devices),
      _case("SmallResNet, Omniglot 28px", resnet, (28, 28, 1), 64, args.steps, args.devices),
      _case("SmallResNet, Omniglot 64px", resnet, (64, 64, 1), 64, max(3, args.steps // 4), args.devices),
  ]
  command = "python benchmarks/train.py " + " ".join(argv if argv is not None else sys.argv[1:])
  lines = [
      "# Train-step benchmark (CPU)", "",
      f"Command: `{command.strip()}`", "",
      f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores ({platform.processor() or 'cpu'}), "
      f"{jax.device_count()} JAX device(s) on backend `{jax.default_backend()}`. The cores are shared with other "
      f"processes, so the figures are noisy (expect +-30%).", "",
      f"Versions: python {platform.python_version()}, jax {jax.__version__}, flax {flax.__version__}, "
      f"optax {optax.__version__}.", "",
      "Step: one jitted `shard_map` train step (forward, all_gather, multi-similarity loss on the global batch, "
      "backward, psum, Adam update), median over steps after one warm-up. Data: host-side `BatchLoader` batch "
      "(PK sampler, uint8 gather, float conversion) without prefetching; with the loader's background prefetch thread "
      "it overlaps the step, so the data share is the cost if it did not.", "",
      "| case | input | batch | compile (s) | step (ms) | step images/s | data (ms) | data images/s | data share |",
      "|---|---|---|---|---|---|---|---|---|",
  ]
  for r in rows:
    lines.append(f"| {r['case']} | {r['shape']} | {r['batch']} | {r['compile_s']:.2f} | {r['step_ms']:.1f} | "
                 f"{r['step_img_s']:.0f} | {r['data_ms']:.2f} | {r['data_img_s']:.0f} | {100 * r['data_share']:.1f}% |")
  text = "\n".join(lines) + "\n"
  os.makedirs(os.path.dirname(args.out), exist_ok=True)
  with open(args.out, "w") as f:
    f.write(text)
  print(text)


if __name__ == "__main__":
  main()

"""One entry point for every experiment.

  python -m experiments.train --config experiments/configs/<name>.py --workdir runs/<name> [--config.key=value ...]

Loads the config's dataset split, builds the model / objective / optimizer, evaluates the untrained network once, trains
with `metric_jax.train.fit` (progress bar, metrics.jsonl + TensorBoard, periodic evaluation on the held-out split,
checkpoints with resume on restart), and writes into the workdir: `results.md` (command, config, seed, untrained vs
final metrics), `results.json`, `loss.png` (loss curve) and `embedding.png` (2-D PCA of the test embeddings).
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import sys
import time
from typing import Dict, Optional

from absl import app, flags, logging as absl_logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "ml_collections config file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (checkpoints, metrics, results, plots).")
_RESULTS_DIR = flags.DEFINE_string(
    "results_dir", None, "If set, also write the summary table `<name>.md` and the first seed's plots "
    "`<name>_loss.png`, `<name>_embedding.png` there (e.g. experiments/results).")


# -- data ------------------------------------------------------------------------------------------------------------

def load_data(c):
  """`(train, test)` ArraySplits: class-disjoint retrieval split or the S0 limited-data split."""
  from metric_jax import data
  kw = dict(data_dir=c.data_dir or None, manual_dir=c.manual_dir or None)
  if c.split == "retrieval":
    return data.retrieval_split(c.dataset, protocol=c.protocol or None, **kw)
  if c.split == "limited":
    return data.limited_data_split(c.dataset, c.samples_per_class, seed=c.seed, **kw)
  raise ValueError(f"`config.split` must be 'retrieval' or 'limited', got {c.split!r}.")


def make_transforms(c, train_images):
  """`(train_transform, test_transform)` for `BatchLoader` / evaluation, fitted on the training images."""
  from metric_jax.data import preprocessing as pp
  kind = c.preprocess.kind
  if kind == "float":
    t = pp.make_transform()
    return t, t
  if kind == "shift":  # random translation by up to `crop_padding` pixels (zero padding), no flip
    return (pp.make_transform(random_crop_to=train_images.shape[1:3], crop_padding=c.preprocess.crop_padding),
            pp.make_transform())
  if kind == "standardize":
    mean, std = pp.channel_stats(train_images)
    t = pp.make_transform(mean=mean, std=std)
    return t, t
  if kind == "flip":
    mean, std = pp.channel_stats(train_images)
    return pp.make_transform(flip=True, mean=mean, std=std), pp.make_transform(mean=mean, std=std)
  if kind == "lcn":  # SVHN (S0): 28x28 centre crop, local contrast normalization
    t = pp.make_transform(center_crop_to=(28, 28), lcn=True)
    return t, t
  if kind == "gcn_zca":  # CIFAR-10 (S0): global contrast normalization + ZCA whitening
    zca = pp.fit_zca(pp.global_contrast_normalize(pp.to_float(train_images)), eps=0.1)
    t = pp.make_transform(gcn=True, zca=zca)
    return t, t
  raise ValueError(f"`config.preprocess.kind` must be float | shift | standardize | flip | lcn | gcn_zca, got {kind!r}.")


def make_sampler(c, labels, process_index: int, process_count: int):
  from metric_jax import data
  kw = dict(seed=c.seed, process_index=process_index, process_count=process_count)
  if c.sampler == "pk":
    return data.PKSampler(labels, c.classes_per_batch, c.samples_per_class_batch, **kw)
  if c.sampler == "npair":
    return data.NPairSampler(labels, c.classes_per_batch, **kw)
  if c.sampler == "pair":
    return data.PairSampler(labels, c.batch_size, **kw)
  if c.sampler == "random":
    return data.RandomSampler(len(labels), c.batch_size, **kw)
  if c.sampler == "class_accumulating":
    return data.ClassAccumulatingSampler(labels, c.batch_size, **kw)
  raise ValueError(f"`config.sampler` must be pk | npair | pair | random | class_accumulating, got {c.sampler!r}.")


# -- model, objective, optimizer ---------------------------------------------------------------------------------------

def build_model(c, input_shape, num_classes: int):
  from flax import nnx
  from metric_jax import models
  m = c.model
  rngs = nnx.Rngs(c.seed)
  num_outputs = m.num_outputs or None
  if m.backbone == "lenet":
    backbone = models.LeNet(input_shape, num_outputs, channels=tuple(m.lenet_channels), hidden=m.lenet_hidden,
                            kernel_size=m.lenet_kernel, padding=m.padding, rngs=rngs)
  elif m.backbone == "svhn":
    backbone = models.SVHNNet(input_shape, num_outputs or 10, rngs=rngs)
  elif m.backbone == "cifar":
    backbone = models.CifarNet(input_shape, num_outputs or 10, rngs=rngs)
  elif m.backbone == "resnet":
    backbone = models.SmallResNet(input_shape, widths=tuple(m.resnet_widths), blocks_per_stage=m.resnet_blocks,
                                  rngs=rngs)
  else:
    raise ValueError(f"`config.model.backbone` must be lenet | svhn | cifar | resnet, got {m.backbone!r}.")
  if m.two_channel:
    return models.TwoChannelNet(backbone, input_shape, num_classes, feature_layer=m.feature_layer or None,
                                classifier_layer=m.classifier_layer or None, rngs=rngs)
  return models.Embedder(backbone, input_shape, m.embedding_dim, layers=tuple(m.layers) or None,
                         normalize=m.normalize, rngs=rngs)


def build_objective(c):
  from metric_jax import train
  o = c.objective
  if o.kind == "metric":
    return train.metric_objective(o.loss, loss_hparams=o.loss_hparams.to_dict(),
                                  density_adaptivity_weight=o.density_adaptivity_weight,
                                  density_adaptivity_eta=o.density_adaptivity_eta,
                                  global_orthogonal_weight=o.global_orthogonal_weight,
                                  embedding_l2_weight=o.embedding_l2_weight)
  return train.pair_objective(o.kind, margin=o.pair_margin, b=o.pair_b, lam=o.pair_lambda)


def build_optimizer(c, model):
  from metric_jax import train
  _, params, _ = train.split_model(model)
  o = c.optimizer
  trainable = {"model": params, "loss": _loss_param_template(c, 1)}
  return train.make_optimizer(
      trainable, optimizer=o.name, learning_rate=o.learning_rate, schedule=o.schedule, total_steps=c.num_steps,
      warmup_steps=o.warmup_steps, momentum=o.momentum, weight_decay=o.weight_decay,
      new_layer_lr_multiplier=o.new_layer_lr_multiplier, freeze_backbone_steps=o.freeze_backbone_steps,
      loss_lr_multiplier=o.loss_lr_multiplier, frozen_bn=o.frozen_bn)


def _loss_param_template(c, num_classes):
  from metric_jax import train
  return train.init_loss_params(num_classes, density_adaptivity=c.objective.kind == "metric"
                                and c.objective.density_adaptivity_weight > 0)


# -- evaluation and artefacts ------------------------------------------------------------------------------------------

def embed_all(trainer, state, images, batch_size: int, key: str = "embedding"):
  """Embeddings `[N, D]` of float images in fixed-size (padded) batches: one compilation for the whole run."""
  import numpy as np
  fn = trainer.embed_fn(state, key)
  out = []
  for start in range(0, len(images), batch_size):
    chunk = images[start:start + batch_size]
    n = len(chunk)
    if n < batch_size:
      chunk = np.concatenate([chunk, np.zeros((batch_size - n,) + chunk.shape[1:], chunk.dtype)])
    out.append(fn(chunk)[:n])
  return np.concatenate(out)


def evaluate_state(c, trainer, state, test_x, test_y, train_x=None, train_y=None) -> Dict[str, float]:
  from metric_jax import evaluation
  batch = min(c.eval_batch_size, len(test_x))
  emb = embed_all(trainer, state, test_x, batch)
  groups = tuple(c.eval_metrics)
  if "classification" in groups:
    ref = embed_all(trainer, state, train_x, batch)
    out = evaluation.evaluate(emb, test_y, ref, train_y, ks=tuple(c.ks), metrics=groups, seed=c.seed)
    if c.model.two_channel:  # S0: the network's own softmax classifier W1 on the test images
      out["softmax_accuracy"] = evaluation.softmax_accuracy(softmax_logits(trainer, state, test_x, batch, emb), test_y)
    return out
  return evaluation.evaluate(emb, test_y, ks=tuple(c.ks), metrics=groups, seed=c.seed)


def softmax_logits(trainer, state, images, batch_size: int, features=None):
  """Logits `[N, C]` of a `TwoChannelNet`'s classifier W1 on `images` (inference mode).

  `features`: the images' `embedding` output, reused as the classifier inputs when both read the same layer."""
  import jax.numpy as jnp
  import numpy as np
  model = trainer.model(state)
  if features is None or model.classifier_layer != model.feature_layer:
    features = embed_all(trainer, state, images, batch_size, key="classifier_inputs")
  return np.asarray(model.logits(jnp.asarray(features), 0))


def _fmt(v):
  return f"{v:.4f}" if isinstance(v, float) else str(v)


def write_results(workdir, c, command, baseline, final, summary, extra) -> str:
  keys = [k for k in final if k in baseline]
  lines = [f"# Results: {c.name}", "", "Command:", "", "```bash", command, "```", "",
           f"Seed {c.seed}; dataset `{c.dataset}` ({c.split} split); {extra['num_train']} train / "
           f"{extra['num_test']} test images, {extra['num_train_classes']} train / {extra['num_test_classes']} test "
           f"classes; {extra['devices']} device(s) on {extra['processes']} process(es); "
           f"{c.num_steps} steps in {extra['wall_seconds']:.1f} s wall "
           f"({summary['images_per_second']:.0f} images/s in the loop; data {summary['data_seconds']:.1f} s, "
           f"steps {summary['step_seconds']:.1f} s). Machine: {extra['machine']}.", "",
           "| metric | untrained | trained |", "|---|---|---|"]
  lines += [f"| {k} | {_fmt(baseline[k])} | {_fmt(final[k])} |" for k in keys]
  train_metrics = summary.get("train") or {}
  if train_metrics:
    lines += ["", f"Final training loss: {train_metrics.get('loss', float('nan')):.4f}."]
  lines += ["", "Plots: `loss.png` (training loss), `embedding.png` (2-D PCA of the test embeddings).", "",
            "Config:", "", "```yaml", c.to_yaml().rstrip(), "```", ""]
  text = "\n".join(lines)
  with open(os.path.join(workdir, "results.md"), "w") as f:
    f.write(text)
  with open(os.path.join(workdir, "results.json"), "w") as f:
    json.dump({"command": command, "seed": c.seed, "untrained": baseline, "trained": final,
               "timing": {k: summary[k] for k in ("data_seconds", "step_seconds", "images_per_second")},
               **extra}, f, indent=2)
  return text


def write_plots(workdir, embeddings, labels, title: str) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  import numpy as np
  from sklearn.decomposition import PCA
  from metric_jax.train import read_metrics

  records = read_metrics(workdir)
  fig, ax = plt.subplots(figsize=(5, 3.5))
  train_rec = [r for r in records if r["split"] == "train"]
  ax.plot([r["step"] for r in train_rec], [r["loss"] for r in train_rec], label="train loss")
  ax.set_xlabel("step")
  ax.set_ylabel("loss")
  ax.set_title(title)
  ax.legend()
  fig.tight_layout()
  fig.savefig(os.path.join(workdir, "loss.png"), dpi=100)
  plt.close(fig)

  xy = PCA(n_components=2, random_state=0).fit_transform(np.asarray(embeddings, np.float64))
  fig, ax = plt.subplots(figsize=(5, 4.5))
  sc = ax.scatter(xy[:, 0], xy[:, 1], c=labels, cmap="tab10", s=6)
  ax.legend(*sc.legend_elements(), title="test class index", fontsize=7, loc="best")  # split labels are 0..C-1
  ax.set_title(f"{title}: test embeddings (PCA)")
  fig.tight_layout()
  fig.savefig(os.path.join(workdir, "embedding.png"), dpi=100)
  plt.close(fig)


# -- the run -----------------------------------------------------------------------------------------------------------

def train_and_evaluate(c, workdir: str, command: Optional[str] = None) -> dict:
  """Runs the experiment of config `c` in `workdir` (resuming from its checkpoints) and returns `results.json`'s dict."""
  import jax
  import numpy as np
  from metric_jax import data, train

  t_start = time.perf_counter()
  os.makedirs(workdir, exist_ok=True)
  command = command or "python -m experiments.train " + " ".join(shlex.quote(a) for a in sys.argv[1:])
  train_split, test_split = load_data(c)
  train_tf, test_tf = make_transforms(c, train_split.images)
  eval_rng = np.random.default_rng(0)
  test_x = test_tf(test_split.images, eval_rng)
  train_x = test_tf(train_split.images, eval_rng)
  input_shape = tuple(test_x.shape[1:])
  model = build_model(c, input_shape, train_split.num_classes)
  trainer = train.Trainer(model, build_objective(c), build_optimizer(c, model), frozen_bn=c.optimizer.frozen_bn)

  loss_params = _loss_param_template(c, train_split.num_classes)
  loss_consts = {}
  if "alpha" in loss_params:
    probe = train.Trainer(model, build_objective(c), build_optimizer(c, model), frozen_bn=c.optimizer.frozen_bn)
    state0 = probe.init_state(seed=c.seed)
    feats = embed_all(probe, state0, train_x, min(c.eval_batch_size, len(train_x)), key="features")
    loss_consts = {"d0": train.class_densities(feats, train_split.labels, train_split.num_classes)}
  state = trainer.init_state(seed=c.seed, loss_params=loss_params, loss_consts=loss_consts)

  baseline_path = os.path.join(workdir, "untrained.json")
  if os.path.exists(baseline_path):
    with open(baseline_path) as f:
      baseline = json.load(f)
  else:
    baseline = evaluate_state(c, trainer, state, test_x, test_split.labels, train_x, train_split.labels)
    if jax.process_index() == 0:
      with open(baseline_path, "w") as f:
        json.dump(baseline, f, indent=2)

  sampler = make_sampler(c, train_split.labels, jax.process_index(), jax.process_count())

  def batches(start_step):
    return data.BatchLoader(train_split.images, train_split.labels, sampler, transform=train_tf,
                            start_step=start_step, seed=c.seed)

  def eval_fn(st, step):
    return evaluate_state(c, trainer, st, test_x, test_split.labels, train_x, train_split.labels)

  state, summary = train.fit(trainer, state, batches, num_steps=c.num_steps, workdir=workdir,
                             checkpoint_every=c.checkpoint_every, log_every=c.log_every, eval_every=c.eval_every,
                             eval_fn=eval_fn, progress=c.progress, meta={"config": c.name})
  final = summary["eval"]
  extra = {"num_train": int(len(train_split.labels)), "num_test": int(len(test_split.labels)),
           "num_train_classes": int(train_split.num_classes), "num_test_classes": int(test_split.num_classes),
           "devices": jax.device_count(), "processes": jax.process_count(),
           "wall_seconds": time.perf_counter() - t_start,
           "machine": f"{platform.machine()} {os.cpu_count()} CPU cores, jax {jax.__version__} "
                      f"({jax.default_backend()})"}
  if jax.process_index() == 0:
    write_results(workdir, c, command, baseline, final, summary, extra)
    emb = embed_all(trainer, state, test_x, min(c.eval_batch_size, len(test_x)))
    write_plots(workdir, emb, test_split.labels, c.name)
  return {"untrained": baseline, "trained": final, "summary": summary, **extra}


def run_seeds(c, workdir: str, command: str) -> dict:
  """Runs the experiment once per seed of `c.seeds` (or `c.seed`) and summarises them as mean ± std.

  With one seed the run lives in `workdir`; with several, seed s runs in `workdir/seed_<s>` (each resumable on its own)
  and `workdir/summary.md` / `summary.json` hold the table over seeds.
  """
  import jax
  seeds = tuple(int(s) for s in (c.get("seeds") or (c.seed,)))
  runs = []
  for seed in seeds:
    cs = c.copy_and_resolve_references()
    with cs.unlocked():
      cs.seed = seed
    run_dir = workdir if len(seeds) == 1 else os.path.join(workdir, f"seed_{seed}")
    runs.append((seed, run_dir, train_and_evaluate(cs, run_dir, command=command)))
  summary = summarize_seeds(c, command, runs)
  if jax.process_index() == 0:
    with open(os.path.join(workdir, "summary.md"), "w") as f:
      f.write(summary["markdown"])
    with open(os.path.join(workdir, "summary.json"), "w") as f:
      json.dump({k: v for k, v in summary.items() if k != "markdown"}, f, indent=2)
  return summary


def summarize_seeds(c, command: str, runs) -> dict:
  """Mean ± sample std over seeds of every metric, untrained and trained; returns the table as Markdown too."""
  import numpy as np
  keys = [k for k in runs[0][2]["trained"] if k in runs[0][2]["untrained"]]
  stats = {}
  for which in ("untrained", "trained"):
    stats[which] = {}
    for k in keys:
      vals = np.array([r[which][k] for _, _, r in runs], np.float64)
      std = float(vals.std(ddof=1)) if len(vals) > 1 else 0.0
      stats[which][k] = {"mean": float(vals.mean()), "std": std, "values": vals.tolist()}
  first = runs[0][2]
  seeds = [s for s, _, _ in runs]
  walls = ", ".join("%.1f s" % r["wall_seconds"] for _, _, r in runs)
  lines = [f"# Results: {c.name}", "", "Written by the run itself. Command:", "", "```bash", command, "```", "",
           f"Seeds {', '.join(map(str, seeds))} (mean ± sample std over {len(seeds)} run(s)); dataset `{c.dataset}` "
           f"({c.split} split): {first['num_train']} train / {first['num_test']} test images, "
           f"{first['num_train_classes']} train / {first['num_test_classes']} test classes "
           f"({'class-disjoint' if c.split == 'retrieval' else 'the same classes'}); {c.num_steps} steps per run; {first['devices']} device(s) on {first['processes']} "
           f"process(es); machine: {first['machine']}; wall time per run: "
           f"{walls}.", "",
           "Untrained = the same network at initialisation (same seed), evaluated the same way.", "",
           "| metric | untrained | trained |", "|---|---|---|"]
  for k in keys:
    u, t = stats["untrained"][k], stats["trained"][k]
    lines.append(f"| {k} | {u['mean']:.4f} ± {u['std']:.4f} | {t['mean']:.4f} ± {t['std']:.4f} |")
  shown = [k for k in ("recall@1", "nmi", "softmax_accuracy", "knn_accuracy") if k in keys] or keys[:2]
  lines += ["", "Per seed (trained): " + "; ".join(
      f"seed {s}: " + ", ".join(f"{k} {r['trained'][k]:.4f}" for k in shown) for s, _, r in runs), "",
            f"Plots (seed {seeds[0]}): `{c.name}_loss.png` (training loss), `{c.name}_embedding.png` "
            f"(2-D PCA of the {'unseen-class ' if c.split == 'retrieval' else ''}test embeddings). Per-run tables: "
            "`results.md` in each run directory.", ""]
  return {"command": command, "seeds": seeds, "stats": stats, "run_dirs": [d for _, d, _ in runs],
          "markdown": "\n".join(lines)}


def publish(summary: dict, name: str, results_dir: str) -> None:
  """Copies the summary table and the first seed's plots into `results_dir` (e.g. experiments/results)."""
  import shutil
  os.makedirs(results_dir, exist_ok=True)
  with open(os.path.join(results_dir, f"{name}.md"), "w") as f:
    f.write(summary["markdown"])
  first_dir = summary["run_dirs"][0]
  for plot in ("loss", "embedding"):
    shutil.copyfile(os.path.join(first_dir, f"{plot}.png"), os.path.join(results_dir, f"{name}_{plot}.png"))


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  c = _CONFIG.value
  if c is None:
    raise app.UsageError("--config is required.")
  workdir = _WORKDIR.value or os.path.join("runs", c.name)
  absl_logging.set_verbosity(absl_logging.WARNING)  # orbax logs every checkpoint operation at INFO
  from metric_jax.train import distributed
  d = c.distributed
  distributed.initialize(d.coordinator_address or None, d.num_processes, d.process_id,
                         local_device_count=d.local_device_count or None)
  command = "python -m experiments.train " + " ".join(shlex.quote(a) for a in sys.argv[1:])
  summary = run_seeds(c, workdir, command)
  import jax
  if jax.process_index() == 0:
    if _RESULTS_DIR.value:
      publish(summary, c.name, _RESULTS_DIR.value)
    print(f"summary in {os.path.join(workdir, 'summary.md')}")
    for k in ("recall@1", "recall@2", "recall@4", "recall@8", "nmi", "knn_accuracy"):
      if k in summary["stats"]["trained"]:
        u, t = summary["stats"]["untrained"][k], summary["stats"]["trained"][k]
        print(f"  {k:14s} untrained {u['mean']:.4f} ± {u['std']:.4f}   trained {t['mean']:.4f} ± {t['std']:.4f}")


if __name__ == "__main__":
  flags.mark_flags_as_required(["config"])
  app.run(main)

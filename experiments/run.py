"""One run of an experiment config (one seed), resumable, and the seeds around it.

`run_one(config, run_dir)` trains and evaluates one seed in `run_dir` and returns its record, the small JSON summary
that tables, plots and sweeps are built from (`record.json`):

  config, config_hash, command, seed, finished
  data         sizes of the train / validation / test parts
  untrained    metrics of the network at initialisation, per split
  evals        [{step, validation: {...}, test: {...}, train_classes: {...}}] at every evaluation
  train_curve  [[step, loss averaged over the logging interval], ...]
  selection    how the reported step was chosen: the best validation MAP@R (retrieval protocol with a validation
               part: Musgrave et al. 2020), else the last step
  selected     {step, validation, test, train_classes} at that step; `final`: the same at the last step
  diagnostics  at the last step: cosine-similarity histograms of positive / negative test pairs; S2's learned
               alpha_c and the training-class densities of the embeddings when density adaptivity is on
  timing, machine, versions

On restart the saved `config.json` is compared with the new config: a difference in a key that changes what the run
computes stops with `ConfigMismatchError` naming the keys (use a new workdir or `overwrite=True`); a finished run with
the same config is not redone (its record is returned).
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import time
from typing import Callable, Dict, List, Optional

import numpy as np

from experiments import config_tools

RECORD_FILE = "record.json"
SELECTION_METRIC = "map@r"


class ConfigMismatchError(ValueError):
  """The config differs from the one an existing run directory was started with."""


def versions() -> Dict[str, str]:
  import importlib.metadata as md
  out = {"python": platform.python_version()}
  for pkg in ("jax", "jaxlib", "flax", "optax", "numpy", "scikit-learn"):
    try:
      out[pkg] = md.version(pkg)
    except md.PackageNotFoundError:
      pass
  return out


def machine() -> str:
  import jax
  cpu = ""
  try:
    with open("/proc/cpuinfo") as f:
      cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
  except OSError:
    pass
  return (f"{platform.machine()} {os.cpu_count()} CPU cores{' (' + cpu + ')' if cpu else ''}, "
          f"{jax.device_count()} {jax.default_backend()} device(s)")


def _read_json(path):
  with open(path) as f:
    return json.load(f)


def _write_json(path, obj):
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(obj, f, indent=1)
  os.replace(tmp, path)


def check_restart(old: dict, new: dict, run_dir: str) -> None:
  """Raises `ConfigMismatchError` when `new` may not continue the run `old` started in `run_dir`."""
  keys = config_tools.differing_keys(old, new)
  if (old.get("num_steps") != new.get("num_steps") and new.get("optimizer", {}).get("schedule", "constant")
      != "constant"):
    keys.append("num_steps (the learning-rate schedule depends on it)")
  if keys:
    raise ConfigMismatchError(
        f"{run_dir} holds a run started with a different config: {config_tools.describe_differences(old, new, keys)}. "
        f"Use a new --workdir, or --overwrite to delete the old run and start again.")


def prepare_run_dir(plain: dict, run_dir: str, *, overwrite: bool) -> Optional[dict]:
  """Checks / writes `config.json`; returns the finished record when the run is already complete."""
  from metric_jax.train.restore import CONFIG_FILE
  if overwrite and os.path.isdir(run_dir):
    shutil.rmtree(run_dir)
  os.makedirs(run_dir, exist_ok=True)
  path = os.path.join(run_dir, CONFIG_FILE)
  if os.path.exists(path):
    check_restart(_read_json(path), plain, run_dir)
    record_path = os.path.join(run_dir, RECORD_FILE)
    if os.path.exists(record_path):
      record = _read_json(record_path)
      if record.get("finished") and config_tools.record_hash(record) == config_tools.config_hash(plain):
        return record
  _write_json(path, plain)
  return None


# -- evaluation ------------------------------------------------------------------------------------------------------

def embed_all(trainer, state, images, batch_size: int, key: str = "embedding") -> np.ndarray:
  """Embeddings `[N, D]` of float images in fixed-size (padded) batches: one compilation for the whole run."""
  fn = trainer.embed_fn(state, key)
  out = []
  for start in range(0, len(images), batch_size):
    chunk = images[start:start + batch_size]
    n = len(chunk)
    if n < batch_size:
      chunk = np.concatenate([chunk, np.zeros((batch_size - n,) + chunk.shape[1:], chunk.dtype)])
    out.append(np.asarray(fn(chunk))[:n])
  return np.concatenate(out)


def softmax_logits(trainer, state, images, batch_size: int, features=None):
  """Logits `[N, C]` of a `TwoChannelNet`'s classifier W1 on `images` (inference mode).

  `features`: the images' `embedding` output, reused as the classifier inputs when both read the same layer."""
  import jax.numpy as jnp
  model = trainer.model(state)
  if features is None or model.classifier_layer != model.feature_layer:
    features = embed_all(trainer, state, images, batch_size, key="classifier_inputs")
  return np.asarray(model.logits(jnp.asarray(features), 0))


class EvalSets:
  """The preprocessed evaluation images of a run: test, validation (or None), training images."""

  def __init__(self, test, validation, train, train_class_subset: int = 2000):
    self.test, self.validation, self.train = test, validation, train
    x, y = train
    if len(y) > train_class_subset:  # a fixed subset keeps the training-class Recall@1 cheap
      idx = np.sort(np.random.default_rng(0).choice(len(y), train_class_subset, replace=False))
      x, y = x[idx], y[idx]
    self.train_subset = (x, y)


def evaluate_state(c, trainer, state, sets: EvalSets) -> Dict[str, Dict[str, float]]:
  """`{split: metrics}` of one state: the test set with the config's metric groups, the validation classes and (with
  `config.eval_train_classes`) a subset of the training classes with the retrieval group."""
  from metric_jax import evaluation
  bs = c.eval_batch_size
  groups = tuple(c.eval_metrics)
  test_x, test_y = sets.test
  emb = embed_all(trainer, state, test_x, min(bs, len(test_x)))
  out = {}
  same_classes = c.split == "limited"  # validation images of the training classes, classified by the training set
  ref = None
  if "classification" in groups or (same_classes and sets.validation is not None):
    train_x, train_y = sets.train
    ref = embed_all(trainer, state, train_x, min(bs, len(train_x)))

  def softmax(x, y, features):  # S0: the network's own softmax classifier W1
    return evaluation.softmax_accuracy(softmax_logits(trainer, state, x, min(bs, len(x)), features), y)

  if "classification" in groups:
    out["test"] = evaluation.evaluate(emb, test_y, ref, train_y, ks=tuple(c.ks), metrics=groups, seed=c.seed)
    if c.model.two_channel:
      out["test"]["softmax_accuracy"] = softmax(test_x, test_y, emb)
  else:
    out["test"] = evaluation.evaluate(emb, test_y, ks=tuple(c.ks), metrics=groups, seed=c.seed)
  if sets.validation is not None:
    vx, vy = sets.validation
    vemb = embed_all(trainer, state, vx, min(bs, len(vx)))
    if same_classes:  # the selection metrics only (no SVM fit per evaluation)
      out["validation"] = {"knn_accuracy": evaluation.knn_accuracy(ref, train_y, vemb, vy)}
      if c.model.two_channel:
        out["validation"]["softmax_accuracy"] = softmax(vx, vy, vemb)
    else:
      out["validation"] = evaluation.evaluate(vemb, vy, ks=tuple(c.ks), metrics=("retrieval",))
  if c.get("eval_train_classes", False):
    tx, ty = sets.train_subset
    out["train_classes"] = evaluation.evaluate(embed_all(trainer, state, tx, min(bs, len(tx))), ty, ks=tuple(c.ks),
                                               metrics=("retrieval",))
  return out


def diagnostics(c, trainer, state, sets: EvalSets, bins: int = 80) -> dict:
  """What the notebooks show of a finished run: similarity histograms (S4) and densities / alpha (S2)."""
  from metric_jax import pairwise, regularizers
  import jax.numpy as jnp
  x, y = sets.test
  emb = embed_all(trainer, state, x, min(c.eval_batch_size, len(x)))
  sim = np.asarray(pairwise.cosine_similarity(jnp.asarray(emb)))
  same = y[:, None] == y[None, :]
  upper = np.triu(np.ones_like(same), k=1)
  edges = np.linspace(-1.0, 1.0, bins + 1)
  pos = np.histogram(sim[same & upper], bins=edges)[0]
  neg = np.histogram(sim[~same & upper], bins=edges)[0]
  out = {"similarity_histogram": {"edges": edges.round(4).tolist(), "positive": pos.tolist(),
                                  "negative": neg.tolist()}}
  loss_params = trainer.local_copy(state.loss_params)
  if "alpha" in loss_params:
    tx, ty = sets.train
    temb = embed_all(trainer, state, tx, min(c.eval_batch_size, len(tx)))
    num_classes = int(np.asarray(loss_params["alpha"]).shape[0])
    dens, _ = regularizers.class_densities(jnp.asarray(temb), jnp.asarray(ty), num_classes)
    out["alpha"] = np.asarray(loss_params["alpha"]).round(5).tolist()
    out["train_class_density"] = np.asarray(dens).round(5).tolist()
    out["d0"] = np.asarray(trainer.local_copy(state.loss_consts)["d0"]).round(5).tolist()
  return out


# -- the record ------------------------------------------------------------------------------------------------------

def select(evals: List[dict], has_validation: bool, metric: str = SELECTION_METRIC) -> dict:
  """The reported step: best validation `metric` (earliest on ties) when there is a validation part, else the last."""
  if not evals:
    raise ValueError("the run has no evaluation to select from.")
  if has_validation:
    best = max(evals, key=lambda e: (e["validation"][metric], -e["step"]))
    return {"rule": f"best validation {metric}", "step": best["step"]}
  return {"rule": "last step", "step": evals[-1]["step"]}


def collect(run_dir: str) -> tuple:
  """`(evals, train_curve)` from the run's metrics.jsonl."""
  from metric_jax.train import read_metrics
  by_step: Dict[int, dict] = {}
  curve = []
  for r in read_metrics(run_dir):
    split = r.pop("split")
    step = r.pop("step")
    if split == "train":
      curve.append([step, r["loss"]])
    elif step > 0:
      by_step.setdefault(step, {"step": step})[split] = r
  return [by_step[s] for s in sorted(by_step)], curve


# -- one run ---------------------------------------------------------------------------------------------------------

def make_sampler(c, labels, process_index: int, process_count: int, mining_embed=None):
  """The config's sampler. `npair` with `config.npair_mining` mines negative classes (S3) with `mining_embed(indices)
  -> [n, D]`, the current network's embeddings of training examples."""
  from metric_jax import data
  kw = dict(seed=c.seed, process_index=process_index, process_count=process_count)
  if c.get("npair_mining", False) and c.sampler != "npair":
    raise ValueError(f"`config.npair_mining` needs `config.sampler` = 'npair', got {c.sampler!r}.")
  if c.sampler == "pk":
    return data.PKSampler(labels, c.classes_per_batch, c.samples_per_class_batch, **kw)
  if c.sampler == "npair":
    miner = data.greedy_negative_class_miner(mining_embed) if c.get("npair_mining", False) else None
    return data.NPairSampler(labels, c.classes_per_batch, mining_fn=miner, **kw)
  if c.sampler == "pair":
    return data.PairSampler(labels, c.batch_size, **kw)
  if c.sampler == "random":
    return data.RandomSampler(len(labels), c.batch_size, **kw)
  if c.sampler == "class_accumulating":
    return data.ClassAccumulatingSampler(labels, c.batch_size, **kw)
  raise ValueError(f"`config.sampler` must be pk | npair | pair | random | class_accumulating, got {c.sampler!r}.")


def run_one(c, run_dir: str, *, command: str, overwrite: bool = False, log: Callable[[str], None] = print,
            write_artifacts: bool = True) -> dict:
  """Trains and evaluates config `c` (one seed, `c.seed`) in `run_dir`, resuming from its checkpoints; returns the
  record (see the module docstring). A finished run with the same config is returned as it is."""
  import jax
  from metric_jax import data, train
  from metric_jax.train import from_config
  from metric_jax.train.restore import PREPROCESS_FILE, RUN_FILE

  # A metric the validation part does not measure fails here, before anything is written.
  metric = from_config.selection_metric(c) if c.get("validation", False) else SELECTION_METRIC
  plain = config_tools.to_plain(c)
  finished = prepare_run_dir(plain, run_dir, overwrite=overwrite)
  if finished is not None:
    log(f"{run_dir}: finished earlier with this config; not redone.")
    return finished
  t_start = time.perf_counter()
  parts = from_config.load_data(c)
  from_config.check_memory_labels(c, parts.train.labels)
  stats = from_config.fit_preprocessing(c, parts.train.images)
  train_tf, test_tf = from_config.make_transforms(c, stats, parts.train.images.shape[1:])
  rng = np.random.default_rng(0)
  prep = lambda split: (test_tf(split.images, rng), split.labels)
  sets = EvalSets(prep(parts.test), prep(parts.validation) if parts.validation is not None else None,
                  prep(parts.train))
  input_shape = tuple(sets.test[0].shape[1:])
  num_classes = parts.train.num_classes
  sizes = {k: {"images": int(len(s.labels)), "classes": int(s.num_classes)}
           for k, s in parts._asdict().items() if s is not None}
  if jax.process_index() == 0:
    np.savez(os.path.join(run_dir, PREPROCESS_FILE), **stats)
    _write_json(os.path.join(run_dir, RUN_FILE), {
        "input_shape": list(input_shape), "image_shape": list(parts.train.images.shape[1:]),
        "num_train_classes": int(num_classes), "dataset": c.dataset, "sizes": sizes})

  trainer, loss_params = from_config.build_trainer(c, input_shape, num_classes)
  loss_consts = {}
  if from_config.uses_density_adaptivity(c):  # S2's D0: class densities of the untrained network's features
    probe = trainer.init_state(seed=c.seed, loss_params=loss_params,
                               loss_consts={"d0": np.zeros((num_classes,), np.float32)})
    feats = embed_all(trainer, probe, sets.train[0], min(c.eval_batch_size, len(sets.train[0])), key="features")
    loss_consts = {"d0": train.class_densities(feats, parts.train.labels, num_classes)}
  state = trainer.init_state(seed=c.seed, loss_params=loss_params, loss_consts=loss_consts)

  untrained_path = os.path.join(run_dir, "untrained.json")
  if os.path.exists(untrained_path):
    untrained = _read_json(untrained_path)
  else:
    untrained = evaluate_state(c, trainer, state, sets)
    if jax.process_index() == 0:
      _write_json(untrained_path, untrained)

  live = {"state": state}  # the current network, for negative class mining (S3)
  mining = bool(c.get("npair_mining", False))

  def mining_embed(indices):
    return np.asarray(trainer.embed_fn(live["state"])(sets.train[0][np.asarray(indices)]))

  sampler = make_sampler(c, parts.train.labels, jax.process_index(), jax.process_count(), mining_embed)

  def batches(start_step):  # mining reads the current state: no prefetch, so batches are reproducible on resume
    return data.BatchLoader(parts.train.images, parts.train.labels, sampler, transform=train_tf,
                            start_step=start_step, seed=c.seed, prefetch=0 if mining else 2)

  state, summary = train.fit(trainer, state, batches, num_steps=c.num_steps, workdir=run_dir,
                             checkpoint_every=c.checkpoint_every, log_every=c.log_every, eval_every=c.eval_every,
                             eval_fn=lambda st, step: evaluate_state(c, trainer, st, sets), progress=c.progress,
                             meta={"config": c.name}, log=log,
                             on_state=(lambda st: live.__setitem__("state", st)) if mining else None)
  evals, curve = collect(run_dir)
  selection = select(evals, parts.validation is not None, metric)
  selected = next(e for e in evals if e["step"] == selection["step"])
  record = {
      "name": c.name, "seed": int(c.seed), "config": plain, "config_hash": config_tools.config_hash(plain),
      "command": command, "finished": True, "data": sizes, "untrained": untrained, "evals": evals,
      "train_curve": curve, "selection": selection, "selected": selected, "final": evals[-1],
      "diagnostics": diagnostics(c, trainer, state, sets),
      "timing": {"wall_seconds": time.perf_counter() - t_start, "resumed_from_step": summary["start_step"],
                 **{k: summary[k] for k in ("data_seconds", "step_seconds", "images_per_second")}},
      "machine": machine(), "versions": versions(),
  }
  if jax.process_index() == 0:
    _write_json(os.path.join(run_dir, RECORD_FILE), record)
    if write_artifacts:
      from experiments import report
      report.write_run_artifacts(run_dir, record, trainer, state, sets)
  return record


def run_seeds(c, workdir: str, *, command: str, overwrite: bool = False, log: Callable[[str], None] = print):
  """One run per seed of `c.seeds` (or `c.seed`) in `workdir/seed_<s>`; returns the records."""
  seeds = tuple(int(s) for s in (c.get("seeds") or (c.seed,)))
  records = []
  for seed in seeds:
    cs = c.copy_and_resolve_references()
    with cs.unlocked():
      cs.seed = seed
    records.append(run_one(cs, os.path.join(workdir, f"seed_{seed}"), command=command, overwrite=overwrite,
                           log=log))
  return records


__all__ = ["run_one", "run_seeds", "ConfigMismatchError", "check_restart", "select", "collect", "evaluate_state",
           "embed_all", "EvalSets", "RECORD_FILE"]

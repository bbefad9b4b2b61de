"""One entry point for every experiment.

  python -m experiments.train --config experiments/configs/<name>.py --workdir runs/<name> [--config.key=value ...]
      [--config.objective.loss_hparams.<name>=<value> ...] [--results_dir experiments/results] [--overwrite]

Runs the config once per seed (`config.seeds`) in `<workdir>/seed_<s>` (`experiments.run.run_one`: data, untrained
evaluation, training with periodic evaluation and checkpoints, step selection, record and plots), then writes the
summary over seeds (`summary.md`, `summary.json`, `curves.png`, `embedding.png`) into the workdir and, with
`--results_dir`, into `<results_dir>/<config.name>.*`.

Restarting resumes every unfinished seed from its last checkpoint and never redoes a finished one. A config that differs
from the one the workdir was started with (other than in `num_steps`, logging / evaluation / checkpoint frequency,
`progress`, `seeds`) is refused with the differing keys; `--overwrite` deletes the old runs instead.
Loss hyperparameters are free-form: `--config.objective.loss_hparams.margin=0.2` (a name the chosen loss does not take is
an error listing the names it takes).
"""

from __future__ import annotations

import os
import shlex
import sys

from absl import app, flags, logging as absl_logging
from ml_collections import config_flags

from experiments import config_tools

_CONFIG = config_flags.DEFINE_config_file("config", None, "ml_collections config file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (one seed_<s> directory per seed, and the summary).")
_RESULTS_DIR = flags.DEFINE_string(
    "results_dir", None, "If set, also write `<config.name>.md`, `.json` and plots there (e.g. experiments/results); "
    "results of another config under the same name are never overwritten without --overwrite.")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Delete existing runs in the workdir and start again.")

_LOSS_HPARAMS = {}
_ARGV = list(sys.argv)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  c = _CONFIG.value
  if c is None:
    raise app.UsageError("--config is required.")
  config_tools.set_loss_hparams(c, _LOSS_HPARAMS)
  workdir = _WORKDIR.value or os.path.join("runs", c.name)
  absl_logging.set_verbosity(absl_logging.WARNING)  # orbax logs every checkpoint operation at INFO
  from metric_jax.train import distributed, from_config
  from_config.loss_hparams(c)  # fail early on a misspelt loss hyperparameter
  from_config.memory_settings(c)  # ... and on a cross-batch memory the objective cannot take
  d = c.distributed
  distributed.initialize(d.coordinator_address or None, d.num_processes, d.process_id,
                         local_device_count=d.local_device_count or None)
  from experiments import report, run
  command = "python -m experiments.train " + " ".join(shlex.quote(a) for a in _ARGV[1:])
  import jax
  if _RESULTS_DIR.value and jax.process_index() == 0:  # refuse before training, not after
    report.check_publish(_RESULTS_DIR.value, c.name, config_tools.config_hash(config_tools.to_plain(c)),
                         overwrite=_OVERWRITE.value)
  records = run.run_seeds(c, workdir, command=command, overwrite=_OVERWRITE.value)
  if jax.process_index() == 0:
    summary = report.write_seed_summary(workdir, c.name, command, records)
    if _RESULTS_DIR.value:
      report.publish(_RESULTS_DIR.value, c.name, workdir, command, records, overwrite=_OVERWRITE.value)
    print(f"summary in {os.path.join(workdir, 'summary.md')}")
    for split in ("test", "validation"):
      for k in ("recall@1", "map@r", "nmi", "softmax_accuracy", "knn_accuracy"):
        if k in summary["selected"].get(split, {}):
          print(f"  {split:10s} {k:16s} untrained {report.fmt(summary['untrained'][split].get(k)):18s} "
                f"trained {report.fmt(summary['selected'][split][k])}")


def cli(argv=None):
  """Entry point: takes the free-form loss-hyperparameter flags out of argv, then runs absl."""
  global _ARGV
  argv = list(sys.argv if argv is None else argv)
  _ARGV = argv
  rest, hparams = config_tools.split_loss_hparam_flags(argv)
  _LOSS_HPARAMS.clear()
  _LOSS_HPARAMS.update(hparams)
  sys.argv[:] = rest  # ml_collections reads the config overrides from sys.argv itself
  flags.mark_flags_as_required(["config"])
  try:
    app.run(main, argv=rest)
  except run_errors() as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)


def run_errors():
  from experiments import report, run
  from metric_jax.train.from_config import ConfigError
  return (run.ConfigMismatchError, report.PublishCollisionError, ConfigError)


if __name__ == "__main__":
  cli()

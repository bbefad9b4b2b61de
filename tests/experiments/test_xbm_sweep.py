"""The XBM sweep file: each loss without and with the cross-batch memory, differing in the memory keys only (same steps,
same seeds), every config valid for the trainer, claims naming its rows. No training."""

from experiments import config_tools, sweep as sweep_lib
from metric_jax.train import from_config

SWEEP = "experiments/sweeps/xbm_omniglot.py"


def test_xbm_sweep_pairs_each_loss_with_its_memory_variant():
  sw = sweep_lib.load_sweep(SWEEP)
  names = [v.name for v in sw.variants]
  assert names == ["contrastive", "contrastive_xbm", "multi_similarity", "multi_similarity_xbm"]
  assert tuple(sw.seeds) == (0, 1, 2)
  for loss in ("contrastive", "multi_similarity"):
    without, with_memory = (config_tools.to_plain(sweep_lib.variant_config(sw, v, 0)) for v in sw.variants
                            if v.name.startswith(loss))
    assert from_config.memory_settings(without) == (0, 0)
    assert from_config.memory_settings(with_memory) == (512, 200)
    assert config_tools.differing_keys(without, with_memory, ignore_safe=False) == ["memory.size",
                                                                                     "memory.start_step", "name"]
    assert with_memory["num_steps"] == 1200 and with_memory["eval_every"] == 200
    assert with_memory["classes_per_batch"] * with_memory["samples_per_class_batch"] == 64
  contrastive = sweep_lib.variant_config(sw, sw.variants[0], 0)
  assert from_config.loss_hparams(contrastive) == {"distance": "cosine", "pos_margin": 0.0, "neg_margin": 0.5}
  for claim in sw.claims:
    assert {claim.better, claim.worse} <= set(names) and claim.better.endswith("_xbm")


def test_xbm_sweep_without_memory_reuses_the_losses_table_config():
  """The memory-off multi-similarity run is the base Omniglot config: its hash equals losses_omniglot's, so a finished
  record there is reused instead of trained again."""
  xbm = sweep_lib.load_sweep(SWEEP)
  losses = sweep_lib.load_sweep("experiments/sweeps/losses_omniglot.py")
  a = sweep_lib.variant_config(xbm, next(v for v in xbm.variants if v.name == "multi_similarity"), 0)
  b = sweep_lib.variant_config(losses, next(v for v in losses.variants if v.name == "multi_similarity"), 0)
  assert config_tools.config_hash(config_tools.to_plain(a)) == config_tools.config_hash(config_tools.to_plain(b))

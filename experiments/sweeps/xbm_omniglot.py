"""Cross-batch memory (XBM; Wang et al. 2020, "Cross-Batch Memory for Embedding Learning") on the Omniglot protocol:
the contrastive loss (XBM's main loss) and the multi-similarity loss, each without and with the memory, same steps.

The memory (`config.memory`) is a FIFO of the last K = 512 training embeddings (8 PK batches of 16 x 4; ~28% of the 1800
training images) with their labels. From step 200 on (the first evaluation; XBM switches the memory on once the
embedding drifts slowly) the loss's keys are the batch plus the memory, under stop-gradient; the queries stay the batch.
Everything else is the base config `experiments/configs/omniglot.py` (1200 steps, step chosen on validation MAP@R).

Contrastive loss: XBM's form on cosine similarity S with margin lambda = 0.5, i.e. `1 - S_ij` for positive pairs and
`[S_ij - 0.5]_+` for negative pairs. Our `contrastive` with `distance="cosine"` (D = 1 - cos, embeddings L2-normalized
inside), `pos_margin=0`, `neg_margin=0.5`, `hinge_power=1` gives exactly these per-pair terms (`[0.5 - D]_+ =
[S - 0.5]_+`). The reduction is the library's default (`mean_nonzero`: the mean of the non-zero positive terms plus the
mean of the non-zero negative terms), not the paper's sum over pairs divided by the batch size; with the memory the
means run over the batch's and the memory's pairs together. Multi-similarity: the registry defaults (the MS paper's
alpha = 2, beta = 50, base 0.5, epsilon = 0.1 mining), as in `losses_omniglot` (whose records it reuses when finished).

  python -m experiments.sweep --sweep experiments/sweeps/xbm_omniglot.py --workdir runs/xbm_omniglot
"""

from experiments.sweep import Claim, Sweep, Variant

MEMORY = {"memory.size": 512, "memory.start_step": 200}
LOSSES = {
    "contrastive": {"objective.loss": "contrastive", "objective.loss_hparams.distance": "cosine",
                    "objective.loss_hparams.pos_margin": 0.0, "objective.loss_hparams.neg_margin": 0.5},
    "multi_similarity": {"objective.loss": "multi_similarity"},
}


def variants():
  out = []
  for name, overrides in LOSSES.items():
    out += [Variant(name, overrides),
            Variant(f"{name}_xbm", {**overrides, **MEMORY}, label=f"{name} + XBM (K 512)")]
  return out


def get_sweep():
  return Sweep(
      name="xbm_omniglot", base="experiments/configs/omniglot.py", variants=variants(), seeds=(0, 1, 2),
      title="Cross-batch memory (XBM) on Omniglot: contrastive and multi-similarity without / with the memory",
      protocol=("the Omniglot protocol of experiments/configs/omniglot.py (PK 16 x 4 = 64 per batch, 1200 steps, "
                "evaluated every 200, step chosen on validation MAP@R); memory of K = 512 embeddings (8 batches, ~28% "
                "of the 1800 training images), filled from step 0, used as extra keys (stop-gradient) from step 200; "
                "contrastive on cosine similarity with XBM's margin 0.5 (1 - S for positives, [S - 0.5]_+ for "
                "negatives, mean over the non-zero terms), multi-similarity with its defaults."),
      claims=[Claim("XBM", "XBM improves contrastive", "contrastive_xbm", "contrastive"),
              Claim("XBM", "XBM improves multi_similarity", "multi_similarity_xbm", "multi_similarity")])

"""S3 (multi-class N-pair loss) on the Omniglot protocol: triplet (all / hard / semihard), the (1+1)-tuple loss,
N-pair-ovo and N-pair-mc at the same 64 examples per batch; N-pair-mc with negative class mining; batch compositions
N classes x M examples (32 x 2, 16 x 4, 8 x 8). Verification accuracy with 1 and 71 negatives is reported beside the
retrieval metrics.

N-pair runs as S3 trains it: unnormalized embeddings (inner products) with an L2 penalty on the embedding norms
(lambda = 0.002, our choice at this scale), batches of N classes x 2 (`npair` sampler, N = 32); the triplet baselines
on L2-normalized embeddings (their standard form; margin 0.2). The (1+1)-tuple loss, log(1 + exp(f.f- - f.f+)) on one
negative at a time, is the soft triplet loss on unit vectors (softplus of half the squared-distance difference).

  python -m experiments.sweep --sweep experiments/sweeps/npair_omniglot.py --workdir runs/npair_omniglot
"""

from experiments.sweep import Claim, Sweep, Variant

NPAIR = {"model.normalize": False, "objective.loss_hparams.l2_reg": 0.002, "sampler": "npair",
         "classes_per_batch": 32}


def variants():
  out = [Variant(f"triplet_{m}", {"objective.loss": "triplet", "objective.loss_hparams.mining": m},
                 label=f"triplet ({m})") for m in ("all", "hard", "semihard")]
  out.append(Variant("tuple_1plus1", {"objective.loss": "triplet", "objective.loss_hparams.soft": True,
                                      "objective.loss_hparams.squared": True, "sampler": "npair",
                                      "classes_per_batch": 32}, label="(1+1)-tuple (N = 1)"))
  out.append(Variant("npair_ovo", {"objective.loss": "npair_ovo", **NPAIR}, label="N-pair-ovo (32 x 2)"))
  out.append(Variant("npair_mc", {"objective.loss": "npair_mc", **NPAIR}, label="N-pair-mc (32 x 2)"))
  out.append(Variant("npair_mc_mining", {"objective.loss": "npair_mc", **NPAIR, "npair_mining": True},
                     label="N-pair-mc + negative class mining"))
  for n, m in ((16, 4), (8, 8)):
    out.append(Variant(f"npair_mc_{n}x{m}", {"objective.loss": "npair_mc", **NPAIR, "sampler": "pk",
                                             "classes_per_batch": n, "samples_per_class_batch": m},
                       label=f"N-pair-mc ({n} x {m})"))
  return out


def get_sweep():
  return Sweep(
      name="npair_omniglot", base="experiments/configs/omniglot.py", variants=variants(), seeds=(0, 1, 2),
      base_overrides={"eval_metrics": ("retrieval", "clustering", "verification")},
      metrics=("recall@1", "recall@2", "recall@4", "recall@8", "map@r", "r_precision", "nmi", "f1",
               "verification@1", "verification@71"),
      title="S3 (multi-class N-pair loss) on Omniglot",
      protocol=("the Omniglot protocol of experiments/configs/omniglot.py, 64 examples per batch for every variant; "
                "verification@n: a query, one positive and n negatives from the test set, correct when the positive "
                "scores highest."),
      claims=[
          Claim("S3", "N-pair-mc beats triplet (all)", "npair_mc", "triplet_all"),
          Claim("S3", "N-pair-mc beats triplet (semihard)", "npair_mc", "triplet_semihard"),
          Claim("S3", "N-pair-mc beats N-pair-ovo", "npair_mc", "npair_ovo"),
          Claim("S3", "N-pair-mc beats the (1+1)-tuple loss", "npair_mc", "tuple_1plus1"),
          Claim("S3", "negative class mining improves N-pair-mc", "npair_mc_mining", "npair_mc"),
          Claim("S3", "N pairs (32 x 2) beat 8 x 8 batches", "npair_mc", "npair_mc_8x8"),
          Claim("S3", "N-pair-mc beats triplet on verification with 71 negatives", "npair_mc", "triplet_all",
                "verification@71"),
      ])

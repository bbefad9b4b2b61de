"""S1 (general pair-based weighting, GPW) on the Omniglot protocol: mining x weighting of the GPW pair loss (Eq. 18),
PK vs random sampling for three losses, multi-level feature fusion vs the last layer, examples per batch.

The GPW pair loss on Euclidean distances of L2-normalized embeddings, `sum_pos w+ [D - m1]_+ + sum_neg w- [m2 - D]_+`:
- mining: `none` (every positive pair, negatives inside m2: m1 = 0, m2 = 1), `threshold` (fixed thresholds m1 = 0.3,
  m2 = 0.9: only positives farther than m1 and negatives nearer than m2 take part), `hardest` (the hardest positive and
  hardest negative of each anchor), `eps_ms` (multi-similarity epsilon-mining, epsilon = 0.1 on distances);
- weighting: `constant` (w = 1), `power` (w = [x]_+^p, p = q = 1), `exponential` (w = exp(alpha x), alpha = beta = 5 on
  distances in [0, 2]; our choice: the paper's multi-similarity scales 2 / 50 are for cosine similarities).
S1's training recipe parts that need a pretrained backbone (frozen BatchNorm, a frozen backbone for the first epochs,
10x learning rate on new layers) do not apply to this from-scratch convnet and are not varied here.

  python -m experiments.sweep --sweep experiments/sweeps/gpw_omniglot.py --workdir runs/gpw_omniglot
"""

from experiments.sweep import Claim, Sweep, Variant

MINING = {"none": {"mining": "none"},
          "threshold": {"mining": "threshold", "pos_margin": 0.3, "neg_margin": 0.9},
          "hardest": {"mining": "batch_hard"},
          "eps_ms": {"mining": "multi_similarity", "epsilon": 0.1}}
WEIGHTING = {"constant": {"weighting": "constant"},
             "power": {"weighting": "power", "p": 1.0, "q": 1.0},
             "exponential": {"weighting": "exponential", "alpha": 5.0, "beta": 5.0}}
MAIN = ("eps_ms", "exponential")   # the GPW configuration used for the fusion and batch-size variants


def _gpw(mining, weighting):
  hp = {**MINING[mining], **WEIGHTING[weighting]}
  return {"objective.loss": "gpw_pair", **{f"objective.loss_hparams.{k}": v for k, v in hp.items()}}


def variants():
  out = [Variant(f"gpw_{m}_{w}", _gpw(m, w)) for m in MINING for w in WEIGHTING]
  for name, loss, hp in (("contrastive", "contrastive", {}), ("triplet_all", "triplet", {"mining": "all"}),
                         ("multi_similarity", "multi_similarity", {})):
    base = {"objective.loss": loss, **{f"objective.loss_hparams.{k}": v for k, v in hp.items()}}
    out.append(Variant(f"{name}_pk", base))
    out.append(Variant(f"{name}_random", {**base, "sampler": "random", "batch_size": 64}))
  main = _gpw(*MAIN)
  out.append(Variant("gpw_main_fusion", {**main, "model.layers": ("conv2", "fc1")}, label="GPW, fused conv2+fc1"))
  for p in (8, 32):
    out.append(Variant(f"gpw_main_batch{4 * p}", {**main, "classes_per_batch": p}, label=f"GPW, batch {4 * p}"))
  return out


def get_sweep():
  m, w = MAIN
  return Sweep(
      name="gpw_omniglot", base="experiments/configs/omniglot.py", variants=variants(), seeds=(0, 1, 2),
      title="S1 (GPW): mining x weighting, sampling, feature fusion, batch size on Omniglot",
      protocol=("the Omniglot protocol of experiments/configs/omniglot.py (alphabet-disjoint, step chosen on the "
                "validation alphabets); batch 64 (PK 16 x 4) unless the variant says otherwise; random sampling "
                "draws 64 images uniformly."),
      claims=[
          Claim("S1", "PK sampling beats random sampling (contrastive)", "contrastive_pk", "contrastive_random"),
          Claim("S1", "PK sampling beats random sampling (triplet)", "triplet_all_pk", "triplet_all_random"),
          Claim("S1", "PK sampling beats random sampling (multi-similarity)", "multi_similarity_pk",
                "multi_similarity_random"),
          Claim("S1", "exponential weighting beats constant (eps-MS mining)", f"gpw_{m}_exponential",
                f"gpw_{m}_constant"),
          Claim("S1", "mining helps: eps-MS mining beats no mining (exponential weights)", f"gpw_{m}_exponential",
                "gpw_none_exponential"),
          Claim("S1", "multi-level feature fusion beats the last layer", "gpw_main_fusion", f"gpw_{m}_{w}"),
      ])

"""S0's metric-only nets (siamese, pairloss): learning rate and step budget checked on validation, never on test.

In `pairnet_mnist` (S0's solver: SGD lr 0.01, momentum 0.9, 1000 steps of 64 pairs) the two nets that learn only
from pairs barely move the 1-NN accuracy of the untrained network, and with all 60,000 images they end below it
(0.971 -> 0.963), while the softmax nets reach 0.98. This sweep asks whether that is the learning rate or the step
budget: all training images but 500 per class (5,000 held out as validation, the same for every seed), lr in
{0.001, 0.01, 0.1}, 3000 steps with an evaluation every 1000, the step and the learning rate chosen by validation 1-NN
accuracy (the 55,000 training images as the gallery). Seed 0 compares the learning rates; the chosen one then runs on
seeds 1 and 2. The test columns are the official 10k test set at the validation-chosen step, for the record.

  python -m experiments.sweep --sweep experiments/sweeps/pairnet_mnist_lr.py --workdir runs/pairnet_mnist_lr
"""

from experiments.sweep import Sweep, Variant

METHODS = ("siamese", "pairloss")
LEARNING_RATES = (0.001, 0.01, 0.1)


def get_sweep():
  variants = [Variant(f"{m}_lr{lr:g}", {"objective.kind": m, "optimizer.learning_rate": lr}, group=m,
                      label=f"{m} lr {lr:g}")
              for m in METHODS for lr in LEARNING_RATES]
  return Sweep(
      name="pairnet_mnist_lr", base="experiments/configs/pairnet_mnist.py", variants=variants, seeds=(0, 1, 2),
      grid_seeds=(0,),
      title="S0's metric-only nets on all of MNIST: learning rate and step budget chosen on validation",
      protocol=("All official MNIST training images but 500 per class (55,000 train; 5,000 validation held out with a "
                "fixed seed), the official 10k test set; S0's two-channel LeNet trained on pairs only (siamese: "
                "contrastive PLoss with b = m = 1; pairloss: m = 1, b = 0.5), 64 pairs per step, SGD momentum 0.9, "
                "weight decay 5e-4, lr in {0.001, 0.01, 0.1}, 3000 steps, evaluated every 1000; the step and the "
                "learning rate are chosen by validation 1-NN accuracy (gallery: the training images)."),
      base_overrides={"samples_per_class": 0, "validation": True, "validation_per_class": 500,
                      "selection_metric": "knn_accuracy", "num_steps": 3000, "eval_every": 1000,
                      "checkpoint_every": 500},
      metrics=("knn_accuracy", "svm_accuracy"))

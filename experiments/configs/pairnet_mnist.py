"""S0 (PairNet) limited-data experiment on MNIST: softmax (singlenet) vs softmax + pairwise PLoss (pairnet).

Protocol (DESIGN.md, S0): N training images per class drawn at random from the official 60,000 training images
(`samples_per_class = 0`: all of them), each draw repeated with 3 seeds, accuracy on the official 10,000 test images,
mean ± std.

Network: the paper's MNIST LeNet (conv 5x5x20 - pool - conv 5x5x50 - pool - fc 500 - ReLU) as the shared trunk of a
two-channel net with softmax classifiers W1, W2 on fc1; PLoss = max(0, b - Y (m - D^2)) on the squared Euclidean
distance of the fc1 features of pairs drawn from two independently shuffled batches; total
CLoss_1 + CLoss_2 + lambda PLoss. `singlenet` trains the same trunk with softmax only. Evaluation: the network's own
softmax (W1), and kNN / linear SVM on the fc1 features.

One configuration (one method, one N):

  python -m experiments.train --config experiments/configs/pairnet_mnist.py --workdir runs/pairnet_mnist \
      --config.objective.kind=pairnet --config.samples_per_class=60

The sweep over methods and N (S0's Table 1) that writes experiments/results/pairnet_mnist.md:

  python -m experiments.sweep --sweep experiments/sweeps/pairnet_mnist.py --workdir runs/pairnet_mnist
"""

from experiments.configs import default


def get_config():
  c = default.get_config()
  c.name = "pairnet_mnist"
  c.seeds = (0, 1, 2)
  c.dataset = "mnist"
  c.split = "limited"
  c.samples_per_class = 60

  c.preprocess.kind = "float"          # pixels / 255, as Caffe's LeNet (scale 1/256)

  c.sampler = "pair"                   # two independently shuffled batches
  c.batch_size = 64                    # pairs per batch (128 images per step)

  c.model.backbone = "lenet"
  c.model.lenet_channels = (20, 50)
  c.model.lenet_hidden = 500
  c.model.lenet_kernel = 5
  c.model.padding = "VALID"
  c.model.two_channel = True
  c.model.feature_layer = "fc1"
  c.model.classifier_layer = "fc1"
  c.model.num_outputs = 0              # trunk without fc2: W1 / W2 are the classifiers

  c.objective.kind = "pairnet"         # pairnet | singlenet | pair_soft | pairloss | siamese
  c.objective.pair_margin = 1.0        # m
  c.objective.pair_b = 0.5             # b (0 < b < m); siamese uses b = m
  c.objective.pair_lambda = 1.0        # lambda

  c.optimizer.name = "sgd"             # Caffe's LeNet solver: lr 0.01, momentum 0.9, weight decay 5e-4
  c.optimizer.learning_rate = 0.01
  c.optimizer.momentum = 0.9
  c.optimizer.weight_decay = 5e-4

  c.num_steps = 1000
  c.log_every = 50
  c.eval_every = 1000                  # S0 reports the last step: one evaluation at the end (and the untrained one)
  c.checkpoint_every = 500
  c.eval_metrics = ("classification",)
  return c

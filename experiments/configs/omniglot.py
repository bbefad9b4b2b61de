"""Base config of the Omniglot retrieval sweeps (S1-S4 and the losses table): class- and alphabet-disjoint.

Protocol (`metric_jax.data.retrieval_splits("omniglot", protocol="small")`, Musgrave et al. 2020's selection rule):
train on small1's Greek, Korean and Latin characters (90 classes, 1800 images), evaluate every `eval_every` steps on the
validation alphabets Balinese and Early_Aramaic (46 classes), pick the step of the best validation MAP@R, and report the
test metrics at that step on small2's Japanese_(katakana), Sanskrit and Tagalog (106 classes, 2120 images), which share
no alphabet, character or image with training.

Images are resized to 28 x 28 at load time and inverted (strokes 255 on a 0 background); training shifts them by up to
2 pixels. Network: a LeNet-style convnet (conv 3x3x32 - pool - conv 3x3x64 - pool - fc 256) with a 64-d L2-normalized
embedding head; PK batches of 16 classes x 4 images; Adam, learning rate 1e-3; 1200 steps, evaluated every 200.

  python -m experiments.train --config experiments/configs/omniglot.py --workdir runs/omniglot \
      --config.objective.loss=triplet --config.objective.loss_hparams.mining='"semihard"'
"""

from experiments.configs import default


def get_config():
  c = default.get_config()
  c.name = "omniglot"
  c.seeds = (0, 1, 2)
  c.dataset = "omniglot"
  c.protocol = "small"
  c.split = "retrieval"
  c.validation = True
  c.image_size = 28

  c.preprocess.kind = "shift"
  c.preprocess.crop_padding = 2

  c.sampler = "pk"
  c.classes_per_batch = 16
  c.samples_per_class_batch = 4
  c.batch_size = 64

  c.model.backbone = "lenet"
  c.model.lenet_channels = (32, 64)
  c.model.lenet_hidden = 256
  c.model.lenet_kernel = 3
  c.model.padding = "SAME"
  c.model.embedding_dim = 64
  c.model.layers = ("fc1",)
  c.model.normalize = True

  c.objective.loss = "multi_similarity"

  c.optimizer.name = "adam"
  c.optimizer.learning_rate = 1e-3

  c.num_steps = 1200
  c.log_every = 25
  c.eval_every = 200
  c.checkpoint_every = 200
  c.eval_metrics = ("retrieval", "clustering")
  c.progress = False
  return c

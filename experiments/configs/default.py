"""Default experiment: a small convnet with the multi-similarity loss on scikit-learn's bundled digits.

Train on classes 0-4, evaluate Recall@1/2/4/8, MAP@R and NMI on the unseen classes 5-9 (class-disjoint), PK batches of
5 classes x 8 images, L2-normalized 8-d embeddings, random shifts by up to 1 pixel, 300 Adam steps, 3 seeds. About a
minute on 2 CPU cores.

Why these choices: with five training classes of 8x8 digits a network separates its training classes within ~60
steps; without augmentation the mined multi-similarity loss (and its gradient) is then exactly 0 and nothing more is
learned. The 1-pixel shifts keep the loss positive to the last step (the training curve keeps falling) and improve
the unseen classes over the untrained network (see experiments/results/default.md). On 8x8 digits a WIDE random
network is already a strong retrieval baseline (Recall@1 ~0.95 at 32-d); at 8-d the untrained network is much weaker,
so the effect of training is visible. This is a quick end-to-end check of the pipeline, not a benchmark of the methods.

  python -m experiments.train --config experiments/configs/default.py --workdir runs/default
"""

import ml_collections


def get_config():
  c = ml_collections.ConfigDict()
  c.name = "default"
  c.seed = 0
  c.seeds = (0, 1, 2)                  # one run per seed; results are mean ± std over them
  c.dataset = "sklearn_digits"
  c.protocol = ""                      # omniglot: full | small; "" = the dataset's default
  c.data_dir = ""
  c.manual_dir = ""
  c.split = "retrieval"                # retrieval (class-disjoint) | limited (S0 limited-data protocol)
  c.samples_per_class = 0              # limited-data protocol: n per class
  c.image_size = 0                     # resize images to image_size x image_size at load time; 0 = native size
  c.validation = False                 # retrieval: carve validation classes out of the training classes and report
                                       # the test metrics at the step of the best validation MAP@R; limited: hold
                                       # out `validation_per_class` training images per class instead
  c.validation_per_class = 0           # limited-data protocol with validation: images per class held out of the pool
  c.selection_metric = "map@r"         # the validation metric that picks the reported step (limited: knn_accuracy or,
                                       # for two-channel nets, softmax_accuracy)
  c.eval_train_classes = False         # also evaluate retrieval on (2000 images of) the training classes

  c.preprocess = ml_collections.ConfigDict(dict(kind="shift", crop_padding=1))  # float | shift | standardize | flip | lcn | gcn_zca

  c.sampler = "pk"                     # pk | pair | random | npair | class_accumulating
  c.classes_per_batch = 5              # P
  c.samples_per_class_batch = 8        # K
  c.batch_size = 40                    # pair: pairs per batch; random / class_accumulating: batch size
  c.npair_mining = False               # npair sampler: negative class mining with the current network (S3)

  c.model = ml_collections.ConfigDict(dict(
      backbone="lenet", lenet_channels=(32, 64), lenet_hidden=128, lenet_kernel=3, padding="SAME",
      resnet_widths=(32, 64, 128), resnet_blocks=1, embedding_dim=8, layers=("fc1",), normalize=True,
      two_channel=False, feature_layer="", classifier_layer="", num_outputs=0,
      dtype="float32"))                # float32 | bfloat16 (backbone compute; parameters, heads and loss float32)

  c.objective = ml_collections.ConfigDict(dict(
      kind="metric", loss="multi_similarity", loss_hparams=ml_collections.ConfigDict(),
      density_adaptivity_weight=0.0, density_adaptivity_eta=0.5, global_orthogonal_weight=0.0,
      embedding_l2_weight=0.0, entropy_weight=0.0, pair_margin=1.0, pair_b=0.5, pair_lambda=1.0))

  # Cross-batch memory (XBM, Wang et al. 2020): a FIFO of the last `size` global-batch embeddings (with labels) used as
  # extra keys of the loss, under stop-gradient, from step `start_step` on. 0 = off. Pair-based registry losses only.
  c.memory = ml_collections.ConfigDict(dict(size=0, start_step=0))

  c.optimizer = ml_collections.ConfigDict(dict(
      name="adam", learning_rate=1e-3, schedule="constant", warmup_steps=0, momentum=0.9, weight_decay=0.0,
      new_layer_lr_multiplier=1.0, freeze_backbone_steps=0, loss_lr_multiplier=1.0, frozen_bn=False))

  c.num_steps = 300
  c.log_every = 10
  c.eval_every = 100
  c.checkpoint_every = 100
  c.eval_batch_size = 512
  c.eval_metrics = ("retrieval", "clustering")
  c.ks = (1, 2, 4, 8)
  c.progress = True

  c.distributed = ml_collections.ConfigDict(dict(coordinator_address="", num_processes=1, process_id=0,
                                                 local_device_count=0))
  return c

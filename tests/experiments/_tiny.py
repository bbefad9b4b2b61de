"""Tiny configs for the experiment tests: the default digits experiment shrunk to a few steps."""

from experiments.configs import default


def tiny_config(**changes):
  c = default.get_config()
  c.num_steps, c.eval_every, c.checkpoint_every, c.log_every, c.progress = 4, 2, 2, 1, False
  c.seeds = (0,)
  c.model.lenet_channels, c.model.lenet_hidden = (4, 8), 16
  with c.unlocked():
    for k, v in changes.items():
      node = c
      *parents, last = k.split(".")
      for p in parents:
        node = node[p]
      node[last] = v
  return c

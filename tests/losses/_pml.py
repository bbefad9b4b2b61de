"""pytorch-metric-learning as the reference of the agreement tests (float64, values and gradients).

`class_loss(...)` copies metric_jax's parameters into the PML module (transposed where PML stores `[D, C]`), runs
forward + backward and returns the value and the gradients with respect to the embeddings and to the parameters (in
metric_jax's layout). `pair_loss(...)` does the same for a parameter-free loss.
"""

from __future__ import annotations

import numpy as np
import torch


def class_loss(module, attribute: str, weights, embeddings, labels, *, transposed: bool):
  """`(value, d value / d embeddings, d value / d weights)` of a PML loss with learnable class parameters."""
  parameter = getattr(module, attribute)
  parameter.data = torch.tensor(np.asarray(weights, np.float64).T.copy() if transposed
                                else np.asarray(weights, np.float64).copy())
  parameter.grad = None
  x = torch.tensor(np.asarray(embeddings, np.float64), requires_grad=True)
  loss = module(x, torch.tensor(np.asarray(labels), dtype=torch.long))
  loss.backward()
  weights_grad = getattr(module, attribute).grad.numpy()
  return loss.item(), x.grad.numpy(), weights_grad.T if transposed else weights_grad


def pair_loss(module, embeddings, labels):
  """`(value, d value / d embeddings)` of a parameter-free PML loss."""
  x = torch.tensor(np.asarray(embeddings, np.float64), requires_grad=True)
  loss = module(x, torch.tensor(np.asarray(labels), dtype=torch.long))
  loss.backward()
  return loss.item(), x.grad.numpy()

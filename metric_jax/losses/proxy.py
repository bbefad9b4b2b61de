"""Proxy-based losses: Proxy-NCA (Movshovitz-Attias et al. 2017) and Proxy-Anchor (Kim et al. 2020).

Each class c has a learnable proxy `p_c`; `params = {"proxies": [C, D]}` (`metric_jax.losses.init_params`). Embeddings
and proxies are compared after L2 normalization, so only the proxies' directions matter.

Proxy-NCA, for every valid sample i with class y_i, on squared Euclidean distances `d_ic = |x̂_i − p̂_c|²` of the
normalized vectors and a scale `s`:

  L = 1/|B| Σ_i −log[ exp(−s·d_{i,y_i}) / Σ_{z∈Z_i} exp(−s·d_iz) ],

with `Z_i` the classes other than `y_i` (the paper's Eq. 9, "the proxies of the negative points"), or every class with
`positive_in_denominator=True` (a softmax over all proxies: pytorch-metric-learning's `ProxyNCALoss`, and the form
most re-implementations use; the paper's form can be negative).

Proxy-Anchor, on cosine similarities `s(x, p)`, with `P⁺` the proxies of the classes present in the batch, `X_p⁺` the
samples of proxy p's class and `X_p⁻` the others:

  L = 1/|P⁺| Σ_{p∈P⁺} log(1 + Σ_{x∈X_p⁺} exp(−α(s(x, p) − δ))) + 1/|P| Σ_{p∈P} log(1 + Σ_{x∈X_p⁻} exp(α(s(x, p) + δ))).

Each proxy is an anchor and the sums run over the batch (columns of the `[B, C]` class matrix). Multi-hot labels
`[B, C]` are supported (a sample is in `X_p⁺` of every class it carries, as in the paper's definition of positives);
Proxy-NCA takes class ids only.
"""

from __future__ import annotations

import math

import jax.numpy as jnp

from metric_jax import _checks, pairwise
from metric_jax.losses import _classes, _lse, _shard
from metric_jax.losses._registry import register


def _check_bool(value, name):
  if not isinstance(value, bool):
    raise TypeError(f"`{name}` must be a Python bool, got {value!r}.")
  return value


def proxy_nca_loss(matrix, labels, *, query_valid=None, softmax_scale: float = 1.0,
                   positive_in_denominator: bool = False, axis_name=None, block_size=None):
  """Proxy-NCA loss on the `[B, C]` squared Euclidean distances of normalized embeddings to normalized proxies.

  `L = 1/|B| Σ_i [s·d_{i,y_i} + logsumexp_{z∈Z_i}(−s·d_iz)]`, `Z_i` the classes other than `y_i`, or all classes
  with `positive_in_denominator`.

  Args:
    matrix: squared distances `d`, `[B, C]`, column c for class c.
    labels: integer class ids `[B]` in `0 ... C − 1`.
    query_valid: optional boolean `[B]`; False rows are padding.
    softmax_scale: `s`, the inverse temperature of the softmax over proxies (the paper uses 1).
    positive_in_denominator: include the own class in the denominator (a proper softmax; pytorch-metric-learning's
      `ProxyNCALoss`); False is the paper's Eq. 9.
    axis_name: inside `shard_map`, the axis over which the rows are sharded (`matrix` holds this device's rows; the
      normalisers are combined over the axis); `block_size`: rows in blocks. See `metric_jax.losses._classes`.

  Returns:
    Scalar loss, the mean over valid rows (0 without valid rows). With one class and the paper's form the
    denominator is empty and a row's term is 0.

  References:
    Movshovitz-Attias, Toshev, Leung, Ioffe, Singh, "No Fuss Distance Metric Learning using Proxies", ICCV 2017.
  """
  _check_proxy_nca(softmax_scale, positive_in_denominator)
  problem = _classes.from_class_matrix(matrix, labels, query_valid, loss="proxy_nca", multi_hot_reason=_ONE_PROXY,
                                       axis_name=axis_name, block_size=block_size)
  return _proxy_nca(problem, softmax_scale, positive_in_denominator)


_ONE_PROXY = "its softmax has one positive proxy per sample."


def _check_proxy_nca(softmax_scale, positive_in_denominator):
  _checks.check_positive(softmax_scale, "softmax_scale")
  _check_bool(positive_in_denominator, "positive_in_denominator")


def _proxy_nca(problem, softmax_scale, positive_in_denominator):
  def per_row(rows, consts):
    logits = -softmax_scale * rows.matrix
    denominator = jnp.ones_like(rows.target) if positive_in_denominator else ~rows.target
    lse, nonempty = _lse.masked_logsumexp(logits, denominator, axis=1)
    return jnp.where(nonempty, lse - jnp.sum(jnp.where(rows.target, logits, 0.0), axis=1), 0.0)

  return problem.mean_over_rows(per_row)


def proxy_anchor_loss(matrix, labels, *, query_valid=None, margin: float = 0.1, alpha: float = 32.0, axis_name=None,
                      block_size=None):
  """Proxy-Anchor loss on the `[B, C]` cosine similarities of embeddings to proxies.

  `L = 1/|P⁺| Σ_{p∈P⁺} log(1 + Σ_{x∈X_p⁺} e^{−α(s(x,p) − δ)}) + 1/C Σ_p log(1 + Σ_{x∈X_p⁻} e^{α(s(x,p) + δ)})`.

  Args:
    matrix: cosine similarities `s`, `[B, C]`, column c for class c's proxy.
    labels: integer class ids `[B]` in `0 ... C − 1`, or multi-hot `[B, C]` (boolean or 0/1).
    query_valid: optional boolean `[B]`; False rows are padding.
    margin: `δ` (paper: 0.1).
    alpha: `α`, the scale (paper: 32).
    axis_name: inside `shard_map`, the axis over which the rows are sharded (`matrix` holds this device's rows; the
      per-proxy sums over the batch and the count |P⁺| are combined over the axis); `block_size`: rows in blocks. See `metric_jax.losses._classes`.

  Returns:
    Scalar loss; without valid rows 0.

  References:
    Kim, Kim, Cho, Kwak, "Proxy Anchor Loss for Deep Metric Learning", CVPR 2020.
  """
  _check_proxy_anchor(margin, alpha)
  problem = _classes.from_class_matrix(matrix, labels, query_valid, loss="proxy_anchor", axis_name=axis_name,
                                       block_size=block_size)
  return _proxy_anchor(problem, margin, alpha)


def _check_proxy_anchor(margin, alpha):
  _checks.check_positive(alpha, "alpha")
  _checks.check_positive(margin, "margin", strict=False)


def _proxy_anchor(problem, margin, alpha):
  def block(rows, consts):
    positive = rows.target & rows.valid[:, None]
    negative = ~rows.target & rows.valid[:, None]
    bad = jnp.sum(rows.valid & ~rows.in_range).astype(rows.matrix.dtype)
    # Per-proxy terms are log-sum-exps over the batch (axis 0): partials of this block, combined below.
    return None, (_shard.block_logsumexp(-alpha * (rows.matrix - margin), positive, axis=0),
                  _shard.block_logsumexp(alpha * (rows.matrix + margin), negative, axis=0),
                  jnp.sum(positive, axis=0).astype(rows.matrix.dtype), bad)

  _, (pos_parts, neg_parts, num_pos, bad), alarm = problem.map(block)
  pos_lse, _ = _shard.combine_logsumexp(*pos_parts, problem.axis_name, add_one=True)
  neg_lse, _ = _shard.combine_logsumexp(*neg_parts, problem.axis_name, add_one=True)
  has_pos = problem.sum_blocks(num_pos) > 0          # P⁺: the proxies with a positive sample in the batch
  loss = jnp.sum(pos_lse) / jnp.maximum(jnp.sum(has_pos), 1) + jnp.sum(neg_lse) / problem.num_classes
  return jnp.where(problem.sum_blocks(bad) > 0, jnp.nan, loss) + alarm + problem.alarm


def _init_proxy_nca(key, *, num_classes, embedding_dim, dtype, **_):
  """Standard normal proxies (pytorch-metric-learning's `ProxyNCALoss` default; only their directions are used)."""
  return {"proxies": _classes.normal_init(key, (num_classes, embedding_dim), dtype, 1.0)}


def _init_proxy_anchor(key, *, num_classes, embedding_dim, dtype, **_):
  """Kaiming normal, fan-out mode, of the `[C, D]` proxies, `N(0, 2 / C)`: the authors' code (`kaiming_normal_`)."""
  return {"proxies": _classes.normal_init(key, (num_classes, embedding_dim), dtype, math.sqrt(2.0 / num_classes))}


@register("proxy_nca", init=_init_proxy_nca, multi_hot=False)
def proxy_nca(embeddings, labels, *, params=None, valid=None, softmax_scale: float = 1.0,
              positive_in_denominator: bool = False, axis_name=None, block_size=None, memory=None):
  """Proxy-NCA loss of `[B, D]` embeddings with class ids `[B]` and `params = {"proxies": [C, D]}` (see
  `proxy_nca_loss`); distances between the L2-normalized embeddings and proxies.

  Scale: `axis_name` (local rows inside `shard_map`, parameters replicated; global-batch loss), `block_size` (rows in
  blocks); `memory` is refused (the keys are the class parameters). See `metric_jax.losses._classes`.
  """
  _check_proxy_nca(softmax_scale, positive_in_denominator)
  problem = _classes.from_class_embeddings(
      embeddings, labels, valid, params, "proxies", "proxy_nca", matrix_fn=_unit_squared_distance,
      prepare=pairwise.l2_normalize, multi_hot_reason=_ONE_PROXY, axis_name=axis_name, block_size=block_size,
      memory=memory)
  return _proxy_nca(problem, softmax_scale, positive_in_denominator)


def _unit_squared_distance(embeddings, unit_proxies):
  return pairwise.squared_euclidean(pairwise.l2_normalize(embeddings), unit_proxies)


@register("proxy_anchor", init=_init_proxy_anchor)
def proxy_anchor(embeddings, labels, *, params=None, valid=None, margin: float = 0.1, alpha: float = 32.0,
                 axis_name=None, block_size=None, memory=None):
  """Proxy-Anchor loss of `[B, D]` embeddings with class ids `[B]` or multi-hot `[B, C]` labels and
  `params = {"proxies": [C, D]}`, on cosine similarities (see `proxy_anchor_loss`).

  Scale: `axis_name` (local rows inside `shard_map`, parameters replicated; global-batch loss), `block_size` (rows in
  blocks); `memory` is refused (the keys are the class parameters). See `metric_jax.losses._classes`. The per-proxy sums over the batch run over every device and block.
  """
  _check_proxy_anchor(margin, alpha)
  problem = _classes.from_class_embeddings(embeddings, labels, valid, params, "proxies", "proxy_anchor",
                                           matrix_fn=_classes.cosine_to_classes, axis_name=axis_name,
                                           block_size=block_size, memory=memory)
  return _proxy_anchor(problem, margin, alpha)


__all__ = ["proxy_nca_loss", "proxy_anchor_loss", "proxy_nca", "proxy_anchor"]

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
from metric_jax.losses import _classes, _lse
from metric_jax.losses._registry import register


def _check_bool(value, name):
  if not isinstance(value, bool):
    raise TypeError(f"`{name}` must be a Python bool, got {value!r}.")
  return value


def proxy_nca_loss(matrix, labels, *, query_valid=None, softmax_scale: float = 1.0,
                   positive_in_denominator: bool = False):
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

  Returns:
    Scalar loss, the mean over valid rows (0 without valid rows). With one class and the paper's form the
    denominator is empty and a row's term is 0.

  References:
    Movshovitz-Attias, Toshev, Leung, Ioffe, Singh, "No Fuss Distance Metric Learning using Proxies", ICCV 2017.
  """
  _checks.check_positive(softmax_scale, "softmax_scale")
  _check_bool(positive_in_denominator, "positive_in_denominator")
  matrix, labels, valid, num_classes, alarm = _classes.check_class_matrix(matrix, labels, query_valid)
  target, in_range = _classes.class_targets(
      labels, valid, num_classes, loss="proxy_nca",
      multi_hot_reason="its softmax has one positive proxy per sample.")
  logits = -softmax_scale * matrix
  denominator = jnp.ones_like(target) if positive_in_denominator else ~target
  lse, nonempty = _lse.masked_logsumexp(logits, denominator, axis=1)
  per_row = jnp.where(nonempty, lse - jnp.sum(jnp.where(target, logits, 0.0), axis=1), 0.0)
  return _classes.mean_over_rows(per_row, valid, in_range) + alarm


def proxy_anchor_loss(matrix, labels, *, query_valid=None, margin: float = 0.1, alpha: float = 32.0):
  """Proxy-Anchor loss on the `[B, C]` cosine similarities of embeddings to proxies.

  `L = 1/|P⁺| Σ_{p∈P⁺} log(1 + Σ_{x∈X_p⁺} e^{−α(s(x,p) − δ)}) + 1/C Σ_p log(1 + Σ_{x∈X_p⁻} e^{α(s(x,p) + δ)})`.

  Args:
    matrix: cosine similarities `s`, `[B, C]`, column c for class c's proxy.
    labels: integer class ids `[B]` in `0 ... C − 1`, or multi-hot `[B, C]` (boolean or 0/1).
    query_valid: optional boolean `[B]`; False rows are padding.
    margin: `δ` (paper: 0.1).
    alpha: `α`, the scale (paper: 32).

  Returns:
    Scalar loss; without valid rows 0.

  References:
    Kim, Kim, Cho, Kwak, "Proxy Anchor Loss for Deep Metric Learning", CVPR 2020.
  """
  _checks.check_positive(alpha, "alpha")
  _checks.check_positive(margin, "margin", strict=False)
  matrix, labels, valid, num_classes, alarm = _classes.check_class_matrix(matrix, labels, query_valid)
  target, in_range = _classes.class_targets(labels, valid, num_classes, loss="proxy_anchor")
  positive = target & valid[:, None]
  negative = ~target & valid[:, None]
  # Per-proxy terms are log-sum-exps over the batch (axis 0); the normalisers |P⁺| and C are global counts.
  pos_lse, has_pos = _lse.masked_logsumexp(-alpha * (matrix - margin), positive, axis=0, add_one=True)
  neg_lse, _ = _lse.masked_logsumexp(alpha * (matrix + margin), negative, axis=0, add_one=True)
  loss = jnp.sum(pos_lse) / jnp.maximum(jnp.sum(has_pos), 1) + jnp.sum(neg_lse) / num_classes
  return jnp.where(jnp.any(valid & ~in_range), jnp.nan, loss) + alarm


def _init_proxy_nca(key, *, num_classes, embedding_dim, dtype, **_):
  """Standard normal proxies (pytorch-metric-learning's `ProxyNCALoss` default; only their directions are used)."""
  return {"proxies": _classes.normal_init(key, (num_classes, embedding_dim), dtype, 1.0)}


def _init_proxy_anchor(key, *, num_classes, embedding_dim, dtype, **_):
  """Kaiming normal, fan-out mode, of the `[C, D]` proxies, `N(0, 2 / C)`: the authors' code (`kaiming_normal_`)."""
  return {"proxies": _classes.normal_init(key, (num_classes, embedding_dim), dtype, math.sqrt(2.0 / num_classes))}


@register("proxy_nca", init=_init_proxy_nca, multi_hot=False)
def proxy_nca(embeddings, labels, *, params=None, valid=None, softmax_scale: float = 1.0,
              positive_in_denominator: bool = False):
  """Proxy-NCA loss of `[B, D]` embeddings with class ids `[B]` and `params = {"proxies": [C, D]}` (see
  `proxy_nca_loss`); distances between the L2-normalized embeddings and proxies."""
  embeddings, labels_, valid, proxies, alarm = _classes.embedding_inputs(embeddings, labels, valid, params, "proxies",
                                                                         "proxy_nca")
  matrix = pairwise.squared_euclidean(pairwise.l2_normalize(embeddings), pairwise.l2_normalize(proxies))
  return proxy_nca_loss(matrix, labels_, query_valid=valid, softmax_scale=softmax_scale,
                        positive_in_denominator=positive_in_denominator) + alarm


@register("proxy_anchor", init=_init_proxy_anchor)
def proxy_anchor(embeddings, labels, *, params=None, valid=None, margin: float = 0.1, alpha: float = 32.0):
  """Proxy-Anchor loss of `[B, D]` embeddings with class ids `[B]` or multi-hot `[B, C]` labels and
  `params = {"proxies": [C, D]}`, on cosine similarities (see `proxy_anchor_loss`)."""
  embeddings, labels_, valid, proxies, alarm = _classes.embedding_inputs(embeddings, labels, valid, params, "proxies",
                                                                         "proxy_anchor")
  matrix = _classes.cosine_to_classes(embeddings, proxies)
  return proxy_anchor_loss(matrix, labels_, query_valid=valid, margin=margin, alpha=alpha) + alarm


__all__ = ["proxy_nca_loss", "proxy_anchor_loss", "proxy_nca", "proxy_anchor"]

"""Row-sharded (`axis_name`), blocked (`block_size`) and memory-extended (`memory`) evaluation of the losses.

Every loss is written as a function of *query rows*: each query row i of the `[B, M]` matrix (queries x keys) gives
per-row values (a log-sum-exp over its positives, its number of positive pairs, its triplet sums, ...) and the loss
combines them with a few *global statistics* (sums over all rows: pair counts, normalisers, histograms, per-column
log-sum-exps, per-class sums). This module holds the machinery that evaluates such a loss on a subset of the rows at a
time, so that neither the whole matrix nor the whole batch has to sit on one device:

- `axis_name` (DESIGN.md, "Scale"): inside `jax.shard_map` over that axis each device passes its local rows
  (`embeddings [b, D]`, `labels [b]`, `valid [b]`). The keys are the global batch, gathered here (`all_gather`,
  tiled: device d's rows are keys `d * b ... d * b + b - 1`, so query i of device d is key `self_offset = d * b + i`);
  each device builds only its `[b, G]` rows, and every global statistic is combined over the axis (`psum`; `pmax` for
  the shift of a log-sum-exp, under `stop_gradient`). The returned loss is the global-batch loss, the same on every
  device.
- `block_size`: the query rows are processed in blocks of that many rows with `lax.map`, each block rematerialized in
  the backward pass (`jax.checkpoint`), so the peak memory is O(block_size x M) instead of O(B x M) (the convenience
  forms build each block's matrix rows from the embeddings; the matrix forms slice the given matrix). The
  rematerialization keeps the per-row statistics of each block (reductions over the keys: row maxima and minima of
  the mining and of the log-sum-exp shifts, row sums; `save_row_statistics`), O(block_size) numbers per reduction,
  so the backward pass rebuilds the `[block, M]` values it needs but not the passes that only fed those reductions.
- `memory`: extra keys `(embeddings [K, D], labels, valid [K])` appended after the batch keys, under
  `stop_gradient` (cross-batch memory, Wang et al. 2020); replicated, not gathered.

Gradients through the collectives. Every term of a loss is a *local share* (a function of the device's own rows and
of the gathered keys) that enters the value only through a `psum`, or a function of such sums. Then:
- under `jax.shard_map(..., check_vma=True)` (the default) `jax.grad` of the loss w.r.t. the local embeddings gives
  exactly the local rows of the unsharded gradient: `psum` transposes to a broadcast (the global loss has cotangent 1
  on every device), and `all_gather` to `psum_scatter`, which adds up the key-side contributions of all devices;
  parameters passed replicated (proxies) get the full gradient on every device;
- under `check_vma=False` (the `Trainer`'s step) every collective transposes to a sum over devices, so differentiate
  `loss / n` (n devices) and `psum` the parameter gradients, as `metric_jax.train.Trainer` does.
A term computed on every device from the gathered keys alone would be typed device-varying and get n times its
gradient under `check_vma=True`; no loss has one.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from metric_jax import _checks, labels as _labels, mining as _mining
from metric_jax.losses import _finite


# ------------------------------------------------------------------------------------------------------ collectives
def check_axis_name(axis_name):
  if axis_name is not None and not isinstance(axis_name, str):
    raise TypeError(f"`axis_name` must be None or the name (str) of a `shard_map` / `pmap` axis, got {axis_name!r}.")
  return axis_name


def check_block_size(block_size):
  if block_size is None:
    return None
  if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
    raise ValueError(f"`block_size` must be None or a positive Python int, got {block_size!r}.")
  return block_size


def axis_size(axis_name) -> int:
  """Number of devices along `axis_name` (1 for None), a static int."""
  return 1 if axis_name is None else int(jax.lax.axis_size(axis_name))


def axis_index(axis_name):
  """This device's index along `axis_name` (0 for None)."""
  return 0 if axis_name is None else jax.lax.axis_index(axis_name)


def gather(x, axis_name):
  """`all_gather(x, tiled=True)`: the `[n * b, ...]` concatenation of every device's `[b, ...]` rows (x for None)."""
  return x if axis_name is None else jax.lax.all_gather(x, axis_name, tiled=True)


def psum(tree, axis_name):
  """Sum over the devices of `axis_name` (identity for None)."""
  return tree if axis_name is None else jax.lax.psum(tree, axis_name)


def pmax(x, axis_name):
  """Max over the devices of `axis_name`, without gradient (only used as a shift)."""
  x = jax.lax.stop_gradient(x)
  return x if axis_name is None else jax.lax.pmax(x, axis_name)


def sum_blocks(tree, axis_name):
  """Sum of per-block statistics (leading axis: the blocks) over the blocks and the devices."""
  return psum(jax.tree.map(lambda x: jnp.sum(x, axis=0), tree), axis_name)


def block_logsumexp(values, mask, axis: int):
  """`(shift, total)` of a masked log-sum-exp of one block: `shift = max` (no gradient; 0 where empty) and
  `total = sum exp(values - shift)`; combine blocks and devices with `combine_logsumexp`."""
  masked = jnp.where(mask, values, -jnp.inf)
  shift = jax.lax.stop_gradient(jnp.max(masked, axis=axis))
  shift = jnp.where(jnp.isfinite(shift), shift, 0.0)
  # Masked entries are -inf before the exp (as in `_lse.masked_logsumexp`): exp gives 0 with a zero gradient, and
  # the shift is finite, so no second `where` is needed (it cost proxy_anchor ~20% at B = 256).
  total = jnp.sum(jnp.exp(masked - jnp.expand_dims(shift, axis)), axis=axis)
  return shift, total


def combine_logsumexp(shifts, totals, axis_name, *, add_one: bool = False):
  """Global `log(sum exp)` (or `log(1 + sum exp)`) from per-block `(shift, total)` stacked on a leading axis.

  Returns:
    `(lse, nonempty)`; where nothing was summed (and no `add_one`) `lse` is 0 with a zero gradient.
  """
  shift = pmax(jnp.max(shifts, axis=0), axis_name)
  if add_one:
    shift = jnp.maximum(shift, 0.0)
  total = psum(jnp.sum(totals * jnp.exp(shifts - shift[None]), axis=0), axis_name)
  if add_one:
    total = total + jnp.exp(-shift)
  nonempty = total > 0
  lse = jnp.log(jnp.where(nonempty, total, 1.0)) + shift
  return jnp.where(nonempty, lse, 0.0), nonempty


# ----------------------------------------------------------------------------------------------------------- blocks
_REDUCTIONS = frozenset({"reduce_sum", "reduce_max", "reduce_min", "reduce_and", "reduce_or", "argmax", "argmin"})
_MIN_KEYS_TO_SAVE = 32


def save_row_statistics(prim, *avals, **params) -> bool:
  """`jax.checkpoint` policy of the blocks: keep the outputs of reductions over the last axis (the keys; or the
  embedding dimension) of at least 32 entries, i.e. per-row statistics, and rematerialize everything else.

  Saving them costs O(rows) memory per reduction (32x or more smaller than its input) and spares the backward pass
  the passes over `[block, M]` that only fed them; values and gradients equal the fully rematerialized ones to float
  rounding (XLA may fuse the recomputed operations differently).
  """
  if prim.name not in _REDUCTIONS or not avals or not hasattr(avals[0], "shape"):
    return False
  shape, axes = avals[0].shape, tuple(params.get("axes", ()))
  return len(shape) >= 1 and (len(shape) - 1) in axes and shape[-1] >= _MIN_KEYS_TO_SAVE


def _split_blocks(rows, block_size: int):
  """`(head, starts, split)`: the first `split` rows of the pytree `rows` as `[num_blocks, block_size, ...]` full
  blocks, each block's first row index `starts`, and `split` (the rows after it form one smaller tail block)."""
  num_full = jax.tree.leaves(rows)[0].shape[0] // block_size
  split = num_full * block_size
  head = jax.tree.map(lambda x: x[:split].reshape((num_full, block_size) + x.shape[1:]), rows)
  return head, jnp.arange(num_full, dtype=jnp.int32) * block_size, split


def map_blocks(fn: Callable, rows, consts=(), *, block_size: Optional[int]):
  """Evaluates `fn(rows_block, consts, start) -> (row_out, block_out)` over blocks of the leading axis of `rows`.

  `rows` is a pytree of arrays sharing their leading axis (the query rows); `start` is the index of the block's first
  row. Without `block_size` (or when it covers all rows) `fn` runs once on all rows. Otherwise full blocks run under
  `lax.map`, each rematerialized in the backward pass (`jax.checkpoint`: only the block's inputs and its per-row
  statistics are kept, `save_row_statistics`), and the remaining rows as one smaller block.

  Returns:
    `(row_out, block_outs)`: `row_out` concatenated over the rows (`[B, ...]`), `block_outs` stacked over the blocks
    (`[num_blocks, ...]`).
  """
  num_rows = jax.tree.leaves(rows)[0].shape[0]
  if block_size is None or block_size >= num_rows:
    row_out, block_out = fn(rows, consts, 0)
    return row_out, jax.tree.map(lambda x: x[None], block_out)
  step = jax.checkpoint(fn, prevent_cse=False, policy=save_row_statistics)
  head, starts, split = _split_blocks(rows, block_size)
  row_out, block_out = jax.lax.map(lambda xs: step(xs[0], consts, xs[1]), (head, starts))
  row_out = jax.tree.map(lambda x: x.reshape((split,) + x.shape[2:]), row_out)
  if split < num_rows:
    tail_rows, tail_block = step(jax.tree.map(lambda x: x[split:], rows), consts, jnp.int32(split))
    row_out = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), row_out, tail_rows)
    block_out = jax.tree.map(lambda a, b: jnp.concatenate([a, b[None]]), block_out, tail_block)
  return row_out, block_out


# ------------------------------------------------------------------------------------------------------------- memory
def check_memory(memory, dim: int, labels):
  """`(embeddings [K, D] under stop_gradient with invalid slots zeroed, labels, valid [K], alarm)` or None.

  The memory's labels must be of the batch's kind (class ids, or multi-hot with the same number of columns). Invalid
  slots may hold anything; a non-finite valid slot makes the alarm NaN.
  """
  if memory is None:
    return None
  if not isinstance(memory, (tuple, list)) or len(memory) != 3:
    raise TypeError("`memory` must be None or a tuple (embeddings [K, D], labels [K] or [K, L], valid [K]), got "
                    f"{type(memory).__name__}{'' if not isinstance(memory, (tuple, list)) else f' of {len(memory)}'}.")
  embeddings, mem_labels, valid = memory
  embeddings = _checks.check_float_array(embeddings, "memory[0] (embeddings)", 2)
  if embeddings.shape[1] != dim:
    raise ValueError(f"`memory[0] (embeddings)` has dimension {embeddings.shape[1]} but the embeddings have {dim}.")
  size = embeddings.shape[0]
  mem_labels = _checks.check_labels(mem_labels, size, "memory[1] (labels)", multi_hot=True)
  if _labels.is_multi_hot(mem_labels) != _labels.is_multi_hot(labels) or (
      _labels.is_multi_hot(labels) and mem_labels.shape[1] != labels.shape[1]):
    raise ValueError(f"`memory[1] (labels)` {tuple(mem_labels.shape)} must be of the same kind as `labels` "
                     f"{tuple(labels.shape)} (class ids [K], or multi-hot [K, L] with the same L).")
  valid = _checks.check_valid(valid, size, "memory[2] (valid)")
  embeddings = jax.lax.stop_gradient(embeddings)
  return _finite.sanitize_rows(embeddings, valid) + (mem_labels, valid)


def append_memory(keys, key_labels, key_valid, alarm, mem):
  """The gathered keys followed by the checked memory `mem` (`check_memory`'s output, or None: unchanged); the
  memory's alarm is added to `alarm`. Returns `(keys, key_labels, key_valid, alarm)`."""
  if mem is None:
    return keys, key_labels, key_valid, alarm
  mem_embeddings, mem_alarm, mem_labels, mem_valid = mem
  return (jnp.concatenate([keys, mem_embeddings.astype(keys.dtype)]),
          jnp.concatenate([key_labels, mem_labels.astype(key_labels.dtype)]),
          jnp.concatenate([key_valid, mem_valid]), alarm + mem_alarm)


# ------------------------------------------------------------------------------------------------------ pair problems
class PairBlock(NamedTuple):
  """One block of query rows of a pair loss, as the loss's row function sees it.

  matrix: `[blk, M]` pairwise matrix rows, entries of pairs that are not valid set to 0 (zero gradient).
  positive, negative, valid: `[blk, M]` pair masks (`metric_jax.labels.PairMasks`).
  query_valid: `[blk]`; query_labels: `[blk]` or `[blk, L]`; rows: `[blk]` global query indices.
  """
  matrix: Any
  positive: Any
  negative: Any
  valid: Any
  query_valid: Any
  query_labels: Any
  rows: Any


class PairProblem:
  """The local query rows of a pair loss, its keys, and how to build the matrix rows of a block of queries.

  Built by `from_matrix` (matrix forms) or `from_embeddings` (convenience forms). `map(fn)` runs the loss's row function
  over the blocks; the collectives (`sum`, `logsumexp`, `gather`) combine what the rows give over the axis.
  """

  def __init__(self, *, num_rows, query_labels, query_valid, key_labels, key_valid, self_offset, row_offset,
               axis_name, block_size, block_matrix, row_inputs, alarm, matrix_alarm, dtype, keys=None,
               matrix_fn=None, symmetric=False):
    self.num_rows = num_rows
    self.query_labels = query_labels
    self.query_valid = query_valid
    self.key_labels = key_labels
    self.key_valid = key_valid
    self.num_keys = key_valid.shape[0]
    self.self_offset = self_offset
    self.row_offset = row_offset            # global index of local row 0
    self.axis_name = axis_name
    self.block_size = block_size
    self._block_matrix = block_matrix        # (row_inputs block, start) -> [blk, M] matrix rows
    self._row_inputs = row_inputs
    self.alarm = alarm                       # non-finite alarm of the inputs (0.0 or NaN), global
    self._matrix_alarm = matrix_alarm        # whether each block's matrix rows are checked too (matrix forms)
    self.dtype = dtype
    self._keys = keys                        # convenience forms: the key embeddings [M, D] and
    self._matrix_fn = matrix_fn              # `matrix_fn(queries, keys)` (`map_linear`)
    # The keys are exactly the queries of every device (key index = global row index) and the matrix is symmetric as
    # a function of the embeddings (`matrix_fn(a, b) = matrix_fn(b, a).T`, every `_metric` function): a loss may then
    # use a row's statistics as the same sample's column statistics, and move a gradient term from entry (i, k) to
    # entry (k, i), since `d matrix_ik / d embeddings = d matrix_ki / d embeddings` (`lifted._lifted_symmetric`).
    self.symmetric = symmetric
    # The keys sorted by class label once for all blocks (`label_candidates`); None for multi-hot labels. Unused, it
    # costs nothing under `jit` (dead code).
    self._key_order = None if _labels.is_multi_hot(key_labels) else jnp.argsort(key_labels, stable=True)

  @property
  def single_block(self) -> bool:
    """Whether `map` evaluates all rows in one block (no `block_size`, or one that covers them)."""
    return self.block_size is None or self.block_size >= self.num_rows

  # -- collectives ---------------------------------------------------------------------------------------------------
  def psum(self, tree):
    return psum(tree, self.axis_name)

  def sum_blocks(self, tree):
    return sum_blocks(tree, self.axis_name)

  def gather(self, x):
    return gather(x, self.axis_name)

  def count(self, mask):
    """Global number of True entries of a local mask, in the matrix dtype (exact below 2^24 in float32)."""
    return self.psum(jnp.sum(mask).astype(self.dtype))

  def num_valid_queries(self):
    return self.count(self.query_valid)

  # -- blocks --------------------------------------------------------------------------------------------------------
  def block(self, inputs, start, matrix=None) -> PairBlock:
    """The `PairBlock` of the query rows `inputs` (a slice of the row inputs) starting at local row `start`; its
    matrix rows are built from `inputs` unless given (not yet sanitized: see `_sanitized`)."""
    q_labels, q_valid = inputs["labels"], inputs["valid"]
    offset = None if self.self_offset is None else self.self_offset + start
    masks = _labels.pair_masks(q_labels, self.key_labels, query_valid=q_valid, key_valid=self.key_valid,
                               self_offset=offset)
    if matrix is None:
      matrix = self._block_matrix(inputs, start)
    rows = self.row_offset + start + jnp.arange(q_valid.shape[0])
    return PairBlock(matrix, masks.positive, masks.negative, masks.valid, q_valid, q_labels, rows)

  def label_candidates(self, block: PairBlock, num_candidates: int):
    """`mining.label_candidates` of a block's queries over the keys (a superset of each query's positives, for
    `mining.positive_slots`), or None for multi-hot labels or `num_candidates` 0."""
    if not num_candidates or self._key_order is None:
      return None
    return _mining.label_candidates(block.query_labels, self.key_labels, block.query_valid, num_candidates,
                                    key_order=self._key_order)

  def map(self, fn: Callable, extras=None, consts=()):
    """Runs `fn(block: PairBlock, extras_block, consts) -> (row_out, block_out)` over the blocks of query rows.

    `extras`: a pytree of per-row arrays `[B, ...]` handed to `fn` sliced like the rows. Returns `(row_out [B, ...],
    block_outs [num_blocks, ...], alarm)`, the alarm (0.0 or NaN, combined over the axis) covering the matrix entries
    of the valid pairs in the matrix forms (0.0 in the convenience forms, whose inputs `self.alarm` covers).
    """

    def run(rows, consts, start):
      block = self.block(rows["inputs"], start)
      alarm = jnp.zeros((), self.dtype)
      if self._matrix_alarm:
        alarm = _finite.alarm(block.matrix, block.valid)
      row_out, block_out = fn(_sanitized(block), rows["extras"], consts)
      return row_out, (block_out, alarm)

    row_out, (block_out, alarms) = map_blocks(run, {"inputs": self._row_inputs, "extras": extras}, consts,
                                              block_size=self.block_size)
    return row_out, block_out, self.psum(jnp.sum(alarms))

  def map_linear(self, fn: Callable):
    """Runs a row function that gives its gradient explicitly: `fn(block) -> (value, coef, aux)`, with `value` a
    scalar computed without gradient, `coef = d value / d block.matrix` (`[blk, M]`, without gradient) and `aux` a
    pytree of per-block values without gradient (counts).

    Returns `(value, aux [num_blocks, ...], alarm)`: `value` summed over this device's blocks (combine over the axis
    with `psum`), carrying the gradient that `coef` gives. One block (or a matrix form): `value + sum(coef * (matrix -
    stop_gradient(matrix)))` inside the block, as before. Several blocks of a convenience form: each block turns its
    `coef` into gradients w.r.t. its queries and the keys at once (the VJP of `matrix_fn`, two `[blk, M] x [M, D]`
    products) and the gradients are reattached outside the blocks, so no block is rematerialized (its forward pass
    runs once instead of twice); the key gradients are accumulated in the `scan` carry (`[M, D]`).
    """
    if self.single_block or self._keys is None:
      def linear(block, extras, consts):
        value, coef, aux = jax.lax.stop_gradient(fn(block))
        return None, (value + jnp.sum(coef * (block.matrix - jax.lax.stop_gradient(block.matrix))), aux)

      _, (values, aux), alarm = self.map(linear)
      return jnp.sum(values), aux, alarm

    keys = jax.lax.stop_gradient(self._keys)
    embeddings = self._row_inputs["embeddings"]

    def run(key_grad, inputs, start):
      queries = jax.lax.stop_gradient(inputs["embeddings"])
      matrix, vjp = jax.vjp(self._matrix_fn, queries, keys)
      block = _sanitized(self.block(inputs, start, matrix=matrix))
      value, coef, aux = jax.lax.stop_gradient(fn(block))
      query_grad, block_key_grad = vjp(jnp.where(block.valid, coef, jnp.zeros((), coef.dtype)))
      return key_grad + block_key_grad, (value, aux, query_grad)

    head, starts, split = _split_blocks(self._row_inputs, self.block_size)
    key_grad, (values, aux, query_grad) = jax.lax.scan(
        lambda carry, xs: run(carry, *xs), jnp.zeros_like(keys), (head, starts))
    query_grad = query_grad.reshape((split,) + query_grad.shape[2:])
    value = jnp.sum(values)
    if split < self.num_rows:
      key_grad, (tail_value, tail_aux, tail_grad) = run(
          key_grad, jax.tree.map(lambda x: x[split:], self._row_inputs), jnp.int32(split))
      value = value + tail_value
      aux = jax.tree.map(lambda a, b: jnp.concatenate([a, b[None]]), aux, tail_aux)
      query_grad = jnp.concatenate([query_grad, tail_grad])
    value = (value + jnp.sum(query_grad * (embeddings - jax.lax.stop_gradient(embeddings)))
             + jnp.sum(key_grad * (self._keys - keys)))
    return value, aux, jnp.zeros((), self.dtype)

  # -- every unordered pair once ------------------------------------------------------------------------------------
  def _pair_windows(self):
    """`(block_size, window)` of `map_pairs`' half windows, or None where they do not apply.

    They need a `symmetric` problem (the keys are the global batch, the matrix a symmetric function of the
    embeddings), local rows that split into whole blocks, and at least 3 blocks in the global batch (with 1 or 2 the
    window would be every key). With `nb` global blocks, the window of the block that starts at global row `r` is the
    `window = (nb // 2 + 1) * block_size` keys from key `r` on, wrapping around the batch.
    """
    if not self.symmetric or self._keys is None:
      return None
    block_size = self.num_rows if self.single_block else self.block_size
    if self.num_rows % block_size:
      return None
    num_blocks = self.num_keys // block_size
    if num_blocks < 3:
      return None
    return block_size, (num_blocks // 2 + 1) * block_size

  @property
  def pairs_once(self) -> bool:
    """Whether `map_pairs` visits each unordered pair once (half windows), rather than every row of the matrix."""
    return self._pair_windows() is not None

  def pair_counts(self, block: PairBlock, weight):
    """`(positive, negative)` pair counts of a `map_pairs` block, weighted by `weight` (exact: int32 per block, < 2^31
    pairs; then in the matrix dtype, to be summed over the blocks with `sum_blocks`)."""
    weight = weight.astype(jnp.int32)
    return tuple(jnp.sum(jnp.where(mask, weight, 0)).astype(self.dtype) for mask in (block.positive, block.negative))

  def _pair_weights(self):
    """`[window]` multiplicity of each window column (`map_pairs`), or `[M]` ones without windows."""
    windows = self._pair_windows()
    if windows is None:
      return jnp.ones((self.num_keys,), self.dtype)
    block_size, window = windows
    weight = np.full(window, 2.0)
    weight[:block_size] = 1.0                    # the block's own keys: both orders of each pair are in the block
    if (self.num_keys // block_size) % 2 == 0:
      weight[-block_size:] = 1.0                 # the opposite block also has this block in its window
    return jnp.asarray(weight, self.dtype)

  def _window_run(self, fn, *, with_vjp: bool):
    """`run(inputs, start) -> (fn(block, weight), block, vjp)` on a block's half window: queries and window keys
    without gradient; `vjp` (of the block's matrix w.r.t. both, for `map_pairs_linear`) is None without `with_vjp`."""
    block_size, window = self._pair_windows()
    keys = jax.lax.stop_gradient(self._keys)
    doubled = [jnp.concatenate([x, x]) for x in (keys, self.key_labels, self.key_valid)]
    weight = self._pair_weights()

    def run(inputs, start):
      first = self.row_offset + start          # global index of the block's first row = its window's first key
      window_keys, window_labels, window_valid = [jax.lax.dynamic_slice_in_dim(x, first, window) for x in doubled]
      queries = jax.lax.stop_gradient(inputs["embeddings"])
      if with_vjp:
        matrix, vjp = jax.vjp(self._matrix_fn, queries, window_keys)
      else:
        matrix, vjp = self._matrix_fn(queries, window_keys), None
      masks = _labels.pair_masks(inputs["labels"], window_labels, query_valid=inputs["valid"],
                                 key_valid=window_valid, self_offset=0)
      rows = first + jnp.arange(block_size)
      block = _sanitized(PairBlock(matrix, masks.positive, masks.negative, masks.valid, inputs["valid"],
                                   inputs["labels"], rows))
      return jax.lax.stop_gradient(fn(block, weight)), block, vjp

    return run

  def map_pairs(self, fn: Callable):
    """Runs `fn(block: PairBlock, weight) -> block_out` without gradient (`block.matrix` under `stop_gradient`) so
    that each unordered pair {i, k} is seen once (i ≠ k) when the problem allows it, and returns `(block_outs
    [num_blocks, ...], alarm)`.

    For a function of the pair that is symmetric in its two members (`f(D_ik, masks_ik) = f(D_ki, masks_ki)`), the sum
    of `weight[k] * f` over the block's entries, summed over the blocks, is the sum of `f` over every ordered pair of
    the global matrix. With half windows (`_pair_windows`) each block builds `[block, window]` entries, about half the
    matrix, `weight` is 1 or 2; otherwise the blocks are the usual rows (`map`) and `weight` is all ones.
    """
    if self._pair_windows() is None:
      def plain(block, extras, consts):
        block = block._replace(matrix=jax.lax.stop_gradient(block.matrix))
        return None, fn(block, self._pair_weights())

      _, out, alarm = self.map(plain)
      return out, alarm
    run = self._window_run(fn, with_vjp=False)
    head, starts, _ = _split_blocks(self._row_inputs, self._pair_windows()[0])
    out = jax.lax.map(lambda xs: run(*xs)[0], (head, starts))
    return out, jnp.zeros((), self.dtype)

  def map_pairs_linear(self, fn: Callable):
    """`map_linear` over `map_pairs`' blocks: `fn(block, weight) -> (value, coef, aux)`, with `coef = d value /
    d block.matrix` (the weights included). Returns `(value, aux [num_blocks, ...], alarm)` as `map_linear`.

    With half windows each block turns its `coef` into the gradients of its queries and of its window's keys (the VJP
    of `matrix_fn`); the window gradients are added into a `[2M, D]` carry at the window's place and folded to `[M,
    D]` at the end, and both are reattached outside the blocks (nothing is rematerialized).
    """
    if self._pair_windows() is None:
      return self.map_linear(lambda block: fn(block, self._pair_weights()))
    block_size, window = self._pair_windows()
    run = self._window_run(fn, with_vjp=True)
    keys = jax.lax.stop_gradient(self._keys)

    def step(key_grad, xs):
      inputs, start = xs
      (value, coef, aux), block, vjp = run(inputs, start)
      query_grad, window_grad = vjp(jnp.where(block.valid, coef, jnp.zeros((), coef.dtype)))
      first = self.row_offset + start
      window_grad = window_grad + jax.lax.dynamic_slice_in_dim(key_grad, first, window)
      return jax.lax.dynamic_update_slice_in_dim(key_grad, window_grad, first, 0), (value, aux, query_grad)

    head, starts, _ = _split_blocks(self._row_inputs, block_size)
    zeros = jnp.zeros_like(keys)    # (typed like the keys under `shard_map`)
    doubled_grad, (values, aux, query_grad) = jax.lax.scan(step, jnp.concatenate([zeros, zeros]), (head, starts))
    key_grad = doubled_grad[:self.num_keys] + doubled_grad[self.num_keys:]
    query_grad = query_grad.reshape((self.num_rows,) + query_grad.shape[2:])
    embeddings = self._row_inputs["embeddings"]
    value = (jnp.sum(values) + jnp.sum(query_grad * (embeddings - jax.lax.stop_gradient(embeddings)))
             + jnp.sum(key_grad * (self._keys - keys)))
    return value, aux, jnp.zeros((), self.dtype)


def _sanitized(block: PairBlock) -> PairBlock:
  """The block with the matrix entries of pairs that are not valid set to 0 (zero gradient)."""
  return block._replace(matrix=jnp.where(block.valid, block.matrix, jnp.zeros((), block.matrix.dtype)))


def _default_keys(query_labels, query_valid, key_labels, key_valid, axis_name, num_keys, matrix_name):
  """`(key_labels, key_valid)`: given, or for `key_labels=None` the queries' (gathered over the axis)."""
  if key_labels is not None:
    return key_labels, key_valid
  if axis_name is None:
    if num_keys != query_labels.shape[0]:
      raise ValueError(f"`key_labels` is required when `{matrix_name}` is rectangular "
                       f"({query_labels.shape[0]} x {num_keys}).")
    return query_labels, query_valid if key_valid is None else key_valid
  n = axis_size(axis_name)
  if num_keys != n * query_labels.shape[0]:
    raise ValueError(f"`{matrix_name}` has {num_keys} columns; with `axis_name` and no `key_labels` its keys are the "
                     f"global batch gathered over the axis, {n} x {query_labels.shape[0]} = "
                     f"{n * query_labels.shape[0]} rows.")
  return gather(query_labels, axis_name), gather(query_valid, axis_name) if key_valid is None else key_valid


def from_matrix(matrix, query_labels, key_labels=None, query_valid=None, key_valid=None, self_offset="auto", *,
                axis_name=None, block_size=None, matrix_name: str = "matrix") -> PairProblem:
  """A `PairProblem` over the rows of a given `[B, M]` matrix (the matrix forms).

  With `axis_name`, `matrix` holds this device's `[b, M]` rows of the global matrix: its queries are the device's
  local rows and its columns the global keys. `key_labels=None` then means the gathered batch (M = n * b); with
  `self_offset="auto"` query i of device d is key `d * b + i` (keys that start with the gathered batch).
  """
  check_axis_name(axis_name)
  block_size = check_block_size(block_size)
  matrix = _checks.check_matrix(matrix, matrix_name)
  num_queries, num_keys = matrix.shape
  query_labels = _checks.check_labels(query_labels, num_queries, "query_labels", multi_hot=True)
  query_valid = _checks.check_valid(query_valid, num_queries, "query_valid")
  key_labels, key_valid = _default_keys(query_labels, query_valid, key_labels, key_valid, axis_name, num_keys,
                                        matrix_name)
  key_labels = _checks.check_labels(key_labels, num_keys, "key_labels", multi_hot=True)
  _labels.check_label_kinds(query_labels, key_labels)
  key_valid = _checks.check_valid(key_valid, num_keys, "key_valid")
  row_offset = axis_index(axis_name) * num_queries
  if isinstance(self_offset, str):
    _labels.resolve_self_offset(num_queries, num_keys, self_offset)   # checks the string
    if axis_name is not None:
      self_offset = row_offset
    else:
      self_offset = _labels.resolve_self_offset(num_queries, num_keys, self_offset)
  return PairProblem(num_rows=num_queries, query_labels=query_labels, query_valid=query_valid, key_labels=key_labels,
                     key_valid=key_valid, self_offset=self_offset, row_offset=row_offset, axis_name=axis_name,
                     block_size=block_size, block_matrix=lambda inputs, start: inputs["matrix"],
                     row_inputs={"matrix": matrix, "labels": query_labels, "valid": query_valid},
                     alarm=jnp.zeros((), matrix.dtype), matrix_alarm=True, dtype=matrix.dtype)


def from_embeddings(embeddings, labels, valid=None, *, matrix_fn: Callable, axis_name=None, block_size=None,
                    memory=None) -> PairProblem:
  """A `PairProblem` whose matrix rows are `matrix_fn(queries [blk, D], keys [M, D] or None)` (the convenience forms).

  The embeddings, labels and mask are checked (errors name them) and the padded rows zeroed (`_finite`); the alarm is
  NaN when a valid row (of any device, or of the memory) is not finite. Keys: the batch (gathered over `axis_name`),
  then the memory. `matrix_fn` must be symmetric (`matrix_fn(a, b) = matrix_fn(b, a).T`): without memory the problem
  is marked `symmetric`. Without axis, memory and blocks the square matrix is built in one call (`matrix_fn(embeddings,
  None)`: identical rows exactly 0 apart through the Gram diagonal, see `metric_jax.pairwise`).
  """
  check_axis_name(axis_name)
  block_size = check_block_size(block_size)
  embeddings, labels, valid = _finite.check_embedding_inputs(embeddings, labels, valid)
  embeddings, alarm = _finite.sanitize_rows(embeddings, valid)
  alarm = psum(alarm, axis_name)
  num_rows, dim = embeddings.shape
  mem = check_memory(memory, dim, labels)
  keys, key_labels, key_valid, alarm = append_memory(
      gather(embeddings, axis_name), gather(labels, axis_name), gather(valid, axis_name), alarm, mem)
  row_offset = axis_index(axis_name) * num_rows
  square = axis_name is None and mem is None and (block_size is None or block_size >= num_rows)

  def block_matrix(inputs, start):
    if square:
      return matrix_fn(inputs["embeddings"], None)
    return matrix_fn(inputs["embeddings"], keys)

  sample = jax.eval_shape(lambda e: matrix_fn(e[:1], e[:1]), embeddings)
  return PairProblem(num_rows=num_rows, query_labels=labels, query_valid=valid, key_labels=key_labels,
                     key_valid=key_valid, self_offset=row_offset, row_offset=row_offset, axis_name=axis_name,
                     block_size=block_size, block_matrix=block_matrix,
                     row_inputs={"embeddings": embeddings, "labels": labels, "valid": valid}, alarm=alarm,
                     matrix_alarm=False, dtype=sample.dtype, keys=keys, matrix_fn=matrix_fn, symmetric=mem is None)


# ------------------------------------------------------------------------------------------------------ class problems
def map_rows(fn: Callable, rows, consts=(), *, block_size):
  """`map_blocks` for losses whose rows need no key masks (the class-matrix losses): `fn(rows, consts, start)`."""
  return map_blocks(fn, rows, consts, block_size=check_block_size(block_size))


def refuse_memory(memory, loss: str):
  if memory is not None:
    raise ValueError(f"`memory` is not supported by loss {loss!r}: its keys are the class parameters (proxies, class "
                     "weights, centres), not embeddings of other samples, so there is nothing to append them to.")


__all__ = ["check_axis_name", "check_block_size", "axis_size", "axis_index", "gather", "psum", "pmax", "sum_blocks",
           "block_logsumexp", "combine_logsumexp", "save_row_statistics", "map_blocks", "check_memory", "PairBlock",
           "PairProblem", "from_matrix", "from_embeddings", "map_rows", "refuse_memory"]

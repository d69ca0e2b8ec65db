"""Blockwise (flash) attention in Pallas with the prefix-LM mask built inside the kernel.

The mask is the one `attention.attention_mask` materialises: query q sees key k when both lie in
the same segment and either k <= q (and q - k < window, with a sliding window) or both are prefix
tokens. Here it is never stored: each
[block_q, block_k] tile rebuilds it from per-token codes (segment id * 2 + prefix flag), and whole
tiles that no query of a block can see are never visited. Per-block loop bounds are computed
outside the kernel from each segment's first and last position and its last prefix position, so

  causal:    about half of the tiles (those on or below the diagonal);
  prefix-LM: causal plus the prefix's square;
  packed:    only tiles inside each document's own square.

The bounds are conservative (they may include a fully hidden tile, never skip a visible one), and
the in-tile mask is exact, so the result equals the dense-mask attention whatever the segment ids.
The savings above hold for the usual layout, each document's tokens contiguous with ids at most the
length (seqio's packer): an id that reappears later in the row spans from its first to its last
position, and ids above the length share one range, so such rows visit more tiles, never fewer.

Grouped-query attention reads each kv head once: the forward and dq kernels run one program per query
head, whose K and V blocks are its group's kv head (index map h // group); dk and dv run one program
per kv head and add up its group's query heads in the kernel. K and V are never repeated in memory.

One kernel body runs under Mosaic on TPU, Triton on NVIDIA GPUs and in Pallas interpret mode
elsewhere (tests, CPU runs).
Forward and backward (dq, then dk/dv) are Pallas kernels joined by a custom VJP; the forward saves
only the output and the per-row log-sum-exp.
"""

import functools
import math

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu
from jax.experimental.pallas import triton as pltriton

LANES = 128  # per-query codes are broadcast over one TPU vector lane tile: a [block_q, 1] column in the kernel
MASK_VALUE = -0.7 * float(jnp.finfo(jnp.float32).max)
BACKENDS = ("tpu", "triton", "interpret")


def backend_for(platform: str) -> str:
  """The Pallas backend for a jax platform: Mosaic on TPU, Triton on GPUs, interpret mode elsewhere."""
  return {"tpu": "tpu", "gpu": "triton", "cuda": "triton", "rocm": "triton"}.get(platform, "interpret")


def _dot(a, b, transpose_b=False):
  dims = (((1,), (1,)), ((), ())) if transpose_b else (((1,), (0,)), ((), ()))
  return jax.lax.dot_general(a, b, dims, preferred_element_type=jnp.float32)


def _tile_mask(q_codes, k_codes, q_start, k_start, window):
  """[bq, bk] bool from a [bq, 1] column of query codes and a [1, bk] row of key codes."""
  q_pos = q_start + jax.lax.broadcasted_iota(jnp.int32, (q_codes.shape[0], 1), 0)
  k_pos = k_start + jax.lax.broadcasted_iota(jnp.int32, (1, k_codes.shape[1]), 1)
  same_segment = jnp.right_shift(q_codes, 1) == jnp.right_shift(k_codes, 1)
  both_prefix = (jnp.bitwise_and(q_codes, 1) == 1) & (jnp.bitwise_and(k_codes, 1) == 1)
  causal = k_pos <= q_pos
  if window:
    causal = causal & (k_pos > q_pos - window)
  return same_segment & (causal | both_prefix)


def _forward_kernel(lo_ref, hi_ref, q_ref, k_ref, v_ref, qc_ref, kc_ref, o_ref, lse_ref, *, scale, block_k, window):
  block_q, head_dim = q_ref.shape
  b, qi = pl.program_id(0), pl.program_id(2)
  bound = b * pl.num_programs(2) + qi
  q = q_ref[...]
  q_codes = qc_ref[:, :1]

  def body(j, carry):
    m, total, acc = carry
    start = pl.multiple_of(j * block_k, block_k)
    k = k_ref[pl.ds(start, block_k), :]
    v = v_ref[pl.ds(start, block_k), :]
    mask = _tile_mask(q_codes, kc_ref[:, pl.ds(start, block_k)], qi * block_q, start, window)
    s = jnp.where(mask, _dot(q, k, transpose_b=True) * scale, MASK_VALUE)
    m_new = jnp.maximum(m, jnp.max(s, axis=1, keepdims=True))
    p = jnp.where(mask, jnp.exp(s - m_new), 0.0)
    alpha = jnp.exp(m - m_new)
    l_new = alpha * total + jnp.sum(p, axis=1, keepdims=True)
    return m_new, l_new, alpha * acc + _dot(p.astype(v.dtype), v)

  init = (
    jnp.full((block_q, 1), MASK_VALUE, jnp.float32),
    jnp.zeros((block_q, 1), jnp.float32),
    jnp.zeros((block_q, head_dim), jnp.float32),
  )
  m, total, acc = jax.lax.fori_loop(lo_ref[bound], hi_ref[bound], body, init)
  total = jnp.maximum(total, 1e-30)  # every real query sees itself; this guards the padded rows only
  o_ref[...] = (acc / total).astype(o_ref.dtype)
  lse_ref[...] = m + jnp.log(total)


def _dq_kernel(
  lo_ref, hi_ref, q_ref, k_ref, v_ref, qc_ref, kc_ref, do_ref, lse_ref, delta_ref, dq_ref, *, scale, block_k, window
):
  block_q, head_dim = q_ref.shape
  b, qi = pl.program_id(0), pl.program_id(2)
  bound = b * pl.num_programs(2) + qi
  q, do, lse, delta = q_ref[...], do_ref[...], lse_ref[...], delta_ref[...]
  q_codes = qc_ref[:, :1]

  def body(j, dq):
    start = pl.multiple_of(j * block_k, block_k)
    k = k_ref[pl.ds(start, block_k), :]
    v = v_ref[pl.ds(start, block_k), :]
    mask = _tile_mask(q_codes, kc_ref[:, pl.ds(start, block_k)], qi * block_q, start, window)
    p = jnp.where(mask, jnp.exp(_dot(q, k, transpose_b=True) * scale - lse), 0.0)
    ds = p * (_dot(do, v, transpose_b=True) - delta)
    return dq + _dot(ds.astype(k.dtype), k)

  dq = jax.lax.fori_loop(lo_ref[bound], hi_ref[bound], body, jnp.zeros((block_q, head_dim), jnp.float32))
  dq_ref[...] = (dq * scale).astype(dq_ref.dtype)


def _dkv_kernel(
  lo_ref,
  hi_ref,
  q_ref,
  k_ref,
  v_ref,
  qc_ref,
  kc_ref,
  do_ref,
  lse_ref,
  delta_ref,
  dk_ref,
  dv_ref,
  *,
  scale,
  block_q,
  window,
):
  """One kv head's key block: q, do, lse and delta hold its group's query heads [group, length, ...]."""
  block_k, head_dim = k_ref.shape
  group = q_ref.shape[0]
  b, ki = pl.program_id(0), pl.program_id(2)
  bound = b * pl.num_programs(2) + ki
  k, v = k_ref[...], v_ref[...]
  k_codes = kc_ref[...]
  dk = dv = jnp.zeros((block_k, head_dim), jnp.float32)
  for g in range(group):  # the query heads that share this kv head

    def body(i, carry, g=g):
      dk, dv = carry
      start = pl.multiple_of(i * block_q, block_q)
      q = q_ref[g, pl.ds(start, block_q), :]
      do = do_ref[g, pl.ds(start, block_q), :]
      mask = _tile_mask(qc_ref[pl.ds(start, block_q), :1], k_codes, start, ki * block_k, window)
      scores = _dot(q, k, transpose_b=True) * scale - lse_ref[g, pl.ds(start, block_q), :]
      p = jnp.where(mask, jnp.exp(scores), 0.0)
      dv = dv + _dot(p.T.astype(do.dtype), do)
      ds = p * (_dot(do, v, transpose_b=True) - delta_ref[g, pl.ds(start, block_q), :])
      return dk + _dot(ds.T.astype(q.dtype), q), dv

    dk, dv = jax.lax.fori_loop(lo_ref[bound], hi_ref[bound], body, (dk, dv))
  dk_ref[...] = (dk * scale).astype(dk_ref.dtype)
  dv_ref[...] = dv.astype(dv_ref.dtype)


def block_bounds(segment_ids, prefix_mask, block_q: int, block_k: int, window: int = 0):
  """Which tiles each block visits, from per-token positions (all [batch, length], length padded).

  Returns (key-block [lo, hi) per query block, query-block [lo, hi) per key block), each
  [batch * num_blocks] int32. Segment ids are clipped to [0, length] to index per-segment
  extremes: ids outside merge with a neighbour, which only widens the bounds.
  """
  batch, length = segment_ids.shape
  pos = jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32), (batch, length))
  prefix = prefix_mask.astype(bool)
  ids = (jnp.clip(segment_ids, 0, length) + jnp.arange(batch)[:, None] * (length + 1)).reshape(-1)
  n = batch * (length + 1)
  per_token = lambda x: x[ids].reshape(batch, length)
  first = per_token(jax.ops.segment_min(pos.reshape(-1), ids, n))
  last = per_token(jax.ops.segment_max(pos.reshape(-1), ids, n))
  last_prefix = per_token(jax.ops.segment_max(jnp.where(prefix, pos, -1).reshape(-1), ids, n))
  # Query t sees keys in [first(t), max(t, last prefix of its segment if t is a prefix token)] (a causal
  # query within the window only: from t - window + 1).
  k_lo, k_hi = first, jnp.where(prefix, jnp.maximum(pos, last_prefix), pos)
  # Key t is seen by queries in [t (or its segment's first token if t is prefix), last(t)] (a key no
  # prefix query sees, within the window only: to t + window - 1).
  q_lo, q_hi = jnp.where(prefix, first, pos), last
  if window:
    k_lo = jnp.where(prefix, first, jnp.maximum(first, pos - window + 1))
    q_hi = jnp.where(prefix, last, jnp.minimum(last, pos + window - 1))

  def per_block(lo, hi, size, other):
    lo = jnp.min(lo.reshape(batch, -1, size), axis=-1) // other
    hi = jnp.max(hi.reshape(batch, -1, size), axis=-1) // other + 1
    return lo.reshape(-1).astype(jnp.int32), hi.reshape(-1).astype(jnp.int32)

  return per_block(k_lo, k_hi, block_q, block_k), per_block(q_lo, q_hi, block_k, block_q)


def _specs(length, head_dim, block, blocked, on_tpu, group):
  """BlockSpecs for (bounds x2, q, k, v, query codes, key codes), and the tile and whole-row specs.
  The blocked side (q for the forward and dq, k/v for dk/dv) comes a tile per program; the other
  side is read whole and sliced in the kernel's loop. With `group` query heads per kv head, a q-blocked
  program h reads kv head h // group; a k-blocked program h reads query heads h * group ... + group - 1."""
  smem = pl.BlockSpec(memory_space=pltpu.SMEM) if on_tpu else pl.BlockSpec()
  tile = pl.BlockSpec((None, None, block, head_dim), lambda b, h, i: (b, h, i, 0))
  whole = pl.BlockSpec((None, None, length, head_dim), lambda b, h, i: (b, h, 0, 0))
  if blocked == "q":
    kv_whole = pl.BlockSpec((None, None, length, head_dim), lambda b, h, i: (b, h // group, 0, 0))
    q_codes = pl.BlockSpec((None, block, LANES), lambda b, h, i: (b, i, 0))
    k_codes = pl.BlockSpec((None, 1, length), lambda b, h, i: (b, 0, 0))
    return [smem, smem, tile, kv_whole, kv_whole, q_codes, k_codes], tile, whole
  group_whole = pl.BlockSpec((None, group, length, head_dim), lambda b, h, i: (b, h, 0, 0))
  q_codes = pl.BlockSpec((None, length, LANES), lambda b, h, i: (b, 0, 0))
  k_codes = pl.BlockSpec((None, 1, block), lambda b, h, i: (b, 0, i))
  return [smem, smem, group_whole, tile, tile, q_codes, k_codes], tile, group_whole


def _row_specs(length, block, blocked, group=1):
  """Specs of [batch, heads, length, 1] per-row statistics (lse, delta): a query tile's, or a kv head's
  group of query heads whole."""
  if blocked:
    return pl.BlockSpec((None, None, block, 1), lambda b, h, i: (b, h, i, 0))
  return pl.BlockSpec((None, group, length, 1), lambda b, h, i: (b, h, 0, 0))


def _call(kernel, grid, in_specs, out_specs, out_shape, backend, matmuls, q):
  """pallas_call with the cost XLA should count for it: `matmuls` [tile x head_dim] products per
  visited tile, over the causal half of the tiles (the tiles visited depend on the data; causal is
  the common case, and what the 6N + causal attention accounting counts)."""
  batch, heads, length, head_dim = q.shape
  pairs = batch * heads * length * length // 2
  cost = pl.CostEstimate(
    flops=2 * matmuls * pairs * head_dim,
    transcendentals=pairs,
    bytes_accessed=4 * q.size * q.dtype.itemsize,
  )
  if backend == "tpu":
    params = {"compiler_params": pltpu.CompilerParams(dimension_semantics=("parallel",) * 3)}
  elif backend == "triton":
    params = {"compiler_params": pltriton.CompilerParams(num_warps=4, num_stages=2)}
  else:
    params = {}
  return pl.pallas_call(
    kernel,
    grid=grid,
    in_specs=in_specs,
    out_specs=out_specs,
    out_shape=out_shape,
    interpret=backend == "interpret",
    cost_estimate=cost,
    **params,
  )


def _forward(q, k, v, codes, block_q, block_k, backend, window):
  """q [batch, heads, length, head_dim]; k, v [batch, kv_heads, length, head_dim]; codes (per-query
  [b, L, LANES], per-key [b, 1, L], bounds)."""
  batch, heads, length, head_dim = q.shape
  group = heads // k.shape[1]
  q_codes, k_codes, (k_bounds, _) = codes
  scale = head_dim**-0.5
  in_specs, tile, _ = _specs(length, head_dim, block_q, "q", backend == "tpu", group)
  out, lse = _call(
    functools.partial(_forward_kernel, scale=scale, block_k=block_k, window=window),
    (batch, heads, length // block_q),
    in_specs,
    [tile, _row_specs(length, block_q, True)],
    [jax.ShapeDtypeStruct(q.shape, q.dtype), jax.ShapeDtypeStruct((batch, heads, length, 1), jnp.float32)],
    backend,
    matmuls=2,
    q=q,
  )(*k_bounds, q, k, v, q_codes, k_codes)
  return out, lse


def _backward(q, k, v, codes, out, lse, d_out, block_q, block_k, backend, window):
  batch, heads, length, head_dim = q.shape
  kv_heads = k.shape[1]
  group = heads // kv_heads
  q_codes, k_codes, (k_bounds, q_bounds) = codes
  scale = head_dim**-0.5
  delta = jnp.sum(out.astype(jnp.float32) * d_out.astype(jnp.float32), axis=-1, keepdims=True)
  in_specs, tile, whole = _specs(length, head_dim, block_q, "q", backend == "tpu", group)
  dq = _call(
    functools.partial(_dq_kernel, scale=scale, block_k=block_k, window=window),
    (batch, heads, length // block_q),
    in_specs + [tile, _row_specs(length, block_q, True), _row_specs(length, block_q, True)],
    tile,
    jax.ShapeDtypeStruct(q.shape, q.dtype),
    backend,
    matmuls=3,
    q=q,
  )(*k_bounds, q, k, v, q_codes, k_codes, d_out, lse, delta)
  in_specs, tile, group_whole = _specs(length, head_dim, block_k, "k", backend == "tpu", group)
  rows = _row_specs(length, block_k, False, group)
  dk, dv = _call(
    functools.partial(_dkv_kernel, scale=scale, block_q=block_q, window=window),
    (batch, kv_heads, length // block_k),
    in_specs + [group_whole, rows, rows],
    [tile, tile],
    [jax.ShapeDtypeStruct(k.shape, k.dtype), jax.ShapeDtypeStruct(v.shape, v.dtype)],
    backend,
    matmuls=4,
    q=q,
  )(*q_bounds, q, k, v, q_codes, k_codes, d_out, lse, delta)
  return dq, dk, dv


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6, 7))
def _attention(q, k, v, codes, block_q, block_k, backend, window):
  return _forward(q, k, v, codes, block_q, block_k, backend, window)[0]


def _attention_fwd(q, k, v, codes, block_q, block_k, backend, window):
  out, lse = _forward(q, k, v, codes, block_q, block_k, backend, window)
  return out, (q, k, v, codes, out, lse)


def _attention_bwd(block_q, block_k, backend, window, residuals, d_out):
  q, k, v, codes, out, lse = residuals
  dq, dk, dv = _backward(q, k, v, codes, out, lse, d_out, block_q, block_k, backend, window)
  return dq, dk, dv, jax.tree.map(lambda _: None, codes)


_attention.defvjp(_attention_fwd, _attention_bwd)


def flash_attention(
  query, key, value, segment_ids, prefix_mask, block_q=128, block_k=128, backend=None, window: int = 0
):
  """Attention of `attention.xla_attention` under `attention.attention_mask(segment_ids, prefix_mask, window)`.

  Args:
    query: [batch, length, heads, head_dim]; key, value: [batch, length, kv_heads, head_dim], kv_heads
      dividing heads (one device's shard; see attention.py).
    segment_ids, prefix_mask: [batch, length] int.
    window: a sliding window (0: none): a causal query sees keys fewer than `window` positions back.
    block_q, block_k: tile sizes; the length is padded up to a multiple of both (on TPU, rounded up
      to multiples of 128). Compile-checked for TPU at length 2048: each program holds the other
      side's whole sequence (K and V, or Q, dO and per-row statistics) in VMEM, which grows with
      the length.
    backend: 'tpu' (Mosaic), 'triton' (NVIDIA GPUs) or 'interpret' (default: backend_for the
      default jax platform).
  Returns:
    [batch, length, heads, head_dim] in value's dtype.
  """
  backend = backend or backend_for(jax.default_backend())
  if backend not in BACKENDS:
    raise ValueError(f"flash_attention backend={backend!r} is not one of {BACKENDS}")
  batch, length, heads, head_dim = query.shape
  if heads % key.shape[2]:
    raise ValueError(f"flash_attention: {key.shape[2]} kv heads do not divide {heads} query heads")
  if backend == "interpret":  # a short sequence is one small tile
    block_q, block_k = min(block_q, _round_up(length, 8)), min(block_k, _round_up(length, 8))
  elif backend == "tpu":  # Mosaic slices key codes along lanes: tiles stay multiples of 128, short sequences are padded
    block_q, block_k = _round_up(block_q, LANES), _round_up(block_k, LANES)
  else:  # Triton: power-of-two tiles, at least 16 (its smallest dot)
    block_q, block_k = _pow2_at_least(block_q, 16), _pow2_at_least(block_k, 16)
  padded = _round_up(length, math.lcm(block_q, block_k))
  pad = padded - length
  to_heads = lambda x: jnp.pad(x, ((0, 0), (0, pad), (0, 0), (0, 0))).transpose(0, 2, 1, 3)
  # Padded tokens form their own segment (-1), so no real query ever sees them.
  segment_ids = jnp.pad(segment_ids.astype(jnp.int32), ((0, 0), (0, pad)), constant_values=-1)
  prefix_mask = jnp.pad(prefix_mask.astype(jnp.int32), ((0, 0), (0, pad)))
  codes = segment_ids * 2 + (prefix_mask != 0).astype(jnp.int32)
  q_codes = jnp.broadcast_to(codes[:, :, None], (batch, padded, LANES))
  bounds = block_bounds(segment_ids, prefix_mask, block_q, block_k, window)
  codes = (q_codes, codes[:, None, :], bounds)
  out = _attention(to_heads(query), to_heads(key), to_heads(value), codes, block_q, block_k, backend, int(window))
  return out.transpose(0, 2, 1, 3)[:, :length].astype(value.dtype)


def _round_up(n: int, multiple: int) -> int:
  return -(-n // multiple) * multiple


def _pow2_at_least(n: int, smallest: int) -> int:
  return max(smallest, 1 << (max(n, 1) - 1).bit_length())

"""Left-to-right sampling, jit-compiled with fixed shapes.

Inputs follow training: the model reads [BOS, prompt...] where the vocabulary has a BOS (ours:
<pad>, id 0), or the prompt alone where it has none (CodeGen2's tokenizer.json, as HF does), and
the next token is predicted at the last prompt position. With prefix_lm=True the prompt (and the
BOS) is a bidirectional prefix, as prefix-LM examples were trained.

`generate` prefills a fixed-size KV cache with the (right-padded) prompts and then decodes one
token per step; `generate_full_forward` reruns the whole sequence each step and is the
reference the cache is tested against.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxformer.models import unrolled


def sample_logits(logits, key, temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0):
  """[batch, vocab] -> [batch] int32: argmax at temperature 0, else a draw after top-k / top-p."""
  if temperature <= 0:
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)
  logits = logits / temperature
  if top_k:
    kth = jax.lax.top_k(logits, top_k)[0][:, -1:]
    logits = jnp.where(logits < kth, -jnp.inf, logits)
  if top_p < 1.0:
    order = jnp.argsort(-logits, axis=-1)
    sorted_logits = jnp.take_along_axis(logits, order, axis=-1)
    cumulative = jnp.cumsum(jax.nn.softmax(sorted_logits, axis=-1), axis=-1)
    drop_sorted = cumulative - jax.nn.softmax(sorted_logits, axis=-1) >= top_p  # keep the first token past p
    drop = jnp.zeros_like(drop_sorted).at[jnp.arange(logits.shape[0])[:, None], order].set(drop_sorted)
    logits = jnp.where(drop, -jnp.inf, logits)
  return jax.random.categorical(key, logits, axis=-1).astype(jnp.int32)


def bos_of(vocabulary) -> int | None:
  """The token the model reads before a prompt: the vocabulary's BOS (None: nothing)."""
  return getattr(vocabulary, "bos_id", 0)


def _prompt_buffer(prompts, extra: int, prefix_lm: bool, multiple: int = 1, bos_id: int | None = 0):
  offset = 0 if bos_id is None else 1
  if offset == 0 and not all(len(p) for p in prompts):
    raise ValueError("an empty prompt: this vocabulary has no BOS, so the model needs at least one prompt token")
  lengths = np.array([len(p) + offset for p in prompts])
  width = -(-int(lengths.max()) // multiple) * multiple + extra  # rounded up: fewer distinct compiles
  buffer = np.zeros((len(prompts), width), np.int32)
  for row, prompt in enumerate(prompts):
    buffer[row, :offset] = bos_id or 0
    buffer[row, offset : len(prompt) + offset] = prompt
  prefix = (np.arange(width)[None, :] < lengths[:, None]).astype(np.int32) if prefix_lm else np.zeros_like(buffer)
  return buffer, lengths, prefix


def _cut_at_stops(rows, stop_ids):
  out = []
  for generated in rows:
    generated = list(generated)
    for j, token in enumerate(generated):
      if token in stop_ids:
        generated = generated[:j]
        break
    out.append(generated)
  return out


@functools.lru_cache(maxsize=16)
def _decoder(
  model, batch: int, prompt_width: int, max_new_tokens: int, temperature: float, top_k: int, top_p: float, stops: tuple
):
  cache_length = prompt_width + max_new_tokens
  stop_array = jnp.asarray(stops or (-1,), jnp.int32)
  scanned_model = model

  @jax.jit
  def run(params, buffer, lengths, prefix, key):
    model, params = unrolled(scanned_model, params)
    cache = jax.eval_shape(
      lambda: model.init(jax.random.key(0), jnp.zeros((batch, cache_length), jnp.int32), decode=True)
    )["cache"]
    cache = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), cache)
    positions = jnp.broadcast_to(jnp.arange(prompt_width), (batch, prompt_width))
    logits, variables = model.apply(
      {"params": params, "cache": cache},
      buffer,
      positions=positions,
      prefix_mask=prefix,
      decode=True,
      mutable=["cache"],
    )
    last = jnp.take_along_axis(logits, (lengths - 1)[:, None, None], axis=1)[:, 0]

    def step(carry, i):
      cache, last, done, key = carry
      key, sub = jax.random.split(key)
      token = sample_logits(last, sub, temperature, top_k, top_p)
      token = jnp.where(done, 0, token)
      done = done | jnp.isin(token, stop_array)
      logits, variables = model.apply(
        {"params": params, "cache": cache},
        token[:, None],
        positions=(lengths + i)[:, None],
        prefix_mask=jnp.zeros((batch, 1), jnp.int32),
        decode=True,
        mutable=["cache"],
      )
      return (variables["cache"], logits[:, 0], done, key), token

    _, tokens = jax.lax.scan(step, (variables["cache"], last, jnp.zeros(batch, bool), key), jnp.arange(max_new_tokens))
    return tokens.T

  return run


def generate(
  model,
  params,
  prompts: list[list[int]],
  max_new_tokens: int,
  stop_ids=(),
  temperature: float = 0.0,
  seed: int = 0,
  prefix_lm: bool = False,
  top_k: int = 0,
  top_p: float = 1.0,
  bos_id: int | None = 0,
) -> list[list[int]]:
  """Completions (token ids, the stop token excluded) for a batch of prompts, with a KV cache.

  The model reads bos_id before each prompt (None: the prompt alone). Reproducible: the same seed
  gives the same samples.
  """
  buffer, lengths, prefix = _prompt_buffer(prompts, 0, prefix_lm, multiple=32, bos_id=bos_id)
  run = _decoder(
    model,
    len(prompts),
    buffer.shape[1],
    max_new_tokens,
    float(temperature),
    int(top_k),
    float(top_p),
    tuple(int(s) for s in stop_ids),
  )
  tokens = np.asarray(run(params, buffer, lengths, prefix, jax.random.key(seed)))
  return _cut_at_stops(tokens.tolist(), stop_ids)


def generate_full_forward(
  model,
  params,
  prompts: list[list[int]],
  max_new_tokens: int,
  stop_ids=(),
  temperature: float = 0.0,
  seed: int = 0,
  prefix_lm: bool = False,
  bos_id: int | None = 0,
) -> list[list[int]]:
  """Completions (token ids, stop token excluded) for a batch of prompts, greedy or at a
  temperature, rerunning the full forward pass over a fixed-size buffer each step (the
  reference for `generate`)."""
  batch = len(prompts)
  buffer, lengths, prefix = _prompt_buffer(prompts, max_new_tokens, prefix_lm, bos_id=bos_id)
  total = buffer.shape[1]
  stops = jnp.asarray(list(stop_ids) or [-1], jnp.int32)

  @jax.jit
  def run(params, buffer, lengths, prefix, key):

    def body(i, carry):
      tokens, done, key = carry
      logits = model.apply({"params": params}, tokens, prefix_mask=prefix)
      position = jnp.clip(lengths - 1 + i, 0, total - 1)
      last = jnp.take_along_axis(logits, position[:, None, None], axis=1)[:, 0]
      key, sub = jax.random.split(key)
      choice = sample_logits(last, sub, temperature)
      write = jnp.clip(position + 1, 0, total - 1)
      current = jnp.take_along_axis(tokens, write[:, None], axis=1)[:, 0]
      value = jnp.where(done, current, choice)
      tokens = tokens.at[jnp.arange(batch), write].set(jnp.where(position + 1 < total, value, current))
      done = done | jnp.isin(choice, stops)
      return tokens, done, key

    tokens, _, _ = jax.lax.fori_loop(0, max_new_tokens, body, (buffer, jnp.zeros(batch, bool), key))
    return tokens

  out = np.asarray(run(params, buffer, lengths, prefix, jax.random.key(seed)))
  rows = [out[row, lengths[row] : lengths[row] + max_new_tokens].tolist() for row in range(batch)]
  return _cut_at_stops(rows, stop_ids)


def infill_ids(vocabulary, prefix: str, suffix: str, infill_format=None) -> list[int]:
  """The infill prompt between prefix and suffix in infill_format (an objectives.InfillFormat; None: the
  first the vocabulary can write, CodeGen2's: prefix <mask_1> suffix <|endoftext|> <sep> <mask_1>)."""
  return prompt_ids(vocabulary, prefix, suffix, infill_format)[0]


def prompt_ids(vocabulary, prompt: str, suffix: str | None = None, infill_format=None):
  """(token ids, stop ids) of one prompt: left to right (stop at EOS), or an infill between prompt and
  suffix in infill_format (see infill_ids), stopping at the format's end tokens. Literal sentinel
  strings in the text are escaped."""
  from jaxformer.data.pipeline.vocabulary import escape_sentinels_text

  encode = lambda text: vocabulary.encode(escape_sentinels_text(text))
  if suffix is None:
    return encode(prompt), (vocabulary.eos_id,)
  special = getattr(vocabulary, "special", None)
  if special is None:
    raise ValueError(f"infill: {type(vocabulary).__name__} has no special tokens")
  if infill_format is None:
    from jaxformer import objectives

    infill_format = objectives.choose_infill_format(None, special)
  return infill_format.prompt(special, encode(prompt), encode(suffix)), tuple(infill_format.stops(special))


def cut_at_stop_sequences(text: str, stop_sequences) -> str:
  """text up to the first occurrence of each stop sequence, applied in order."""
  for stop in stop_sequences:
    if stop in text:
      text = text[: text.index(stop)]
  return text


def complete(
  model,
  params,
  vocabulary,
  prompts: list[str],
  max_new_tokens: int,
  suffixes: list[str] | None = None,
  batch_size: int = 16,
  stop_sequences=(),
  **kwargs,
) -> list[str]:
  """Text completions: left to right, or infills in infill_format (a `kwargs` key; see prompt_ids) when
  suffixes are given.

  Prompts run in batches of batch_size; each completion is cut at the first stop sequence.
  kwargs go to `generate` (temperature, seed, top_k, top_p, prefix_lm).
  """
  infill_format = kwargs.pop("infill_format", None)
  encoded = [prompt_ids(vocabulary, p, s, infill_format) for p, s in zip(prompts, suffixes or [None] * len(prompts))]
  ids = [i for i, _ in encoded]
  stops = encoded[0][1] if encoded else ()  # the same for every prompt of one kind
  seed = kwargs.pop("seed", 0)
  texts = []
  for start in range(0, len(ids), batch_size):
    chunk = ids[start : start + batch_size]
    chunk = chunk + [chunk[-1]] * (batch_size - len(chunk)) if len(ids) > batch_size else chunk  # one shape
    outs = generate(
      model, params, chunk, max_new_tokens, stop_ids=stops, seed=seed + start, bos_id=bos_of(vocabulary), **kwargs
    )
    texts.extend(vocabulary.decode(o) for o in outs[: len(ids) - start])
  return [cut_at_stop_sequences(text, stop_sequences) for text in texts]

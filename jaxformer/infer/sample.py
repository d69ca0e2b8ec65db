"""Left-to-right sampling, jit-compiled with fixed shapes.

Inputs follow training: the model reads [BOS=0, prompt...] (targets shifted right), so the
next token is predicted at the last prompt position. With prefix_lm=True the prompt (and the
BOS) is a bidirectional prefix, as prefix-LM examples were trained.
"""

import jax
import jax.numpy as jnp
import numpy as np


def generate(model, params, prompts: list[list[int]], max_new_tokens: int, stop_ids=(), temperature: float = 0.0,
             seed: int = 0, prefix_lm: bool = False) -> list[list[int]]:
  """Completions (token ids, stop token excluded) for a batch of prompts.

  Every step runs the full forward pass over the fixed-size buffer: simple and exact; the
  KV-cache decoder is the fast path for long generations.
  """
  batch = len(prompts)
  lengths = np.array([len(p) + 1 for p in prompts])  # +1: the BOS
  total = int(lengths.max()) + max_new_tokens
  buffer = np.zeros((batch, total), np.int32)
  for row, prompt in enumerate(prompts):
    buffer[row, 1:len(prompt) + 1] = prompt
  prefix = (np.arange(total)[None, :] < lengths[:, None]).astype(np.int32) if prefix_lm else np.zeros_like(buffer)
  stops = jnp.asarray(list(stop_ids) or [-1], jnp.int32)

  @jax.jit
  def run(params, buffer, lengths, prefix, key):

    def body(i, carry):
      tokens, done, key = carry
      logits = model.apply({"params": params}, tokens, prefix_mask=prefix)
      position = jnp.clip(lengths - 1 + i, 0, total - 1)
      last = jnp.take_along_axis(logits, position[:, None, None], axis=1)[:, 0]
      key, sub = jax.random.split(key)
      if temperature > 0:
        choice = jax.random.categorical(sub, last / temperature, axis=-1).astype(jnp.int32)
      else:
        choice = jnp.argmax(last, axis=-1).astype(jnp.int32)
      write = jnp.clip(position + 1, 0, total - 1)
      current = jnp.take_along_axis(tokens, write[:, None], axis=1)[:, 0]
      value = jnp.where(done, current, choice)
      tokens = tokens.at[jnp.arange(batch), write].set(jnp.where(position + 1 < total, value, current))
      done = done | jnp.isin(choice, stops)
      return tokens, done, key

    tokens, _, _ = jax.lax.fori_loop(0, max_new_tokens, body, (buffer, jnp.zeros(batch, bool), key))
    return tokens

  out = np.asarray(run(params, buffer, lengths, prefix, jax.random.key(seed)))
  completions = []
  for row in range(batch):
    generated = out[row, lengths[row]:lengths[row] + max_new_tokens].tolist()
    for j, token in enumerate(generated):
      if token in stop_ids:
        generated = generated[:j]
        break
    completions.append(generated)
  return completions

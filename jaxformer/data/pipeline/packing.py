"""Best-fit packing in tf.data ops: rows that fill, with an iterator that still checkpoints.

seqio's packer closes a row as soon as the next example does not fit, which leaves about one token
in six as padding at 2048 tokens. `best_fit_pack` keeps `bins` rows open instead and puts each
example into the open row it fills most tightly (best fit); when it fits in none, the fullest row
is emitted and the example starts a new row in its place. An example is never split across rows
(a span-corruption example keeps its context and its infill targets together), and every row keeps
seqio's packed layout: `<name>_segment_ids` 1, 2, ... in placement order (0 on padding) and
`<name>_positions` counting from 0 inside each segment.

The open rows are the state of a `tf.data.Dataset.scan`, which tf.data saves and restores with the
iterator, so exact resume holds. A finite input (eval, `num_epochs`) ends with `bins` flush markers
that emit the rows still open; an endless one never reaches them. Inputs must already be shifted so
that 0 means padding (PrefixLMObjectiveConverter carries every feature as value + 1).

The map functions are plain tf ops with no Python control flow on tensors, so they skip AutoGraph
(`do_not_convert`): converting them cost seconds at every pipeline start and changed nothing.
"""

import tensorflow as tf

PACKINGS = ("best_fit", "seqio")


def best_fit_pack(ds: tf.data.Dataset, keys: tuple, length: int, bins: int = 16) -> tf.data.Dataset:
  """Packs examples with the aligned int32 features `keys` into rows of `length`.

  Args:
    ds: examples {key: int32 [n]} with the same n for every key; longer than `length` is trimmed.
    keys: the features to pack (the first decides an example's length).
    length: the row length.
    bins: how many rows stay open; more fills better and costs bins * length * (len(keys) + 2)
      int32 of iterator state.
  Returns: rows {key: [length], key_segment_ids: [length], key_positions: [length]} for the first key's name.
  """
  if bins < 1:
    raise ValueError(f"best_fit_pack: bins={bins} must be >= 1")
  num = len(keys)
  first = keys[0]

  @tf.autograph.experimental.do_not_convert
  def as_element(example):
    data = tf.stack([tf.cast(example[k][:length], tf.int32) for k in keys])
    return data, tf.constant(False)

  flush = tf.data.Dataset.from_tensors((tf.zeros([num, 0], tf.int32), tf.constant(True))).repeat(bins)
  elements = ds.map(as_element, num_parallel_calls=tf.data.AUTOTUNE).concatenate(flush)

  state = (
    tf.zeros([bins, num, length], tf.int32),  # features
    tf.zeros([bins, length], tf.int32),  # segment ids
    tf.zeros([bins, length], tf.int32),  # positions
    tf.zeros([bins], tf.int32),  # tokens used per row
    tf.zeros([bins], tf.int32),  # segments per row
  )

  @tf.autograph.experimental.do_not_convert
  def step(state, element):
    features, segments, positions, used, count = state
    data, is_flush = element
    n = tf.shape(data)[1]
    space = length - used
    fits = tf.logical_and(space >= n, tf.logical_not(is_flush))
    any_fit = tf.reduce_any(fits)
    best = tf.cast(tf.argmin(tf.where(fits, space, length + 1)), tf.int32)
    nonempty = used > 0
    fullest = tf.cast(tf.argmax(tf.where(nonempty, used, -1)), tf.int32)
    emit = tf.logical_and(tf.logical_not(any_fit), tf.reduce_any(nonempty))
    row = (features[fullest], segments[fullest], positions[fullest])

    # Empty the emitted row, then place the example (a flush places nothing).
    keep = tf.cast(tf.logical_not(tf.logical_and(emit, tf.range(bins) == fullest)), tf.int32)
    features, segments, positions = features * keep[:, None, None], segments * keep[:, None], positions * keep[:, None]
    used, count = used * keep, count * keep
    target = tf.where(any_fit, best, fullest)
    columns = used[target] + tf.range(n)
    rows = tf.fill([n], target)
    cells = tf.stack([tf.fill([num * n], target), tf.repeat(tf.range(num), n), tf.tile(columns, [num])], -1)
    features = tf.tensor_scatter_nd_update(features, cells, tf.reshape(data, [-1]))  # data[f, i] -> [target, f, col i]
    at = tf.stack([rows, columns], -1)
    placed = tf.cast(tf.logical_not(is_flush), tf.int32)
    segments = tf.tensor_scatter_nd_update(segments, at, tf.fill([n], count[target] + 1))
    positions = tf.tensor_scatter_nd_update(positions, at, tf.range(n))
    one_hot = tf.one_hot(target, bins, dtype=tf.int32) * placed
    used, count = used + one_hot * n, count + one_hot
    return (features, segments, positions, used, count), (emit, row)

  @tf.autograph.experimental.do_not_convert
  def as_row(emit, row):
    features, segments, positions = row
    out = {k: features[i] for i, k in enumerate(keys)}
    out[f"{first}_segment_ids"] = segments
    out[f"{first}_positions"] = positions
    return out

  packed = elements.scan(state, step).filter(tf.autograph.experimental.do_not_convert(lambda emit, row: emit))
  return packed.map(as_row, num_parallel_calls=tf.data.AUTOTUNE)

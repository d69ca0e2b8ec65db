"""seqio Task and Mixture registrations: the local corpus, file corpora, TFDS datasets.

Registration needs files (a corpus, a tokenizer), so it happens on demand: `ensure_registered`.
"""

import seqio

from jaxformer.tasks import local


def ensure_registered(name: str):
  """Registers what `name` needs under the current gin config (re-registering, so a changed
  corpus or vocabulary takes effect); returns the task's (or mixture's) targets vocabulary."""
  if name in local.TASKS + local.MIXTURES:
    local.register_local_tasks()
  else:
    from jaxformer.tasks import code_corpus, corpora

    corpora.register_configured()
    code_corpus.register_code_corpus()
  if name not in seqio.TaskRegistry.names() and name not in seqio.MixtureRegistry.names():
    known = sorted(set(seqio.TaskRegistry.names()) | set(seqio.MixtureRegistry.names()))
    raise ValueError(f"MIXTURE_OR_TASK_NAME={name!r} is not a registered task or mixture; known: {known}")
  return seqio.get_mixture_or_task(name).output_features["targets"].vocabulary

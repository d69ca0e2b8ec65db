"""Test setup: 8 simulated CPU devices, set before jax is imported anywhere."""

import fcntl
import json
import os
import shutil
import tempfile

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TPU_ACCELERATOR_TYPE", "v4-8")
# jax's persistent compilation cache, shared by the xdist workers of one test run and every `jaxformer`
# subprocess they start (they inherit this environment): the same tiny train step is compiled by dozens
# of runs, and a cached executable is the same program, so losses stay bit-identical. Only compiles of
# >= 1 s are stored (jax's default). The process that starts the run (xdist's controller, which the
# workers inherit it from) names one folder for it, so no two runs or checkouts share entries, and
# deletes it when the run ends. A test about what the compiler does itself drops the variable.
os.environ.setdefault(
  "JAX_COMPILATION_CACHE_DIR", os.path.join(tempfile.gettempdir(), f"jaxformer-tests-jax-cache-{os.getpid()}")
)

import gin
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def pytest_sessionfinish(session):
  cache = os.environ.get("JAX_COMPILATION_CACHE_DIR")
  if cache == os.path.join(tempfile.gettempdir(), f"jaxformer-tests-jax-cache-{os.getpid()}"):  # named here
    shutil.rmtree(cache, ignore_errors=True)  # the controller, after its workers (theirs is the controller's)


def _reset_gin():
  gin.clear_config(clear_constants=True)  # also unlocks a finalized config


@pytest.fixture(autouse=True)
def _clear_gin():
  _reset_gin()
  yield
  _reset_gin()


def once_per_run(tmp_path_factory, name: str, build):
  """build(folder) -> a JSON value, run once per test run and shared by its xdist workers: a session fixture
  is otherwise built by every worker. The first worker to ask builds under a lock; the others wait and read
  its result. What build writes is read-only to the tests that use it."""
  root = tmp_path_factory.getbasetemp()
  if os.environ.get("PYTEST_XDIST_WORKER"):
    root = root.parent  # the run's base folder, which holds each worker's own
  folder, done = root / name, root / f"{name}.fixture.json"
  with open(root / f"{name}.fixture-lock", "w") as lock:  # not NAME.lock: the builds lock that themselves
    fcntl.flock(lock, fcntl.LOCK_EX)
    if not done.exists():
      shutil.rmtree(folder, ignore_errors=True)
      folder.mkdir()
      done.with_suffix(".tmp").write_text(json.dumps(build(folder)))
      done.with_suffix(".tmp").replace(done)  # only a finished build counts
    return json.loads(done.read_text())


@pytest.fixture(scope="session")
def once(tmp_path_factory):
  """once(name, build): once_per_run for a test module's own shared fixtures."""
  return lambda name, build: once_per_run(tmp_path_factory, name, build)


@pytest.fixture(scope="session")
def local_corpus(tmp_path_factory):
  """A small real local corpus (this machine's files) with its tokenizer, built once per test run."""

  def build(out):
    from jaxformer.data.ingest import corpus, tokenizer

    corpus.build_local_corpus(str(out), options=corpus.CorpusOptions(max_bytes=3 << 20, validation_percent=5))
    tokenizer.train_tokenizer(str(out), str(out / "spm.model"), vocab_size=1024, max_documents=3000)
    return str(out)

  return once_per_run(tmp_path_factory, "corpus", build)


@pytest.fixture(scope="session")
def online_reference_16(local_corpus, tmp_path_factory):
  """{step: loss} of the short local run (train_util.small_run_flags, 16 steps, checkpoints every 4),
  uninterrupted and tokenised online: the losses every kill-and-resume check of that run must give
  (test_train's online, test_cache's from the seqio cache, which holds the same tokens)."""
  import train_util

  def build(out):
    flags = train_util.small_run_flags(local_corpus, steps=16, checkpoint_period=4)
    return {str(k): v for k, v in train_util.reference_losses(str(out / "run"), flags, 16).items()}

  return {int(k): v for k, v in once_per_run(tmp_path_factory, "reference_16", build).items()}


@pytest.fixture(scope="session")
def tiny_run(local_corpus, tmp_path_factory):
  """A finished 4-step local run of the tiny model (train_util.small_run_flags), trained once per test run:
  the base of the fine-tunes and the run the eval verbs read. Read-only: a test that writes to it copies it."""
  import train_util

  def build(out):
    model_dir = str(out / "run")
    code = train_util.run_here(model_dir, train_util.small_run_flags(local_corpus, steps=4))
    assert code == 0, train_util.log_text(model_dir)
    return model_dir

  return once_per_run(tmp_path_factory, "tiny_run", build)


@pytest.fixture
def local_tasks(local_corpus):
  """Registers the local tasks over the session corpus; returns the vocabulary."""
  from jaxformer.tasks import local

  return local.register_local_tasks(corpus_dir=local_corpus)

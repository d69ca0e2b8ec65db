"""The reference check: jaxformer's train step, with the released CodeGen1 trainer's optimizer and schedule
(recipes/codegen1_trainer.gin's settings, shortened), against transformers' CodeGenForCausalLM trained by
torch AdamW from the same exported step-0 weights on the same batches. The torch side is written from the
released trainer's definition, not from ours: parameter groups (weight decay on tensors of 2+ dimensions),
`clip_grad_norm_`, the schedule of salesforce/jaxformer's create_lr_schedule_gpt3_fn, z-loss on log Z.
Two deliberate bugs on the torch side (weight decay on every parameter; the schedule one step ahead) must
break the agreement, so the check can fail."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from model_util import tiny
from transformers import CodeGenForCausalLM

from jaxformer.export import to_hf
from jaxformer.train import optimizer as optimizer_lib
from jaxformer.train.state import TrainState
from jaxformer.train.step import StepConfig, make_train_step

STEPS, BATCH, LENGTH = 50, 4, 32
WARMUP, ANNEAL, LR_MAX, LR_END = 5, 40, 1e-2, 1e-3  # the released schedule's shape, 50 steps long
B1, B2, EPS, WEIGHT_DECAY, CLIP, Z_LOSS = 0.9, 0.999, 1e-8, 0.1, 1.0, 1e-4  # recipes/codegen1_trainer.gin


def released_lr(step: int) -> float:
  """salesforce/jaxformer utils.create_lr_schedule_gpt3_fn(WARMUP, ANNEAL, LR_MAX, LR_END) at `step`."""
  if step <= WARMUP:
    return LR_MAX * min(step / WARMUP, 1.0)
  frac = min(max((step - WARMUP) / ANNEAL, 0.0), 1.0)
  return LR_MAX - (LR_MAX - LR_END) * (1 - math.cos(math.pi * frac)) / 2


def _batches(vocab: int):
  rng = np.random.default_rng(3)
  for _ in range(STEPS):
    tokens = rng.integers(0, vocab, (BATCH, LENGTH + 1)).astype(np.int32)
    yield tokens


def _features(tokens):
  inputs = tokens[:, :-1]
  return {
    "decoder_input_tokens": inputs,
    "decoder_target_tokens": tokens[:, 1:],
    "decoder_loss_weights": np.ones_like(inputs),
    "decoder_positions": np.broadcast_to(np.arange(LENGTH, dtype=np.int32), inputs.shape),
    "decoder_segment_ids": np.ones_like(inputs),
    "decoder_causal_attention": np.zeros_like(inputs),
  }


@pytest.fixture(scope="session")
def run(tmp_path_factory):
  """Our 50 steps (losses, final parameters) and the step-0 weights exported as an HF checkpoint."""
  config = tiny(vocab_size=96, init_scheme="codegen1")  # float32, 2 layers, d_model 32
  model = config.module()
  params = nn.unbox(model.init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))["params"])
  hf_dir = to_hf.export_in_memory(params, config, str(tmp_path_factory.mktemp("hf") / "step0"))
  schedule = optimizer_lib.learning_rate_schedule(
    peak=LR_MAX, warmup_steps=WARMUP, decay_steps=WARMUP + ANNEAL, floor_ratio=LR_END / LR_MAX
  )
  optimizer = optimizer_lib.make_optimizer(schedule, b1=B1, b2=B2, eps=EPS, weight_decay=WEIGHT_DECAY, clip_norm=CLIP)
  step = jax.jit(make_train_step(model, optimizer, schedule, StepConfig(z_loss=Z_LOSS, loss_chunk_length=0)))
  state = TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=optimizer.init(params))
  losses, rates = [], []
  for tokens in _batches(config.vocab_size):
    state, metrics = step(state, _features(tokens))
    losses.append(float(metrics["loss"]))
    rates.append(float(metrics["learning_rate"]))
  return {"config": config, "hf_dir": hf_dir, "losses": np.array(losses), "rates": rates}


def _torch_losses(hf_dir: str, vocab: int, decay_everything=False, lr_shift=0) -> np.ndarray:
  torch.manual_seed(0)
  model = CodeGenForCausalLM.from_pretrained(hf_dir, torch_dtype=torch.float32)
  model.eval()  # no dropout (the export writes none either); gradients flow as in train()
  named = list(model.named_parameters())
  decay = [p for _, p in named if decay_everything or p.ndim > 1]
  no_decay = [p for _, p in named if not (decay_everything or p.ndim > 1)]
  optimizer = torch.optim.AdamW(
    [{"params": decay, "weight_decay": WEIGHT_DECAY}, {"params": no_decay, "weight_decay": 0.0}],
    lr=LR_MAX,
    betas=(B1, B2),
    eps=EPS,
  )
  scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: released_lr(s + lr_shift) / LR_MAX)
  losses = []
  for tokens in _batches(vocab):
    tokens = torch.from_numpy(tokens).long()
    logits = model(tokens[:, :-1]).logits.float()
    log_z = torch.logsumexp(logits, dim=-1)
    target = torch.gather(logits, -1, tokens[:, 1:, None])[..., 0]
    loss = (log_z - target + Z_LOSS * log_z**2).mean()
    optimizer.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
    optimizer.step()
    scheduler.step()
    losses.append(loss.item())
  return np.array(losses)


@pytest.mark.slow
def test_training_equals_hf_codegen_with_torch_adamw_over_50_steps(run):
  theirs = _torch_losses(run["hf_dir"], run["config"].vocab_size)
  assert run["rates"][:2] == [0.0, pytest.approx(LR_MAX / WARMUP)]  # the schedule is the released one
  assert run["losses"][-1] < run["losses"][0] - 0.3  # it trained: the check compares a moving trajectory
  assert np.abs(run["losses"] - theirs).max() <= 1e-5, np.abs(run["losses"] - theirs).max()


@pytest.mark.parametrize("bug", ["decay_everything", "lr_shift"])
def test_a_deliberate_bug_on_the_reference_side_breaks_the_agreement(run, bug):
  kwargs = {"decay_everything": True} if bug == "decay_everything" else {"lr_shift": 1}
  theirs = _torch_losses(run["hf_dir"], run["config"].vocab_size, **kwargs)
  assert np.abs(run["losses"] - theirs).max() > 1e-4

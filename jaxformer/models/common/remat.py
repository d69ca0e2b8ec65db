"""Rematerialisation policies by name (ModelConfig.remat_policy).

Names refer to the `checkpoint_name` tags in each family's block (qkv, attention_out, mlp_hidden, mlp_out).
"""

import jax

cp = jax.checkpoint_policies

POLICIES = {
  "none": None,  # no remat: keep every activation.
  "full": cp.nothing_saveable,  # recompute the whole block in the backward pass.
  "save_dots": cp.dots_with_no_batch_dims_saveable,  # keep matmul outputs, recompute the rest.
  "save_qkv_attn": cp.save_only_these_names("qkv", "attention_out"),
  "save_attn_mlp": cp.save_only_these_names("qkv", "attention_out", "mlp_hidden"),
  "offload_qkv_attn": cp.save_and_offload_only_these_names(
    names_which_can_be_saved=[],
    names_which_can_be_offloaded=["qkv", "attention_out"],
    offload_src="device",
    offload_dst="pinned_host",
  ),
}


def get_policy(name: str):
  """Returns (use_remat, policy) for a policy name."""
  if name not in POLICIES:
    raise ValueError(f"ModelConfig.remat_policy={name!r} is unknown; choose one of {sorted(POLICIES)}")
  return name != "none", POLICIES[name]

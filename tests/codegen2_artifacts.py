"""Small artifacts laid out like Salesforce's released CodeGen2 checkpoints (a helper for tests, not a test file).

CodeGen2 ships its own remote `modeling_codegen.py` whose attention splits the fused QKV projection into
`mp_num = 8` groups, while transformers' built-in CodeGen uses 4: the same weights mean different models.
The re-layout here is written from transformers' attention code alone, independent of jaxformer.
"""

import json
import os
import re
import shutil
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import safetensors.torch
import tokenizers
import torch
import transformers
from tokenizers import AddedToken, decoders, models, pre_tokenizers, processors, trainers
from transformers.models.codegen import configuration_codegen, modeling_codegen

EOS, SEP, EOM = "<|endoftext|>", "<sep>", "<eom>"
AUTO_MAP = {
  "AutoConfig": "configuration_codegen.CodeGenConfig",
  "AutoModelForCausalLM": "modeling_codegen.CodeGenForCausalLM",
}
HF_GROUPS = 4  # transformers' built-in CodeGenAttention: `self.mp_num = 4`

CORPUS = '''def héllo(name: str) -> str:
    """Greets 🎉 someone."""
    return f"héllo, {name}!"


class Stack:
\tdef __init__(self):
\t\tself.items = []

\tdef push(self, item):
\t\tself.items.append(item)

\tdef pop(self):
\t\treturn self.items.pop() if self.items else None


def fib(n):
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a


def count_words(text):
    counts = {}
    for word in text.split():
        counts[word] = counts.get(word, 0) + 1
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))


if __name__ == "__main__":
    print(fib(10), count_words("a b a"), héllo("wörld"))
'''


def build_tokenizer(directory: str, num_masks: int = 16, texts: list[str] | None = None) -> str:
  """Writes a byte-level BPE tokenizer with CodeGen2's special-token layout into directory; returns tokenizer.json.

  Base vocabulary (~400, id 0 = '!'), then <|endoftext|>, <sep>, <eom>, <mask_{num_masks}>, ..., <mask_1>: so
  <mask_1> has the highest id and <mask_k> = <mask_1> - (k - 1). No BOS is added when encoding.
  """
  tok = tokenizers.Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  tok.post_processor = processors.ByteLevel(trim_offsets=False)
  trainer = trainers.BpeTrainer(
    vocab_size=400, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=[], show_progress=False
  )
  tok.train_from_iterator(texts or [CORPUS] * 4, trainer)
  base = tok.get_vocab_size()
  assert tok.id_to_token(0) == "!", f"id 0 is {tok.id_to_token(0)!r}, not a byte token like CodeGen2's '!'"
  names = [EOS, SEP, EOM] + [f"<mask_{k}>" for k in range(num_masks, 0, -1)]
  for name in names:  # one at a time, so ids follow the listed order
    tok.add_special_tokens([AddedToken(name, special=True, normalized=False)])
  assert [tok.token_to_id(n) for n in names] == list(range(base, base + len(names))), "added ids not sequential"
  fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, clean_up_tokenization_spaces=False)
  os.makedirs(directory, exist_ok=True)
  fast.save_pretrained(directory)
  return os.path.join(directory, "tokenizer.json")


def special_ids(path: str) -> dict[str, int]:
  """{'eos', 'sep', 'eom', 'mask_1', ..., 'mask_N', 'size'} from a tokenizer.json (or the directory holding it)."""
  tok = tokenizers.Tokenizer.from_file(os.path.join(path, "tokenizer.json") if os.path.isdir(path) else path)
  ids = {"eos": tok.token_to_id(EOS), "sep": tok.token_to_id(SEP), "eom": tok.token_to_id(EOM)}
  k = 1
  while (i := tok.token_to_id(f"<mask_{k}>")) is not None:
    ids[f"mask_{k}"], k = i, k + 1
  ids["size"] = tok.get_vocab_size(with_added_tokens=True)
  return ids


def relayout_qkv(weight: torch.Tensor, mp_from: int, mp_to: int) -> torch.Tensor:
  """Re-groups a fused qkv_proj weight [3E, E] from mp_from to mp_to model-parallel groups.

  transformers' CodeGenAttention views the fused output as (mp_num, 3 * local_dim) and splits each group into
  query | value | key (in that order), each local_dim = E / mp_num rows holding that group's heads in order.
  """
  e = weight.shape[1]
  q, v, k = weight.reshape(mp_from, 3, e // mp_from, e).unbind(1)  # per group [local_dim, E]; heads in order
  q, v, k = (x.reshape(e, e) for x in (q, v, k))  # all heads, group after group = head order
  return torch.stack([x.reshape(mp_to, e // mp_to, e) for x in (q, v, k)], 1).reshape(3 * e, e)


def _remote_source(module, mp_num: int | None = None) -> str:
  """The installed transformers module's source, as a Hub repo ships it: absolute imports, mp_num set."""
  with open(module.__file__, encoding="utf-8") as f:
    source = f.read()
  source = re.sub(r"^from \.\.\. import ", "from transformers import ", source, flags=re.M)
  source = re.sub(r"^from \.\.\.(?=\w)", "from transformers.", source, flags=re.M)  # `.configuration_codegen` stays
  if mp_num is not None:  # CodeGen2's own file: a commented-out `# mp_num = 4`, then `mp_num = 8`
    line = re.search(r"^( +)self\.mp_num = 4\n", source, re.M)
    assert line, f"{module.__file__}: no `self.mp_num = 4` line to replace"
    ind = line[1]
    source = source.replace(line[0], f"{ind}# mp_num = 4\n{ind}mp_num = {mp_num}\n{ind}self.mp_num = mp_num\n")
  return source


def reference_model(vocab_size: int, eos_id: int, layers: int, d_model: int, heads: int, rotary_dim: int, seed: int):
  """A random float32 transformers.CodeGenForCausalLM (4 QKV groups); every tensor, biases and norms too, matters."""
  config = transformers.CodeGenConfig(
    vocab_size=vocab_size, n_positions=128, n_ctx=128, n_embd=d_model, n_layer=layers, n_head=heads,
    rotary_dim=rotary_dim, tie_word_embeddings=False, bos_token_id=eos_id, eos_token_id=eos_id,
  )  # fmt: skip
  torch.manual_seed(seed)
  model = transformers.CodeGenForCausalLM(config).float().eval()
  with torch.no_grad():
    for p in model.parameters():
      p.add_(0.1 * torch.randn_like(p))
  return model


def build_codegen2_checkpoint(
  directory: str, tokenizer_dir: str | None = None, mp_num: int = 8, layers: int = 2, d_model: int = 64,
  heads: int = 8, rotary_dim: int = 8, seed: int = 0, causal_mask: bool = True,
):  # fmt: skip
  """Writes a CodeGen2-style checkpoint: QKV in mp_num groups, remote code setting `mp_num`, an auto_map.

  causal_mask: also store each layer's bool `attn.causal_mask` buffer, as CodeGen2's weight files do.
  Returns (reference, directory): reference is the same model as a built-in (4-group) CodeGenForCausalLM.
  """
  assert heads % mp_num == 0 and heads % HF_GROUPS == 0, "each QKV group must hold whole heads"
  vocab, eos = 96, 95
  if tokenizer_dir:
    ids = special_ids(tokenizer_dir)
    vocab, eos = -(-ids["size"] // 8) * 8, ids["eos"]
  model = reference_model(vocab, eos, layers, d_model, heads, rotary_dim, seed)
  os.makedirs(directory, exist_ok=True)
  state = {n: t.detach().clone().contiguous() for n, t in model.state_dict().items()}
  for name in [n for n in state if n.endswith("attn.qkv_proj.weight")]:
    state[name] = relayout_qkv(state[name], HF_GROUPS, mp_num)
  for i in range(layers if causal_mask else 0):
    n = model.config.n_positions
    state[f"transformer.h.{i}.attn.causal_mask"] = torch.ones(n, n, dtype=torch.bool).tril().view(1, 1, n, n)
  safetensors.torch.save_file(state, os.path.join(directory, "model.safetensors"), metadata={"format": "pt"})
  config = {k: v for k, v in model.config.to_dict().items() if k not in ("dtype", "_name_or_path")}
  config.update(architectures=["CodeGenForCausalLM"], torch_dtype="float32", auto_map=AUTO_MAP)
  with open(os.path.join(directory, "config.json"), "w") as f:
    json.dump(config, f, indent=2, sort_keys=True)
  for name, module, mp in (("modeling", modeling_codegen, mp_num), ("configuration", configuration_codegen, None)):
    with open(os.path.join(directory, f"{name}_codegen.py"), "w", encoding="utf-8") as f:
      f.write(_remote_source(module, mp))
  for name in os.listdir(tokenizer_dir) if tokenizer_dir else []:
    if name.startswith(("tokenizer", "special_tokens", "vocab", "merges")):
      shutil.copy(os.path.join(tokenizer_dir, name), directory)
  return model, directory


def build_decoy(directory: str, with_code: bool = True, tokenizer_dir: str | None = None, **kwargs):
  """A checkpoint in the built-in 4-group layout whose config.json nonetheless carries an auto_map.

  with_code: ships modeling_codegen.py setting `mp_num = 4` (readable); without, only the auto_map (unreadable).
  kwargs: as build_codegen2_checkpoint. Returns (reference, directory).
  """
  reference, _ = build_codegen2_checkpoint(directory, tokenizer_dir, mp_num=HF_GROUPS, **kwargs)
  if not with_code:
    for name in ("modeling_codegen.py", "configuration_codegen.py"):
      os.remove(os.path.join(directory, name))
  return reference, directory


def logits_diff(model, reference, tokens: torch.Tensor) -> float:
  """Max |logits(model) - logits(reference)| on tokens [batch, length]."""
  with torch.no_grad():
    return (model(tokens).logits - reference(tokens).logits).abs().max().item()


def check_checkpoint(directory: str, reference, tokens: torch.Tensor | None = None) -> dict[str, float]:
  """Loads directory via its remote code (asserting it is not the built-in class) and via the built-in class.

  Returns {'remote': diff, 'builtin': diff}: max abs logit differences from reference on tokens.
  """
  if tokens is None:
    tokens = torch.randint(0, reference.config.vocab_size, (2, 24), generator=torch.Generator().manual_seed(1))
  remote = transformers.AutoModelForCausalLM.from_pretrained(directory, trust_remote_code=True).float().eval()
  assert not type(remote).__module__.startswith("transformers.models."), f"built-in class loaded: {type(remote)}"
  builtin = transformers.CodeGenForCausalLM.from_pretrained(directory).float().eval()
  return {"remote": logits_diff(remote, reference, tokens), "builtin": logits_diff(builtin, reference, tokens)}


if __name__ == "__main__":
  import time

  transformers.utils.logging.disable_progress_bar()
  start = time.time()
  with tempfile.TemporaryDirectory() as tmp:
    tok_dir = os.path.join(tmp, "tok")
    path = build_tokenizer(tok_dir)
    ids = special_ids(path)
    print("special ids:", ids)
    assert ids["mask_2"] == ids["mask_1"] - 1 and ids["mask_1"] == ids["size"] - 1
    assert ids["sep"] == ids["eos"] + 1 and ids["eom"] == ids["sep"] + 1
    again = build_tokenizer(os.path.join(tmp, "tok2"))
    assert open(path).read() == open(again).read(), "tokenizer training is not deterministic"
    hf_tok = transformers.AutoTokenizer.from_pretrained(tok_dir)
    text = "def f():\n\treturn 'héllo 🎉'<mask_1><|endoftext|><sep>"
    enc = hf_tok(text)["input_ids"]
    print("encoded:", enc)
    assert enc[-3:] == [ids["mask_1"], ids["eos"], ids["sep"]] and hf_tok.decode(enc) == text
    assert hf_tok("def f():")["input_ids"] == tokenizers.Tokenizer.from_file(path).encode("def f():").ids
    assert hf_tok.eos_token_id == ids["eos"] and hf_tok.bos_token_id is None

    w = torch.randn(3 * 64, 64)
    assert torch.equal(relayout_qkv(relayout_qkv(w, 4, 8), 8, 4), w) and not torch.equal(relayout_qkv(w, 4, 8), w)
    for dims in ({}, {"d_model": 128, "heads": 16, "rotary_dim": 4}):  # 1 head per group, full rotary; 2, partial
      reference, ckpt_dir = build_codegen2_checkpoint(os.path.join(tmp, "codegen2"), tok_dir, **dims)
      code = open(os.path.join(ckpt_dir, "modeling_codegen.py")).read()
      print("mp_num lines:", re.findall(r"^[ \t]*#? ?mp_num\s*=.*$", code, re.M))
      diffs = check_checkpoint(ckpt_dir, reference)
      print(f"codegen2 (mp_num=8) {dims}:", diffs)
      assert diffs["remote"] <= 1e-5 and diffs["builtin"] > 1e-2, diffs

    decoy_code, _ = build_decoy(os.path.join(tmp, "decoy_code"), True, tok_dir)
    diffs = check_checkpoint(os.path.join(tmp, "decoy_code"), decoy_code)
    print("decoy with mp_num=4 code:", diffs)
    assert diffs["remote"] <= 1e-5 and diffs["builtin"] <= 1e-5, diffs

    decoy_bare, bare_dir = build_decoy(os.path.join(tmp, "decoy_bare"), False, tok_dir)
    assert "auto_map" in json.load(open(os.path.join(bare_dir, "config.json")))
    builtin = transformers.AutoModelForCausalLM.from_pretrained(bare_dir).eval()
    tokens = torch.randint(0, decoy_bare.config.vocab_size, (2, 24))
    diff = logits_diff(builtin, decoy_bare, tokens)
    print("decoy without code, built-in load:", diff)
    assert diff <= 1e-5 and not os.path.exists(os.path.join(bare_dir, "modeling_codegen.py"))
    try:
      transformers.AutoModelForCausalLM.from_pretrained(bare_dir, trust_remote_code=True)
      raise AssertionError("decoy without code: the remote load worked")
    except OSError as e:
      print("decoy without code, remote load fails:", type(e).__name__, str(e).splitlines()[0][:120])
  print(f"ok in {time.time() - start:.1f}s")

"""A HuggingFace fast tokenizer equal to our SentencePiece model (ids, sentinels, whitespace runs).

Built by hand from the SentencePiece proto: BPE with byte fallback over the same pieces and
merges, spaces mapped to '▁' (no dummy prefix), Metaspace splitting and single digits as the
SentencePiece trainer did; user symbols (<sep>, <eom>, <mask_k>, '\\n', whitespace runs) are added
tokens matched first. The HF tokenizer prepends <pad> (id 0) as BOS, because the model reads
[0, tokens...] as it did in training; its pad token is <|endoftext|> so padding never hides the BOS.
"""

import json
import os


def _proto(model_path: str):
  from transformers.convert_slow_tokenizer import import_protobuf

  proto = import_protobuf().ModelProto()
  with open(model_path, "rb") as f:
    proto.ParseFromString(f.read())
  return proto


def build_fast_tokenizer(model_path: str):
  """A `tokenizers.Tokenizer` that encodes exactly as the SentencePiece model at model_path."""
  from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
  from tokenizers.models import BPE
  from transformers.convert_slow_tokenizer import SentencePieceExtractor

  extracted = SentencePieceExtractor(model_path).extract(BPE)
  proto = _proto(model_path)
  if proto.trainer_spec.model_type != 2 or not proto.trainer_spec.byte_fallback:
    raise ValueError(f"{model_path} is not a byte-fallback BPE SentencePiece model")
  tokenizer = Tokenizer(
    models.BPE(
      vocab=extracted["vocab"], merges=extracted["merges"], unk_token="<unk>", byte_fallback=True, fuse_unk=True
    )
  )
  tokenizer.normalizer = normalizers.Replace(" ", "\u2581")
  splitters = [pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="never", split=True)]
  if proto.trainer_spec.split_digits:
    splitters.append(pre_tokenizers.Digits(individual_digits=True))
  tokenizer.pre_tokenizer = pre_tokenizers.Sequence(splitters)
  tokenizer.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse()])
  control, user = [], []
  for piece in proto.pieces:
    if piece.type in (2, 3):  # unknown, control
      control.append(AddedToken(piece.piece, special=True, normalized=False))
    elif piece.type == 4:  # user defined
      user.append(AddedToken(piece.piece, special=False, normalized=True))
  tokenizer.add_special_tokens(control)
  tokenizer.add_tokens(user)
  pad = proto.pieces[0].piece
  tokenizer.post_processor = processors.TemplateProcessing(
    single=f"{pad} $A", pair=f"{pad} $A {pad} $B", special_tokens=[(pad, 0)]
  )
  return tokenizer


def save_hf_tokenizer(model_path: str, output_dir: str, max_length: int) -> None:
  """tokenizer.json and its config, loadable by AutoTokenizer.from_pretrained (no remote code)."""
  from transformers import PreTrainedTokenizerFast

  proto = _proto(model_path)
  pieces = [p.piece for p in proto.pieces]
  fast = PreTrainedTokenizerFast(
    tokenizer_object=build_fast_tokenizer(model_path),
    bos_token=pieces[0],
    pad_token=pieces[1],
    eos_token=pieces[1],
    unk_token=pieces[2],
    model_max_length=max_length,
    clean_up_tokenization_spaces=False,
  )
  fast.save_pretrained(output_dir)
  # Keep the SentencePiece model too, so `jaxformer import` gets our exact vocabulary back.
  with open(model_path, "rb") as src, open(os.path.join(output_dir, "spm.model"), "wb") as dst:
    dst.write(src.read())
  with open(os.path.join(output_dir, "tokenizer_config.json")) as f:
    config = json.load(f)
  config["add_bos_token"] = True
  with open(os.path.join(output_dir, "tokenizer_config.json"), "w") as f:
    json.dump(config, f, indent=1)

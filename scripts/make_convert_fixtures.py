"""Regenerate tests/data/convert/<arch>/: tiny random Hugging Face models and transformers' logits.

Run with a Python that has torch, transformers, tokenizers and sentencepiece (the peers
venv), from the repository root:

    /work/peers/venv/bin/python scripts/make_convert_fixtures.py [--check]

For each of llama, qwen2, qwen3, gemma3 (text) and phi3 it writes a model with 2 layers
of width 64 and random weights (float16 safetensors), a tokenizer trained here (byte-level
BPE with the `tokenizers` library for llama/qwen, a SentencePiece model for gemma3/phi3),
``tokens.json`` (a fixed id sequence, and the HF tokenizer's ids for a sample text) and
``logits.npy`` (transformers' float32 logits for those ids). Tests convert them with
llamalab and compare, without torch.

``--check`` converts each with llamalab (``$LLAMALAB_PYTHON``, default the shared venv,
with PYTHONPATH=src) to F32 and loads it in llama-cpp-python, printing the max |logit
difference| against transformers (the figures quoted in the README).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests" / "data" / "convert"
TEXT = ("Once upon a time there was a little robot named Lily. She liked to count: 1, 22, 333. "
        "Hello world! The quick brown fox jumps over the lazy dog. ") * 20
SAMPLE = "Hello world! Lily counts 1 22 333."
IDS = [1, 17, 42, 100, 7, 200, 33, 5, 250, 64]  # fed to every model as-is
CHAT = "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"


def bpe_tokenizer(directory: Path, vocab_size: int = 260):
    """A byte-level BPE (GPT-2 pre-tokenizer regex) trained on TEXT; saved as tokenizer.json + config."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator([TEXT], trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                   unk_token="<|endoftext|>", pad_token="<|endoftext|>")
    fast.chat_template = CHAT
    fast.save_pretrained(directory)
    return fast, tok.get_vocab_size()


def spm_tokenizer(directory: Path, dummy_prefix: bool, vocab_size: int = 320):
    """A SentencePiece BPE with byte fallback trained on TEXT, saved as tokenizer.model (+ tokenizer_config.json)."""
    import sentencepiece as spm

    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "text.txt"
        corpus.write_text(TEXT.replace(". ", ".\n"))
        spm.SentencePieceTrainer.train(input=str(corpus), model_prefix=str(Path(tmp) / "sp"), vocab_size=vocab_size,
                                       model_type="bpe", byte_fallback=True, character_coverage=1.0,
                                       bos_id=1, eos_id=2, unk_id=0, pad_id=-1, minloglevel=2,
                                       normalization_rule_name="identity", add_dummy_prefix=dummy_prefix,
                                       user_defined_symbols=["<|endoftext|>"])  # llama.cpp looks it up for phi3
        shutil.copy(Path(tmp) / "sp.model", directory / "tokenizer.model")
    sp = spm.SentencePieceProcessor(model_file=str(directory / "tokenizer.model"))
    (directory / "tokenizer_config.json").write_text(json.dumps({
        "add_bos_token": True, "add_eos_token": False, "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
        "chat_template": CHAT, "tokenizer_class": "LlamaTokenizer"}, indent=1))
    return sp, sp.vocab_size()


def make(arch: str) -> None:
    import torch
    import transformers as tf

    d = OUT / arch
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)
    spm = arch in ("gemma3", "phi3")
    tok, n_vocab = spm_tokenizer(d, dummy_prefix=arch == "phi3") if spm else bpe_tokenizer(d)
    common = dict(vocab_size=n_vocab, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128, rms_norm_eps=1e-5,
                  bos_token_id=1, eos_token_id=2)
    if arch == "llama":
        cfg = tf.LlamaConfig(**common, tie_word_embeddings=False, rope_theta=10000.0)
        cls = tf.LlamaForCausalLM
    elif arch == "qwen2":
        cfg = tf.Qwen2Config(**common, tie_word_embeddings=True, rope_theta=1000000.0)
        cls = tf.Qwen2ForCausalLM
    elif arch == "qwen3":
        cfg = tf.Qwen3Config(**common, head_dim=16, tie_word_embeddings=True, rope_theta=1000000.0)
        cls = tf.Qwen3ForCausalLM
    elif arch == "gemma3":
        # llama.cpp's gemma3 makes every 6th layer global: with 2 layers both are sliding-window layers
        cfg = tf.Gemma3TextConfig(**{**common, "rms_norm_eps": 1e-6}, head_dim=16, query_pre_attn_scalar=16,
                                  sliding_window=16, layer_types=["sliding_attention", "sliding_attention"],
                                  rope_theta=1000000.0, rope_local_base_freq=10000.0)
        cfg.architectures = ["Gemma3ForCausalLM"]
        cls = tf.Gemma3ForCausalLM
    elif arch == "phi3":
        cfg = tf.Phi3Config(**common, tie_word_embeddings=False, rope_theta=10000.0, original_max_position_embeddings=128,
                            pad_token_id=0)
        cls = tf.Phi3ForCausalLM
    torch.manual_seed({"llama": 1, "qwen2": 2, "qwen3": 3, "gemma3": 4, "phi3": 5}[arch])
    model = cls(cfg)
    with torch.no_grad():  # random norms and biases too, so a missed fix-up (Gemma's 1 + w) shows
        for name, p in model.named_parameters():
            if p.ndim == 1:
                p.copy_(torch.randn_like(p) * 0.1 + (0.0 if arch == "gemma3" else 1.0) if "norm" in name else torch.randn_like(p) * 0.1)
    model = model.to(torch.float16)
    model.save_pretrained(d, safe_serialization=True)
    model = cls.from_pretrained(d, torch_dtype=torch.float32).eval()
    with torch.no_grad():
        logits = model(torch.tensor([IDS])).logits[0].numpy().astype(np.float32)
    np.save(d / "logits.npy", logits)
    sample = [1] + tok.encode(SAMPLE) if spm else tok.encode(SAMPLE, add_special_tokens=False)  # SPM: with BOS
    info = {"ids": IDS, "sample": SAMPLE, "sample_ids": list(map(int, sample))}
    if not spm:  # llama.cpp's get_vocab_base_pre: sha256 of str(AutoTokenizer(dir).encode(probe text))
        from hashlib import sha256

        probe = json.loads((ROOT / "src/llamalab/convert/pre_tokenizers.json").read_text(encoding="utf-8"))["probe_text"]
        info["probe_hash"] = sha256(str(tf.AutoTokenizer.from_pretrained(d).encode(probe)).encode()).hexdigest()
    (d / "tokens.json").write_text(json.dumps(info) + "\n")
    for junk in ("generation_config.json",):
        (d / junk).unlink(missing_ok=True)
    size = sum(f.stat().st_size for f in d.iterdir())
    print(f"{arch}: {size / 1024:.0f} KiB, vocab {n_vocab}, logits {logits.shape}")


def check(arch: str) -> None:
    """llamalab convert -> F32 GGUF -> llama-cpp-python logits vs transformers'."""
    import llama_cpp

    d = OUT / arch
    with tempfile.TemporaryDirectory() as tmp:
        gguf_path = Path(tmp) / f"{arch}.gguf"
        py = os.environ.get("LLAMALAB_PYTHON", "/work/main/.venv/bin/python")
        cmd = [py, "-m", "llamalab.cli", "convert", str(d), "-o", str(gguf_path), "--outtype", "f32", "--no-progress"]
        if arch not in ("gemma3", "phi3"):
            cmd += ["--pre", "gpt-2"]
        r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
        if r.returncode:
            print(f"{arch}: convert failed: {r.stderr.strip()}")
            return
        llm = llama_cpp.Llama(str(gguf_path), n_ctx=64, logits_all=True, verbose=bool(os.environ.get("VERBOSE")), n_threads=1)
        ids = json.loads((d / "tokens.json").read_text())["ids"]
        llm.eval(ids)
        got = np.array(llm.scores[: len(ids)], dtype=np.float32)
        ref = np.load(d / "logits.npy")
        toks = json.loads((d / "tokens.json").read_text())
        ll_ids = llm.tokenize(toks["sample"].encode(), add_bos=arch in ("gemma3", "phi3"), special=False)
        want = toks["sample_ids"]
        same = "match" if ll_ids == want else f"DIFFER {ll_ids} vs {want}"
        print(f"{arch}: llama.cpp max |logit diff| vs transformers = {np.abs(got - ref).max():.2e} "
              f"(logit range {ref.min():.2f}..{ref.max():.2f}); tokenizer ids {same}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="also convert with llamalab and compare llama.cpp's logits")
    ap.add_argument("--arch", nargs="*", default=["llama", "qwen2", "qwen3", "gemma3", "phi3"])
    args = ap.parse_args()
    for arch in args.arch:
        make(arch)
    if args.check:
        for arch in args.arch:
            check(arch)


if __name__ == "__main__":
    sys.exit(main())

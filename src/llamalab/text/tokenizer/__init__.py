"""Tokenizers: SentencePiece BPE ('llama') and byte-level BPE ('gpt2'), as llama.cpp runs them.

Checked against llama.cpp's ids in tests/test_tokenizer_golden.py (data: tests/data/tokenizer/).
"""

from .sentencepiece_model import spec_from_sentencepiece
from .spec import TokenizerSpec
from .stream import IncrementalDecoder
from .tokenizer import EOG_TEXTS, Tokenizer, load_tokenizer

__all__ = ["EOG_TEXTS", "IncrementalDecoder", "Tokenizer", "TokenizerSpec", "load_tokenizer", "spec_from_sentencepiece"]

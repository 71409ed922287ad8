"""Make GGUF files: quantize one (``quantize.py``, with llama.cpp's mixes in ``mixes.py``)
or convert a Hugging Face checkpoint (``hf.py``, tokenizers in ``tokenizer.py``)."""

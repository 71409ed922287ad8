"""Text: tokenizers read from the model file (``tokenizer``) and chat templates (``chat``)."""

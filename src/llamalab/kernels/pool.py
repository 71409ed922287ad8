"""A work-sharing thread pool for the decode-step products (matvec), in compiled code.

Why not OpenMP (``prange``)? A decode token runs ~120 parallel regions, and an OpenMP
region ends at a barrier that waits for *every* team thread. On a machine where
another process holds the other core, the second thread gets CPU only after that
process's time slice: measured here, a no-op 2-thread region took 8 ms at the median
while benchmark workers ran, and a decode token 1 s instead of 10 ms.

Here the calling thread never waits for a worker that has not started. A job is a
list of chunks (row ranges); the caller takes runs of chunks from the front, workers from
the back (so each streams contiguous weights), and the caller returns as soon as every
chunk is done and no worker still holds one. A worker that wakes late finds nothing
left. With the other core free, a region costs ~1 us to publish; with it taken, the
products run at one-thread speed instead of stalling. The one wait left, for a worker
that lost its core in the middle of a chunk, makes the pool run jobs alone for a
while (``finish``: ~0.3 s, doubling on repeats up to ~8 s).

Shared state is one int64 array, ``llamalab_pool`` to compiled code (an external
symbol bound to a NumPy buffer at import, so cached machine code finds it in every
process). Protocol (all atomics sequentially consistent):

    STATE   gen << 32 | OPEN | joined      a job is open; workers join by CAS (+1)
    CLAIM   back << 32 | front              next chunks from each end; empty when equal
    LEFT    joined workers that have finished (the caller waits for LEFT == joined)
    BUSY    one publisher at a time (others run their job alone)
    WAKE, SLEEPERS                          futex wake-up of workers idle > ~100 us
    ARGS    the job: type codes, raw pointers and sizes of the arrays
"""

from __future__ import annotations

import ctypes
import threading

import numpy as np
from llvmlite import binding as ll
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic
from numba.np.arrayobj import populate_array

_I32, _I64 = ir.IntType(32), ir.IntType(64)

STATE, CLAIM, LEFT, WAKE, SLEEPERS, BUSY, WORKERS, STOP = 0, 8, 16, 24, 32, 40, 48, 56  # own cache lines
QUIET_UNTIL, BACKOFF = 57, 58  # cycle counter values: no jobs published before QUIET_UNTIL
ARGS = 64
N_ARGS = 32
OPEN = 1 << 31
SPIN_LIMIT = 5000  # pause instructions (~100 us at ~20 ns each) before a worker sleeps on the futex
STALL_CYCLES = 1 << 19  # the caller waited ~0.25 ms (many chunks) for a worker: its core is busy
MIN_BACKOFF, MAX_BACKOFF = 1 << 24, 1 << 34  # TSC cycles (~8 ms .. ~8 s at 2 GHz) of running jobs alone

_SYMBOL = "llamalab_pool"
_state = np.zeros(ARGS + N_ARGS, np.int64)  # lives as long as the process
ll.add_symbol(_SYMBOL, _state.ctypes.data)
_libc = ctypes.CDLL(None, use_errno=True)
ll.add_symbol("llamalab_syscall", ctypes.cast(_libc.syscall, ctypes.c_void_p).value)
_SYS_FUTEX, _FUTEX_WAIT, _FUTEX_WAKE = 202, 0, 1  # x86-64 Linux numbers
_X86 = ll.get_process_triple().startswith("x86_64")


def _slot(builder, index):
    """Pointer to slot ``index`` (an i64 value) of the shared array."""
    mod = builder.module
    g = mod.globals.get(_SYMBOL)
    if g is None:
        g = ir.GlobalVariable(mod, ir.ArrayType(_I64, ARGS + N_ARGS), _SYMBOL)
        g.linkage = "external"
    return builder.gep(g, [ir.Constant(_I64, 0), index])


@intrinsic
def load(typingctx, i):
    """Atomic (seq_cst) read of slot i."""

    def codegen(context, builder, sig, args):
        return builder.load_atomic(_slot(builder, args[0]), "seq_cst", 8)

    return types.int64(i), codegen


@intrinsic
def store(typingctx, i, v):
    """Atomic (seq_cst) write of slot i."""

    def codegen(context, builder, sig, args):
        builder.store_atomic(args[1], _slot(builder, args[0]), "seq_cst", 8)
        return context.get_dummy_value()

    return types.none(i, v), codegen


@intrinsic
def fetch_add(typingctx, i, v):
    """Atomically add v to slot i; returns the old value."""

    def codegen(context, builder, sig, args):
        return builder.atomic_rmw("add", _slot(builder, args[0]), args[1], "seq_cst")

    return types.int64(i, v), codegen


@intrinsic
def cas(typingctx, i, expected, new):
    """Atomically set slot i to new if it holds expected; True if it did."""

    def codegen(context, builder, sig, args):
        pair = builder.cmpxchg(_slot(builder, args[0]), args[1], args[2], "seq_cst", "seq_cst")
        return builder.extract_value(pair, 1)

    return types.boolean(i, expected, new), codegen


@intrinsic
def pause(typingctx):
    """The spin-wait hint (``pause`` on x86): lets the other hyperthread and the bus breathe."""

    def codegen(context, builder, sig, args):
        if _X86:
            fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), []), "llvm.x86.sse2.pause")
            builder.call(fn, [])
        return context.get_dummy_value()

    return types.none(), codegen


@intrinsic
def cycles(typingctx):
    """The CPU's cycle counter (rdtsc): a cheap clock for the back-off."""

    def codegen(context, builder, sig, args):
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_I64, []), "llvm.readcyclecounter")
        return builder.call(fn, [])

    return types.int64(), codegen


@intrinsic
def _futex(typingctx, op, value):
    """futex(op) on the low 32 bits of the WAKE slot: wait while it holds value, or wake all."""

    def codegen(context, builder, sig, args):
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_I64, [_I64] * 6), "llamalab_syscall")
        addr = builder.ptrtoint(_slot(builder, ir.Constant(_I64, WAKE)), _I64)
        count = builder.select(builder.icmp_signed("==", args[0], ir.Constant(_I64, _FUTEX_WAKE)),
                               ir.Constant(_I64, 1 << 30), args[1])
        zero = ir.Constant(_I64, 0)
        return builder.call(fn, [ir.Constant(_I64, _SYS_FUTEX), addr, args[0], count, zero, zero])

    return types.int64(op, value), codegen


@intrinsic
def address(typingctx, arr):
    """The data address of an array, as int64 (to pass it through the shared slots)."""

    def codegen(context, builder, sig, args):
        return builder.ptrtoint(context.make_array(sig.args[0])(context, builder, args[0]).data, _I64)

    return types.int64(arr), codegen


def _make_view(arrty):
    @intrinsic
    def view(typingctx, addr, n0, n1):
        """An array of this type over memory at addr, shape (n0,) or (n0, n1); owns nothing."""

        def codegen(context, builder, sig, args):
            addr, n0, n1 = args
            ary = context.make_array(arrty)(context, builder)
            item = context.get_constant(types.intp, arrty.dtype.bitwidth // 8)
            data = builder.inttoptr(addr, ary.data.type)
            shape = [n0] if arrty.ndim == 1 else [n0, n1]
            strides = [item] if arrty.ndim == 1 else [builder.mul(n1, item), item]
            populate_array(ary, data=data, shape=shape, strides=strides, itemsize=item, meminfo=None)
            return ary._getvalue()

        return arrty(addr, n0, n1), codegen

    return view


view_weights = _make_view(types.Array(types.uint8, 2, "C", readonly=True))
view_f32 = _make_view(types.Array(types.float32, 1, "C"))
view_i16 = _make_view(types.Array(types.int16, 1, "C"))


# ------------------------------------------------------------------ the protocol
@njit(cache=True, _nrt=False)
def claim(from_back, divisor, cap):
    """(first, count) of the next run of chunks from one end of the open job: a 1/divisor share
    of those left, between 1 and cap chunks (guided self-scheduling from both ends: large runs
    while much is left, single chunks where the two ends meet), or (0, 0) when none is left.
    CLAIM holds back << 32 | front; the chunks left are front .. back-1."""
    while True:
        c = load(CLAIM)
        front, back = c & 0xFFFFFFFF, c >> 32
        if front >= back:
            return 0, 0
        take = min(cap, max(1, (back - front) // divisor))
        if from_back:
            if cas(CLAIM, c, c - (take << 32)):
                return back - take, take
        elif cas(CLAIM, c, c + take):
            return front, take


@njit(cache=True, _nrt=False)
def claim_front():
    """The caller's next chunk (from the front of the job), or -1 when none is left."""
    first, count = claim(False, 1, 1)
    return first if count else -1


@njit(cache=True, _nrt=False)
def claim_back():
    """A worker's next chunk (from the back), or -1 when none is left."""
    first, count = claim(True, 1, 1)
    return first if count else -1


@njit(cache=True, _nrt=False)
def acquire():
    """Take the pool for one job: False if there are no workers or another caller has it
    (then run the job alone; ARGS belong to the holder)."""
    if load(WORKERS) == 0 or cycles() < load(QUIET_UNTIL):
        return False
    return cas(BUSY, 0, 1)


@njit(cache=True, _nrt=False)
def open_job(n_chunks):
    """Open a job of n_chunks (ARGS written) and wake sleeping workers."""
    store(LEFT, 0)
    store(CLAIM, n_chunks << 32)
    store(STATE, (((load(STATE) >> 32) + 1) << 32) | OPEN)
    if load(SLEEPERS) > 0:
        fetch_add(WAKE, 1)
        _futex(_FUTEX_WAKE, 0)


@njit(cache=True, _nrt=False)
def finish():
    """Close the job, wait for the workers that joined it to leave, release the pool."""
    while True:
        s = load(STATE)
        if cas(STATE, s, (s >> 32) << 32):  # same generation, closed, no joiners
            joined = s & (OPEN - 1)
            break
    t0 = cycles()
    while load(LEFT) != joined:
        pause()
    # A joined worker that lost its core mid-chunk makes the caller wait a time slice.
    # After such a stall, run jobs alone for a while (doubling on repeats), then retry.
    backoff = load(BACKOFF)
    if cycles() - t0 > STALL_CYCLES:
        backoff = min(MAX_BACKOFF, max(MIN_BACKOFF, 2 * backoff))
        store(QUIET_UNTIL, cycles() + backoff)
    elif backoff > 0:
        backoff //= 2
    store(BACKOFF, backoff)
    store(BUSY, 0)


@njit(cache=True, _nrt=False)
def join(wid, last):
    """A worker's check for work: the generation of the open job it joined, or 0."""
    s = load(STATE)
    gen = s >> 32
    if (s & OPEN) != 0 and gen != last and wid < load(WORKERS) and cas(STATE, s, s + 1):
        return gen
    return 0


@njit(cache=True, _nrt=False)
def idle(last, spins):
    """A worker with nothing to do: pause, and after SPIN_LIMIT pauses sleep until woken.
    Returns the new spin count."""
    if spins < SPIN_LIMIT:
        pause()
        return spins + 1
    seq = load(WAKE)
    fetch_add(SLEEPERS, 1)
    s = load(STATE)
    if not ((s & OPEN) != 0 and (s >> 32) != last):  # re-checked after announcing: no lost wake-up
        _futex(_FUTEX_WAIT, seq & 0xFFFFFFFF)
    fetch_add(SLEEPERS, -1)
    return 0


class Pool:
    """Starts and counts the worker threads (Python threads running compiled loops)."""

    def __init__(self, worker):
        self._worker = worker
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def resize(self, n_workers: int) -> None:
        """Use n_workers helpers besides the calling thread (started on first need)."""
        with self._lock:
            while len(self._threads) < n_workers:
                t = threading.Thread(target=self._worker, args=(len(self._threads),), daemon=True,
                                     name=f"llamalab-kernel-{len(self._threads)}")
                t.start()
                self._threads.append(t)
            _state[WORKERS] = n_workers

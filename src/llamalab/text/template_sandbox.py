"""A Jinja sandbox with resource limits, for chat templates that come inside strangers' model files.

Jinja's own sandbox stops escapes (no `__class__`, no unsafe calls) but not abuse: nested loops
run forever, `'x' * 10**10` allocates gigabytes (and its optimizer folds such constants at
*compile* time), and a recursive macro ends in a RecursionError. Here every render carries a
`Budget`, and the template's code is made to pay into it:

- steps: each loop iteration, call, attribute/item lookup, operator and output piece is a step;
  the render stops after `max_steps` steps or `max_seconds` seconds (checked on every step, so
  no loop escapes it: `{% for %}` iterables are wrapped at parse time to tick once per item);
- size: an operation that would build a string/list longer than `max_output` is refused
  *before* it runs (`*`, `**`, `%`, padding and replace methods, the `join`/`indent`/`center`/
  `format` filters), everything built is charged to `max_work` (total characters), and the
  template's output is capped at `max_output` characters;
- depth: macro and recursive-loop calls nest at most `max_depth` deep;
- no constant folding (`optimized=False`), so nothing runs at compile time;
- a watchdog thread raises RenderTimeout into the render from outside should it ever run
  `WATCHDOG_GRACE` seconds past `max_seconds` anyway (a path the checks above missed).

A breach raises `TemplateLimitError` with a one-line message ("chat template: exceeded N steps").
"""

from __future__ import annotations

import operator
import re
import threading
import time
from dataclasses import dataclass

from jinja2 import nodes
from jinja2.compiler import CodeGenerator
from jinja2.runtime import LoopContext, Macro
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError


@dataclass(frozen=True)
class TemplateLimits:
    """Per-render bounds. Real chat templates use well under 1% of each."""

    max_steps: int = 1_000_000       # loop iterations + calls + lookups + operators + output pieces
    max_seconds: float = 1.0         # wall time of one render
    max_output: int = 4 * 2**20      # characters of output, and of any one string or list built
    max_work: int = 32 * 2**20       # characters (or items) built in all, intermediates included
    max_depth: int = 32              # nested macro / recursive-loop calls
    max_range: int = 10_000          # items in one range()
    max_source: int = 1 * 2**20      # characters of template source


class TemplateLimitError(SecurityError):
    """The template went over one of its limits; the message is one user-facing line."""


class RenderTimeout(TemplateLimitError):
    """Raised into the rendering thread from outside (the watchdog), should a render ever get past
    its own checks: the backstop, `max_seconds + WATCHDOG_GRACE` after the start."""

    def __init__(self, *args):
        super().__init__(*(args or ("chat template: ran past its time limit (stopped by the watchdog)",)))


WATCHDOG_GRACE = 1.0  # seconds after max_seconds; the in-render checks normally stop it first


class Budget:
    """What one render has spent so far."""

    def __init__(self, limits: TemplateLimits):
        self.limits = limits
        self.deadline = time.monotonic() + limits.max_seconds
        self.steps = self.work = self.output = self.depth = 0

    def step(self, n: int = 1) -> None:
        self.steps += n
        if self.steps > self.limits.max_steps:
            raise TemplateLimitError(f"chat template: exceeded {self.limits.max_steps:,} steps")
        if time.monotonic() > self.deadline:
            raise TemplateLimitError(f"chat template: exceeded {self.limits.max_seconds:g} s")

    def allow(self, size: int, what: str) -> None:
        """Refuse, before building it, an object of `size` characters/items."""
        if size > self.limits.max_output:
            raise TemplateLimitError(f"chat template: {what} would build {size:,} characters "
                                     f"(limit {self.limits.max_output:,})")

    def charge(self, value):
        """Account for a value just built; returns it."""
        size = _size(value)
        self.allow(size, "an expression")
        self.work += size
        if self.work > self.limits.max_work:
            raise TemplateLimitError(f"chat template: exceeded {self.limits.max_work:,} characters of work")
        self.step()
        return value

    def emit(self, text: str) -> str:
        self.output += len(text)
        if self.output > self.limits.max_output:
            raise TemplateLimitError(f"chat template: exceeded {self.limits.max_output:,} characters of output")
        return self.charge(text)


_current = threading.local()


def budget() -> Budget:
    b = getattr(_current, "budget", None)
    if b is None:  # rendered outside render_limited (should not happen): the default limits
        b = _current.budget = Budget(TemplateLimits())
    return b


def _size(v) -> int:
    if isinstance(v, (str, bytes, list, tuple, dict, set, frozenset)):
        return len(v)
    if isinstance(v, int) and not isinstance(v, bool):
        return v.bit_length() // 8
    return 1


def _length(v) -> int | None:
    return len(v) if isinstance(v, (str, bytes, list, tuple)) else None


_NUMBER = re.compile(r"\d+")


def _check_format(fmt: str, args, what: str) -> None:
    """`%`/`str.format` can pad to any width: refuse widths (literal or `*`/`{}` arguments) over the limit."""
    b = budget()
    for m in _NUMBER.findall(fmt):
        b.allow(int(m) if len(m) < 12 else 10**12, what)
    for a in args if isinstance(args, (tuple, list)) else (args,):
        if isinstance(a, int) and not isinstance(a, bool):
            b.allow(abs(a), what)


_OPS = {"*": operator.mul, "**": operator.pow, "+": operator.add, "%": operator.mod}
MAX_INT_BYTES = 4096  # integers in templates count messages; nothing needs a 32,768-bit one


def _binop(op: str, left, right):
    """Size check of `*`, `**`, `+`, `%` before Python runs them."""
    b = budget()
    if op == "*":
        for seq, n in ((left, right), (right, left)):
            if _length(seq) is not None and isinstance(n, int):
                b.allow(len(seq) * max(n, 0), "'*'")
        if isinstance(left, int) and isinstance(right, int):
            _allow_int((left.bit_length() + right.bit_length()) // 8, "'*'")
    elif op == "**" and isinstance(left, int) and isinstance(right, int) and abs(left) > 1:
        _allow_int(left.bit_length() * max(right, 0) // 8, "'**'")
    elif op == "+" and _length(left) is not None and _length(right) is not None:
        b.allow(len(left) + len(right), "'+'")
    elif op == "%" and isinstance(left, str):
        _check_format(left, right, "'%'")
    return _OPS[op](left, right)


def _allow_int(n_bytes: int, what: str) -> None:
    if n_bytes > MAX_INT_BYTES:
        raise TemplateLimitError(f"chat template: {what} would build a {n_bytes:,}-byte integer (limit {MAX_INT_BYTES:,})")


def _check_str_method(s: str, name: str, args) -> None:
    """String methods that can build more than they are given."""
    b = budget()
    if name in ("center", "ljust", "rjust", "zfill") and args and isinstance(args[0], int):
        b.allow(args[0], f"str.{name}")
    elif name == "expandtabs":
        b.allow(len(s) + s.count("\t") * (args[0] if args and isinstance(args[0], int) else 8), "str.expandtabs")
    elif name == "replace" and len(args) >= 2 and isinstance(args[0], str) and isinstance(args[1], str):
        hits = s.count(args[0]) if args[0] else len(s) + 1
        b.allow(len(s) + hits * len(args[1]), "str.replace")
    elif name == "join" and args:
        b.allow(_join_size(s, args[0]), "str.join")
    elif name in ("translate", "maketrans"):
        raise TemplateLimitError(f"chat template: str.{name} is not allowed")


def _join_size(sep: str, items) -> int:
    if not isinstance(items, (list, tuple)):
        return 0  # a generator / string: bounded by what produced it
    return sum(len(x) if isinstance(x, str) else 20 for x in items) + len(sep) * max(len(items) - 1, 0)


def _wrap_filter(name: str, fn):
    """Check a filter's arguments before it runs and charge what it returns."""

    def checked(*args, **kwargs):
        b = budget()
        b.step()
        # the value is args[0], or args[1] after a context/eval-context/environment argument
        values = [a for a in args if isinstance(a, (str, list, tuple))]
        value = values[0] if values else None
        ints = [a for a in (*args, *kwargs.values()) if isinstance(a, int) and not isinstance(a, bool)]
        for n in ints:
            b.allow(abs(n), f"the '{name}' filter")
        if name == "indent" and isinstance(value, str):
            width = next((a for a in (*args[1:], *kwargs.values()) if isinstance(a, (int, str))), 4)
            width = width if isinstance(width, int) else len(width)
            b.allow(len(value) + (value.count("\n") + 1) * width, "the 'indent' filter")
        elif name == "replace" and isinstance(value, str):
            strs = [a for a in args if isinstance(a, str)]
            if len(strs) >= 3:
                _check_str_method(strs[0], "replace", strs[1:])
        elif name == "join" and isinstance(value, (list, tuple)):
            sep = next((a for a in args if isinstance(a, str)), "")
            b.allow(_join_size(sep, value), "the 'join' filter")
        elif name == "format" and isinstance(value, str):
            _check_format(value, tuple(args[1:]), "the 'format' filter")
        elif name == "sum" and isinstance(value, (list, tuple)) and not all(isinstance(x, (int, float)) for x in value):
            raise TemplateLimitError("chat template: the 'sum' filter takes numbers only")
        return b.charge(fn(*args, **kwargs))

    for attr in ("jinja_pass_arg",):  # keep @pass_context / @pass_eval_context / @pass_environment
        if hasattr(fn, attr):
            setattr(checked, attr, getattr(fn, attr))
    checked.__name__ = getattr(fn, "__name__", name)
    return checked


class _LimitedCodeGenerator(CodeGenerator):
    """Routes every output piece (direct or into a `{% set %}`/`{% filter %}` buffer) and every
    `~` concatenation through the budget."""

    def _output_const_repr(self, group) -> str:
        return f"environment.emit({super()._output_const_repr(group)})"

    def _output_child_pre(self, node, frame, finalize) -> None:
        self.write("environment.emit(")
        super()._output_child_pre(node, frame, finalize)

    def _output_child_post(self, node, frame, finalize) -> None:
        super()._output_child_post(node, frame, finalize)
        self.write(")")

    def visit_Concat(self, node, frame) -> None:
        self.write("environment.concat((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


class LimitedSandbox(ImmutableSandboxedEnvironment):
    """ImmutableSandboxedEnvironment + the limits above (see the module docstring)."""

    code_generator_class = _LimitedCodeGenerator
    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def __init__(self, limits: TemplateLimits = TemplateLimits(), **kwargs):
        super().__init__(optimized=False, **kwargs)
        self.limits = limits
        self.globals["range"] = self._range
        self.filters = {name: _wrap_filter(name, fn) for name, fn in self.filters.items()}

    def set_filter(self, name: str, fn) -> None:
        """Add or replace a filter, checked and charged like the built-in ones."""
        self.filters[name] = _wrap_filter(name, fn)

    # --- hooks the generated code calls -----------------------------------------------------
    def emit(self, text: str) -> str:
        return budget().emit(text)

    def concat(self, parts) -> str:
        b = budget()
        pieces = [str(p) for p in parts]
        b.allow(sum(map(len, pieces)), "'~'")
        return b.charge("".join(pieces))

    def tick_iter(self, iterable):
        b = budget()
        for item in iterable:
            b.step()
            yield item

    def _range(self, *args):
        r = range(*args)
        if len(r) > self.limits.max_range:
            raise TemplateLimitError(f"chat template: range() of {len(r):,} items (limit {self.limits.max_range:,})")
        return r

    # --- sandbox overrides --------------------------------------------------------------------
    def _parse(self, source, name, filename):
        """Wrap each `{% for %}` iterable so that every iteration is a step."""
        tree = super()._parse(source, name, filename)
        for loop in tree.find_all(nodes.For):
            loop.iter = nodes.Call(nodes.EnvironmentAttribute("tick_iter"), [loop.iter], [], None, None,
                                   lineno=loop.lineno)
        return tree

    def call_binop(self, context, operator_, left, right):
        budget().step()
        return budget().charge(_binop(operator_, left, right))

    def getattr(self, obj, attribute):
        budget().step()
        return super().getattr(obj, attribute)

    def getitem(self, obj, argument):
        budget().step()
        return super().getitem(obj, argument)

    def wrap_str_format(self, value):
        wrapped = super().wrap_str_format(value)
        if wrapped is None:
            return None
        fmt = value.__self__

        def checked(*args, **kwargs):
            mapping = args[0] if args and isinstance(args[0], dict) else {}
            _check_format(fmt, (*args, *kwargs.values(), *mapping.values()), "str.format")
            return budget().charge(wrapped(*args, **kwargs))

        return checked

    def call(__self, __context, __obj, *args, **kwargs):  # noqa: N805 (jinja's signature)
        b = budget()
        b.step()
        owner = getattr(__obj, "__self__", None)
        if isinstance(owner, str):
            _check_str_method(owner, getattr(__obj, "__name__", ""), args)
        nests = isinstance(__obj, (Macro, LoopContext))
        if nests:
            b.depth += 1
            if b.depth > __self.limits.max_depth:
                b.depth = 0  # the error unwinds every level; don't fire again on the way out
                raise TemplateLimitError(f"chat template: calls nested deeper than {__self.limits.max_depth}")
        try:
            return b.charge(super().call(__context, __obj, *args, **kwargs))
        finally:
            if nests and b.depth > 0:
                b.depth -= 1


class _Watchdog:
    """Raises RenderTimeout in the rendering thread from a timer thread, unless disarmed first.
    (An asynchronous exception lands at the next bytecode: it stops Python code, and the size
    checks keep any single C-level operation short.)"""

    def __init__(self, seconds: float):
        import ctypes

        self._set_async = ctypes.pythonapi.PyThreadState_SetAsyncExc
        self._tid = ctypes.c_ulong(threading.get_ident())
        self._lock = threading.Lock()
        self._armed = True
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True
        self._timer.start()

    def _fire(self) -> None:
        import ctypes

        with self._lock:
            if self._armed:
                self._set_async(self._tid, ctypes.py_object(RenderTimeout))

    def disarm(self) -> None:
        with self._lock:
            self._armed = False
            self._timer.cancel()
            self._set_async(self._tid, None)  # clears one that fired but has not landed yet


def render_limited(template, limits: TemplateLimits, **context) -> str:
    """Render `template` (compiled by a LimitedSandbox) within `limits`."""
    _current.budget = Budget(limits)
    watchdog = _Watchdog(limits.max_seconds + WATCHDOG_GRACE)
    try:
        try:
            return "".join(template.generate(**context))
        finally:
            watchdog.disarm()
    except RecursionError:
        raise TemplateLimitError("chat template: recursion too deep") from None
    except MemoryError:
        raise TemplateLimitError("chat template: out of memory") from None
    finally:
        _current.budget = None

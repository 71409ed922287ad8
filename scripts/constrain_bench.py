"""Constrained decoding on a model's vocabulary (SmolLM2's 49,152 tokens by default):
llguidance vs outlines-core (`pip install outlines-core==0.2.14` to include it).

    python scripts/constrain_bench.py [MODEL.gguf]

mask_ms = computing the allowed-token mask alone, per token (median, p99) on random-logit
walks through a nested schema; compile_s = schema -> matcher; then 18 keyword probes:
which schemas each library accepts (accepting is not enforcing: check the samples)."""
import json, time, sys
import numpy as np
from llamalab.formats import load
from llamalab.store import resolve_model
from llamalab.text.tokenizer import Tokenizer
TOK = Tokenizer.from_spec(load(str(resolve_model(sys.argv[1] if len(sys.argv) > 1 else None)), None).tokenizer)
_special = [i for i in range(TOK.vocab_size) if TOK.token_bytes(i) and not TOK.render(i, skip_special=True)]
V = {"tokens": [(b"\xff" if i in set(_special) else b"") + TOK.token_bytes(i) for i in range(TOK.vocab_size)],
     "special": _special, "eos": TOK.eos_id, "bos": TOK.bos_id, "stop": sorted(TOK.stop_ids)}
tokens, n = V["tokens"], len(V["tokens"])
SCHEMA = {"type": "object", "properties": {
    "name": {"type": "string", "maxLength": 20},
    "age": {"type": "integer", "minimum": 0, "maximum": 150},
    "role": {"enum": ["admin", "user", "guest"]},
    "tags": {"type": "array", "items": {"type": "string", "maxLength": 10}, "maxItems": 3},
    "address": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20}, "zip": {"type": "string", "pattern": "^[0-9]{5}$"}},
                "required": ["city", "zip"], "additionalProperties": False}},
  "required": ["name", "age", "role", "tags", "address"], "additionalProperties": False}
MASK = []
def mask_to_bool(bm):  # (words,) int32 -> (n,) bool
    return np.unpackbits(bm.view(np.uint8), bitorder="little")[:n].astype(bool)

def walk(allowed, advance, done, rng, steps=400):
    per, out = [], []
    for _ in range(steps):
        t0 = time.perf_counter()
        ok = allowed()
        logits = rng.standard_normal(n).astype(np.float32)
        logits[~ok] = -np.inf
        tok = int(np.argmax(logits))
        out.append(tok)
        fin = advance(tok)
        per.append(time.perf_counter() - t0)
        if fin or done():
            break
    return per, out

def run_llg(schema, seeds=5):
    MASK.clear()
    import llguidance as llg
    class G:  # the gtokenizer llguidance's TokenizerWrapper expects
        eos_token_id, bos_token_id = V["eos"], V["bos"]
        special_token_ids = V["special"]
        def __init__(self): self.tokens = tokens
        def __call__(self, s):
            return TOK.encode(s.decode("utf-8", "replace") if isinstance(s, bytes) else s, add_bos=False)
    t0 = time.perf_counter(); tk = llg.LLTokenizer(llg.TokenizerWrapper(G())); t_tok = time.perf_counter() - t0
    t0 = time.perf_counter(); grammar = llg.LLMatcher.grammar_from_json_schema(json.dumps(schema))
    m = llg.LLMatcher(tk, grammar); t_compile = time.perf_counter() - t0
    if m.is_error(): return dict(error=m.get_error())
    per_all, texts = [], []
    for s in range(seeds):
        m = llg.LLMatcher(tk, grammar)
        bm = np.zeros((n + 31) // 32, dtype=np.int32)
        def allowed():
            m.unsafe_compute_mask_ptr(bm.ctypes.data, bm.nbytes); return mask_to_bool(bm)
        def advance(t):
            if t in V["stop"]: return True
            assert m.consume_token(t), m.get_error(); return False
        def allowed():
            t0 = time.perf_counter(); m.unsafe_compute_mask_ptr(bm.ctypes.data, bm.nbytes); MASK.append(time.perf_counter() - t0); return mask_to_bool(bm)
        per, out = walk(allowed, advance, m.is_stopped, np.random.default_rng(s))
        per_all += per[1:]; texts.append(b"".join(tokens[t] for t in out if t not in V["stop"]).decode("utf-8", "replace"))
    return dict(tokenizer_s=t_tok, compile_s=t_compile, per_token_ms=1e3 * np.median(per_all or [0]), mask_ms=1e3*np.median(MASK), mask_p99_ms=1e3*np.percentile(MASK, 99), n=len(per_all), sample=texts[0][:120])

def run_oc(schema, seeds=5):
    MASK.clear()
    import outlines_core as oc
    from outlines_core.json_schema import build_regex_from_schema
    t0 = time.perf_counter()
    vmap = {}
    for i, b in enumerate(tokens):
        if i in V["stop"] or b.startswith(b"\xff") or not b: continue
        vmap.setdefault(b, []).append(i)
    voc = oc.Vocabulary(V["eos"], vmap); t_tok = time.perf_counter() - t0
    t0 = time.perf_counter()
    try:
        idx = oc.Index(build_regex_from_schema(json.dumps(schema)), voc)
    except Exception as e:
        return dict(error=f"{type(e).__name__}: {e}"[:200])
    t_compile = time.perf_counter() - t0
    per_all, texts = [], []
    for s in range(seeds):
        g = oc.Guide(idx)
        bm = np.zeros((n + 31) // 32, dtype=np.int32)
        def allowed():
            g.write_mask_into(bm.ctypes.data, bm.size, 4); return mask_to_bool(bm)
        def advance(t):
            if t == V["eos"]: return True
            g.advance(t, return_tokens=False); return False
        def allowed():
            t0 = time.perf_counter(); g.write_mask_into(bm.ctypes.data, bm.size, 4); MASK.append(time.perf_counter() - t0); return mask_to_bool(bm)
        per, out = walk(allowed, advance, g.is_finished, np.random.default_rng(s))
        per_all += per[1:]; texts.append(b"".join(tokens[t] for t in out if t not in V["stop"]).decode("utf-8", "replace"))
    return dict(tokenizer_s=t_tok, compile_s=t_compile, per_token_ms=1e3 * np.median(per_all or [0]), mask_ms=1e3*np.median(MASK), mask_p99_ms=1e3*np.percentile(MASK, 99), n=len(per_all), sample=texts[0][:120])

# baseline: the same walk with no mask (argmax over random logits + the bool conversion cost is in both)
rng = np.random.default_rng(0); t0 = time.perf_counter()
for _ in range(200): int(np.argmax(rng.standard_normal(n).astype(np.float32)))
print(f"baseline (random logits + argmax): {1e3*(time.perf_counter()-t0)/200:.3f} ms/token")
try:
    import outlines_core  # noqa: F401
    LIBS = (("llguidance", run_llg), ("outlines-core", run_oc))
except ImportError:
    LIBS = (("llguidance", run_llg),)
for name, fn in LIBS:
    print(name, json.dumps(fn(SCHEMA), default=float))
# coverage: one small schema per keyword
CASES = {
  "anyOf": {"anyOf": [{"type": "integer"}, {"type": "string", "maxLength": 5}]},
  "oneOf": {"oneOf": [{"type": "integer"}, {"type": "boolean"}]},
  "allOf": {"allOf": [{"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}]},
  "$ref/$defs": {"$defs": {"p": {"type": "integer"}}, "type": "object", "properties": {"x": {"$ref": "#/$defs/p"}}, "required": ["x"]},
  "recursive $ref": {"$defs": {"n": {"type": "object", "properties": {"c": {"type": "array", "items": {"$ref": "#/$defs/n"}, "maxItems": 2}}}}, "$ref": "#/$defs/n"},
  "const": {"const": "x"},
  "pattern": {"type": "string", "pattern": "^[a-z]{3}$"},
  "format date-time": {"type": "string", "format": "date-time"},
  "minItems/maxItems": {"type": "array", "items": {"type": "integer"}, "minItems": 1, "maxItems": 3},
  "exclusiveMinimum": {"type": "number", "exclusiveMinimum": 0},
  "multipleOf": {"type": "integer", "multipleOf": 3},
  "additionalProperties schema": {"type": "object", "additionalProperties": {"type": "integer"}},
  "prefixItems": {"type": "array", "prefixItems": [{"type": "integer"}, {"type": "string"}]},
  "uniqueItems": {"type": "array", "items": {"type": "integer"}, "uniqueItems": True},
  "not": {"not": {"type": "string"}},
  "if/then": {"if": {"type": "integer"}, "then": {"minimum": 1}},
  "patternProperties": {"type": "object", "patternProperties": {"^a": {"type": "integer"}}},
  "type list": {"type": ["string", "null"]},
}
for name, fn in LIBS:
    ok, bad = [], []
    for k, s in CASES.items():
        try: r = fn(s, seeds=1)
        except BaseException as e: r = dict(error=f"{type(e).__name__}: {str(e)[:80]}")
        (bad if "error" in r else ok).append(k if "error" not in r else f"{k} ({r['error'][:90]})")
    print(f"{name}: {len(ok)}/{len(CASES)} compile; refused: {bad}")

"""What crosses from the grader's worker to the grader: plain JSON data, never a pickle or points.

The worker calls the student's function where the checks call it and records, per check and per
call, what the function returned (or raised) and what it left in its mutable arguments (tensors,
lists of them, an optimizer's state). The grader runs the same checks in its own process against
a stand-in, :class:`Replayer`, that hands those records back call by call, so pass or fail and the
points are decided by the grader's own copy of the checks, on the inputs its checks choose: a cell
that patches the worker's checks, or writes to the worker's channel, changes at most what "its
function returned", never the verdict. :func:`decode` takes nothing on trust: a record the
grader's own encoding cannot have produced fails the check that reads it.
"""

from __future__ import annotations

import base64
import math
import re
import traceback

import torch

from .checks import CheckFailed, StudentRaised

MAX_DEPTH = 6  # nesting of lists/tuples in a returned value
MAX_ITEMS = 1 << 16  # items of one list
MAX_NUMEL = 1 << 22  # elements of one tensor
MAX_TEXT = 2000  # characters of a string, an exception's message
DTYPES = {str(d).removeprefix("torch."): d for d in (
    torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64,
    torch.float16, torch.bfloat16, torch.float32, torch.float64)}
_INT = re.compile(r"-?[0-9]{1,400}")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.]{0,79}")


class Malformed(CheckFailed):
    """A record the grader's encoding cannot have produced: the check reading it fails."""


# ---- the worker's side: encode what the student's function did


def encode(v, depth: int = 0) -> dict:
    """A JSON-able record of a returned value: None, bools, ints, floats (exact, as hex), strings,
    lists and tuples of them, dicts keyed by ints or strings, tensors (dtype, shape, bytes); any
    other object by its type's name."""
    if v is None:
        return {"t": "none"}
    if isinstance(v, bool):
        return {"t": "bool", "v": bool(v)}
    if isinstance(v, int):
        text = int.__repr__(v)
        return ({"t": "int", "v": text} if len(text) <= 400
                else {"t": "other", "type": "int (over 400 digits)"})
    if isinstance(v, float):
        return {"t": "float", "v": float.hex(v)}
    if isinstance(v, str) and len(v) <= MAX_TEXT:
        return {"t": "str", "v": str.__str__(v)}
    if isinstance(v, (list, tuple)) and depth < MAX_DEPTH and len(v) <= MAX_ITEMS:
        return {"t": "tuple" if isinstance(v, tuple) else "list",
                "v": [encode(x, depth + 1) for x in v]}
    if (isinstance(v, dict) and depth < MAX_DEPTH and len(v) <= MAX_ITEMS
            and all(type(k) in (int, str) for k in v)):  # e.g. seed -> value
        return {"t": "dict",
                "v": [[encode(k, depth + 1), encode(x, depth + 1)] for k, x in dict.items(v)]}
    if isinstance(v, torch.Tensor):
        try:
            t = v.detach().cpu().contiguous()
            name = str(t.dtype).removeprefix("torch.")
            if name in DTYPES and t.layout == torch.strided and t.numel() <= MAX_NUMEL:
                raw = t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
                return {"t": "tensor", "dtype": name, "shape": list(t.shape),
                        "data": base64.b64encode(raw).decode()}
        except Exception:
            pass
    return {"t": "other", "type": type(v).__name__[:80]}


def state_of(v, depth: int = 0) -> dict:
    """What a call left in an argument: a tensor's values (and a parameter's ``.grad``), each item
    of a list or tuple, an optimizer's per-parameter state; anything else is not recorded."""
    if isinstance(v, torch.Tensor):
        s = {"t": "tensor", "value": encode(v)}
        if v.is_leaf and v.requires_grad:
            s["grad"] = encode(v.grad)
        return s
    if isinstance(v, (list, tuple)) and depth < MAX_DEPTH and len(v) <= MAX_ITEMS:
        return {"t": "seq", "v": [state_of(x, depth + 1) for x in v]}
    if isinstance(v, torch.optim.Optimizer):
        params = [p for group in v.param_groups for p in group["params"]]
        return {"t": "optim", "state": [{k: encode(x) for k, x in v.state.get(p, {}).items()
                                         if isinstance(k, str) and isinstance(x, torch.Tensor)}
                                        for p in params]}
    return {"t": "skip"}


def raised(e: BaseException) -> dict:
    frames = traceback.extract_tb(e.__traceback__)
    where = f"line {frames[-1].lineno} of {frames[-1].filename}" if frames else "where unknown"
    return {"raised": {"type": type(e).__name__[:80], "message": str(e)[:MAX_TEXT],
                       "where": where[:300]}}


class Recorder:
    """Stands in for the student's function inside the worker's checks and records every call."""

    def __init__(self, fn):
        self.fn, self.records, self.calls = fn, [], None

    def start(self, i: int) -> None:
        self.calls = []
        self.records.append(self.calls)

    def __call__(self, *args):
        try:
            out = self.fn(*args)
        except Exception as e:
            self.calls.append(raised(e))
            raise
        self.calls.append({"out": encode(out), "args": [state_of(a) for a in args]})
        return out


# ---- the grader's side: decode strictly, replay into the grader's own checks


def _need(cond, what: str) -> None:
    if not cond:
        raise Malformed(f"the grader's worker sent a malformed record ({what}): did the exercise "
                        f"cell write to "
                        "the grader's channel or change its checks?")


def _tensor(d: dict) -> torch.Tensor:
    dtype, shape, data = d.get("dtype"), d.get("shape"), d.get("data")
    _need(dtype in DTYPES, "tensor dtype")
    _need(isinstance(shape, list) and len(shape) <= 8
          and all(type(n) is int and 0 <= n <= MAX_NUMEL for n in shape),
          "tensor shape")
    numel = math.prod(shape)
    _need(numel <= MAX_NUMEL and isinstance(data, str), "tensor size")
    try:
        raw = base64.b64decode(data, validate=True)
    except ValueError:
        raw = None
    dt = DTYPES[dtype]
    _need(raw is not None and len(raw) == numel * dt.itemsize, "tensor data")
    if not numel:
        return torch.empty(shape, dtype=dt)
    if dt == torch.bool:
        return (torch.frombuffer(bytearray(raw), dtype=torch.uint8) != 0).reshape(shape)
    return torch.frombuffer(bytearray(raw), dtype=dt).reshape(shape).clone()


def _opaque(name: str):
    """An object of a class named as the student's returned object's class (for messages)."""
    return type(name, (), {"__repr__": lambda self: f"<{name} object>"})()


def decode(d, depth: int = 0):
    _need(isinstance(d, dict) and depth <= MAX_DEPTH, "a value")
    t, v = d.get("t"), d.get("v")
    if t == "none":
        return None
    if t == "bool":
        _need(isinstance(v, bool), "a bool")
        return v
    if t == "int":
        _need(isinstance(v, str) and _INT.fullmatch(v), "an int")
        return int(v)
    if t == "float":
        _need(isinstance(v, str) and len(v) <= 40, "a float")
        try:
            return float.fromhex(v)
        except ValueError:
            _need(False, "a float")
    if t == "str":
        _need(isinstance(v, str) and len(v) <= MAX_TEXT, "a string")
        return v
    if t in ("list", "tuple"):
        _need(isinstance(v, list) and len(v) <= MAX_ITEMS, "a list")
        items = [decode(x, depth + 1) for x in v]
        return tuple(items) if t == "tuple" else items
    if t == "dict":
        _need(isinstance(v, list) and len(v) <= MAX_ITEMS
              and all(isinstance(kv, list) and len(kv) == 2 for kv in v),
              "a dict")
        out = {}
        for k, x in v:
            key = decode(k, depth + 1)
            _need(type(key) in (int, str), "a dict key")
            out[key] = decode(x, depth + 1)
        return out
    if t == "tensor":
        return _tensor(d)
    if t == "other":
        name = d.get("type")
        _need(isinstance(name, str)
              and _NAME.fullmatch(name.replace(" ", "_").replace("(", "").replace(")", "")),
              "a type name")
        return _opaque(name)
    _need(False, "an unknown kind of value")


def _apply(s, v, where: str) -> None:
    """Put what the student's call left in argument ``v`` (in the worker) into the grader's
    ``v``."""
    _need(isinstance(s, dict), "an argument")
    if isinstance(v, torch.Tensor):
        _need(s.get("t") == "tensor", "a tensor argument")
        new = decode(s.get("value"))
        if not isinstance(new, torch.Tensor) or new.shape != v.shape or new.dtype != v.dtype:
            raise CheckFailed(f"after the call, {where} is not a {v.dtype} tensor of shape "
                              f"{tuple(v.shape)} any more: "
                              "change its values in place, not its shape or type")
        with torch.no_grad():
            v.copy_(new)
        if v.is_leaf and v.requires_grad:
            grad = decode(s.get("grad", {"t": "none"}))
            if grad is not None and (not isinstance(grad, torch.Tensor) or grad.shape != v.shape
                                     or not grad.is_floating_point()):
                raise CheckFailed(
                    f"after the call, the gradient of {where} is not a tensor of its shape")
            v.grad = None if grad is None else grad.to(v.dtype)
    elif isinstance(v, (list, tuple)):
        items = s.get("v")
        _need(s.get("t") == "seq" and isinstance(items, list) and len(items) == len(v),
              "a list argument")
        for i, (si, vi) in enumerate(zip(items, v)):
            _apply(si, vi, f"item {i} of {where}")
    elif isinstance(v, torch.optim.Optimizer):
        params = [p for group in v.param_groups for p in group["params"]]
        states = s.get("state")
        _need(s.get("t") == "optim" and isinstance(states, list) and len(states) == len(params),
              "an optimizer")
        for p, st in zip(params, states):
            _need(isinstance(st, dict) and all(isinstance(k, str) and len(k) <= 40 for k in st),
                  "optimizer state")
            state = {k: decode(x) for k, x in st.items()}
            _need(all(isinstance(x, torch.Tensor) for x in state.values()), "optimizer state")
            v.state[p] = state
    else:
        _need(s.get("t") == "skip", "an argument")


class Replayer:
    """Stands in for the student's function inside the grader's checks: the i-th call of check k
    returns (or raises) what the i-th call of check k did in the worker, after putting what it left
    in its arguments into the grader's arguments."""

    def __init__(self, records):
        _need(isinstance(records, list) and len(records) <= 64
              and all(isinstance(calls, list) for calls in records), "the checks' records")
        self.records, self.calls, self.n = records, [], 0

    def start(self, i: int) -> None:
        self.calls, self.n = (self.records[i] if i < len(self.records) else []), 0

    def __call__(self, *args):
        if self.n >= len(self.calls):
            raise CheckFailed(f"the grader's worker recorded {len(self.calls)} calls of the "
                              f"function for this "
                              "check and the check makes more: did the exercise cell change the "
                              "grader's checks?")
        call = self.calls[self.n]
        self.n += 1
        _need(isinstance(call, dict), "a call")
        if "raised" in call:
            r = call["raised"]
            _need(isinstance(r, dict) and all(isinstance(r.get(k), str) and len(r[k]) <= MAX_TEXT
                                              for k in ("type", "message", "where")),
                  "an exception")
            raise StudentRaised(r["type"], r["message"], r["where"])
        states = call.get("args")
        _need(isinstance(states, list) and len(states) == len(args), "the arguments")
        for i, (s, a) in enumerate(zip(states, args)):
            _apply(s, a, f"argument {i + 1}")
        return decode(call.get("out"))

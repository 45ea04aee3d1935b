"""Helpers for a fedplane training command: safetensors, metrics, environment.

fedplane's envoy runs a job's training command once per round; the contract
it follows is docs/training.md. This module does the three chores of it:

    from fedplane_train import Round, read_safetensors, write_safetensors, write_metrics

    r = Round.from_environ()                 # the FEDPLANE_* variables
    model = read_safetensors(r.input_model)  # {"weight": ndarray, ...}
    ...train...
    write_safetensors(r.output_model, trained, like=model)
    write_metrics(r.metrics, {"accuracy": 0.91, "n_samples": 600})

It needs the Python 3 standard library and numpy only, and is one file: copy
it into a job folder as fedplane_train.py, or install it with
`pip install ./python` from a fedplane checkout.

Files are checked as the envoy checks them (tensor/safetensors.go,
envoy/metrics.go), so a mistake shows up here, with a clear message, rather
than as a failed round.
"""

import json
import math
import os
import struct
import tempfile
from dataclasses import dataclass

import numpy as np

__all__ = [
    "DTYPES",
    "MAX_HEADER_SIZE",
    "MAX_NAME_LEN",
    "Round",
    "check_layout",
    "read_metrics",
    "read_safetensors",
    "write_metrics",
    "write_safetensors",
]

#: The safetensors dtypes fedplane's reader accepts (tensor/tensor.go) and
#: the little-endian numpy dtype each is read as. BF16 has no numpy dtype: it
#: is read into float32 (exactly) and written from float32 (rounded to
#: nearest, ties to even). A job's model itself must be F32: the director
#: averages float32 tensors only and refuses other dtypes at submit.
DTYPES = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}

#: The largest safetensors header fedplane reads, in bytes (100 MiB).
MAX_HEADER_SIZE = 100 << 20

#: The longest metric name the envoy accepts, in UTF-8 bytes.
MAX_NAME_LEN = 1 << 10

#: The metric that sets a site's FedAvg weight for the round.
SAMPLES_METRIC = "n_samples"

_METADATA = "__metadata__"
_FLOAT_DTYPES = ("F64", "F32", "F16", "BF16")
_MAX_INT32 = (1 << 31) - 1
_MAX_FLOAT32 = float(np.finfo(np.float32).max)


# --- the environment ---------------------------------------------------------


@dataclass(frozen=True)
class Round:
    """One round's FEDPLANE_* variables (see docs/training.md)."""

    input_model: str  # FEDPLANE_INPUT_MODEL: the round's global model (read)
    output_model: str  # FEDPLANE_OUTPUT_MODEL: where the trained model goes
    metrics: str  # FEDPLANE_METRICS: the metrics file, one JSON object a line
    data: str  # FEDPLANE_DATA: the site's shard (--shard-dir)
    round: int  # FEDPLANE_ROUND: the round number, from 0
    envoy: str  # FEDPLANE_ENVOY: the envoy's name
    experiment: str  # FEDPLANE_EXPERIMENT: the job's id
    samples: int  # FEDPLANE_SAMPLES: the shard's --samples (0 if not given)

    @classmethod
    def from_environ(cls, environ=None):
        """Read the variables from environ (os.environ by default).

        Raises ValueError naming the first variable that is missing or not a
        number where one is due.
        """
        env = os.environ if environ is None else environ

        def get(name):
            v = env.get(name, "")
            if v == "":
                raise ValueError("%s is not set: run me from a fedplane envoy, or set it by hand" % name)
            return v

        def number(name):
            v = get(name)
            try:
                n = int(v, 10)
            except ValueError:
                raise ValueError("%s=%r is not a whole number" % (name, v)) from None
            if n < 0:
                raise ValueError("%s=%r is negative" % (name, v))
            return n

        return cls(
            input_model=get("FEDPLANE_INPUT_MODEL"),
            output_model=get("FEDPLANE_OUTPUT_MODEL"),
            metrics=get("FEDPLANE_METRICS"),
            data=get("FEDPLANE_DATA"),
            round=number("FEDPLANE_ROUND"),
            envoy=get("FEDPLANE_ENVOY"),
            experiment=get("FEDPLANE_EXPERIMENT"),
            samples=number("FEDPLANE_SAMPLES"),
        )


# --- safetensors ---------------------------------------------------------------
#
# A safetensors file is an 8-byte little-endian header length N, N bytes of
# JSON ({"name": {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin,
# end]}, ..., "__metadata__": {"key": "value"}}), then the data buffer; the
# offsets are relative to its start. Writers pad the JSON with spaces to a
# multiple of 8 bytes so that the data is aligned.


def _no_duplicates(pairs):
    out = {}
    for k, v in pairs:
        if k in out:
            raise ValueError("duplicate entry %r" % k)
        out[k] = v
    return out


def _is_count(v):
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def read_safetensors(path, metadata=False):
    """Read the safetensors file at path: {name: numpy array}.

    The arrays are native-endian copies in C order; BF16 tensors come back as
    float32. With metadata=True, return (tensors, metadata) where metadata is
    the header's __metadata__ dict ({} if none). The file is checked as
    fedplane checks it; a bad one raises ValueError saying what is wrong.
    """
    with open(path, "rb") as f:
        blob = f.read()
    try:
        tensors, meta = _parse(blob)
    except ValueError as e:
        raise ValueError("safetensors %s: %s" % (path, e)) from None
    return (tensors, meta) if metadata else tensors


def _parse(blob):
    if len(blob) < 8:
        raise ValueError("file of %d bytes is too short for the 8-byte header size" % len(blob))
    (n,) = struct.unpack("<Q", blob[:8])
    if n > len(blob) - 8:
        raise ValueError("header size %d larger than the file" % n)
    if n > MAX_HEADER_SIZE:
        raise ValueError("header size %d exceeds the limit of %d" % (n, MAX_HEADER_SIZE))
    raw = blob[8 : 8 + n]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("header is not valid UTF-8") from None
    if not text.startswith("{"):
        raise ValueError("header is not a JSON object")
    try:
        header = json.loads(text, object_pairs_hook=_no_duplicates)
    except json.JSONDecodeError as e:
        raise ValueError("header JSON: %s" % e) from None
    data = memoryview(blob)[8 + n :]

    meta = header.pop(_METADATA, None) or {}
    if not isinstance(meta, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        raise ValueError("%s must map strings to strings" % _METADATA)
    spans = []
    tensors = {}
    for name, entry in header.items():
        if name == "":
            raise ValueError("tensor with an empty name")
        if not isinstance(entry, dict):
            raise ValueError("tensor %r: entry is not an object" % name)
        for key in ("dtype", "shape", "data_offsets"):
            if entry.get(key) is None:
                raise ValueError("tensor %r: no %s" % (name, key))
        dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        if dtype not in DTYPES:
            raise ValueError("tensor %r: unknown dtype %r" % (name, dtype))
        if not isinstance(shape, list) or not all(_is_count(d) for d in shape):
            raise ValueError("tensor %r: shape %r is not a list of non-negative integers" % (name, shape))
        if not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_count(o) for o in offsets):
            raise ValueError("tensor %r: data_offsets %r is not [begin, end]" % (name, offsets))
        begin, end = offsets
        want = math.prod(shape) * DTYPES[dtype].itemsize
        if begin > end:
            raise ValueError("tensor %r: data_offsets %r are not a range" % (name, offsets))
        if end > len(data):
            raise ValueError("tensor %r: data_offsets %r end beyond the file's %d data bytes" % (name, offsets, len(data)))
        if end - begin != want:
            raise ValueError("tensor %r: data_offsets %r hold %d bytes, shape %r of %s needs %d"
                             % (name, offsets, end - begin, shape, dtype, want))
        if end > begin:
            spans.append((begin, end, name))
        a = np.frombuffer(data[begin:end], dtype=DTYPES[dtype]).reshape(shape)
        tensors[name] = _from_bf16(a) if dtype == "BF16" else a.astype(a.dtype.newbyteorder("="), copy=True)
    spans.sort()
    for (_, prev_end, prev), (begin, _, cur) in zip(spans, spans[1:]):
        if begin < prev_end:
            raise ValueError("tensors %r and %r overlap" % (prev, cur))
    return tensors, meta


def _from_bf16(a):
    """float32 values of BF16 bits (uint16): the upper half of a float32."""
    return (a.astype(np.uint32) << 16).view(np.float32).copy()


def _to_bf16(a):
    """BF16 bits of float32 values, rounded to nearest, ties to even; NaN stays NaN."""
    bits = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)
    rounded = (bits + (np.uint32(0x7FFF) + ((bits >> 16) & 1))) >> 16
    nan = (bits & 0x7FFFFFFF) > 0x7F800000
    return np.where(nan, (bits >> 16) | 0x40, rounded).astype("<u2")


def _dtype_name(a):
    """The safetensors dtype of numpy array a."""
    for name, dt in DTYPES.items():
        if name != "BF16" and a.dtype.newbyteorder("<") == dt.newbyteorder("<"):
            return name
    raise ValueError("numpy dtype %s has no safetensors dtype fedplane accepts (%s)"
                     % (a.dtype, ", ".join(sorted(DTYPES))))


def _first_not_finite(a):
    """(index tuple, "NaN"/"+Inf"/"-Inf") of a's first non-finite element, or None."""
    bad = np.flatnonzero(~np.isfinite(a))
    if bad.size == 0:
        return None
    i = np.unravel_index(int(bad[0]), a.shape)
    v = a[i]
    return tuple(int(x) for x in i), "NaN" if np.isnan(v) else ("-Inf" if v < 0 else "+Inf")


def check_layout(tensors, model):
    """Raise ValueError unless tensors has model's names, dtypes and shapes.

    model is what read_safetensors returned for the round's input model; this
    is the check the envoy makes of the output model (tensor.SameLayout).
    """
    for name in sorted(model):
        if name not in tensors:
            raise ValueError("tensor %r is missing" % name)
        got, want = np.asarray(tensors[name]), np.asarray(model[name])
        if got.dtype != want.dtype:
            raise ValueError("tensor %r: dtype %s, the model's is %s" % (name, got.dtype, want.dtype))
        if got.shape != want.shape:
            raise ValueError("tensor %r: shape %s differs from the model's %s" % (name, list(got.shape), list(want.shape)))
    for name in sorted(tensors):
        if name not in model:
            raise ValueError("unexpected tensor %r" % name)


def write_safetensors(path, tensors, metadata=None, dtypes=None, like=None, check_finite=True):
    """Write {name: array} to path as safetensors, as fedplane writes it.

    Each tensor's dtype is its array's (float32 is F32, int64 is I64, ...);
    dtypes maps names to "BF16" for float arrays stored as bfloat16. With
    like (a model read by read_safetensors), the tensors must match its names,
    dtypes and shapes (check_layout), as the envoy demands of the output
    model. Floating-point tensors holding NaN or Inf are refused unless
    check_finite is false: the envoy refuses them too.

    The header is compact JSON with sorted names, padded with spaces to a
    multiple of 8 bytes; the data follows in name order. The file is written
    under a temporary name in path's folder, fsynced and renamed, so a
    reader never sees half of it.
    """
    dtypes = dtypes or {}
    if like is not None:
        check_layout(tensors, like)
    for name in dtypes:
        if name not in tensors:
            raise ValueError("dtypes names %r, which is not a tensor" % name)
    header, chunks, offset = {}, [], 0
    for name in sorted(tensors):
        if not isinstance(name, str) or name == "":
            raise ValueError("tensor name %r: want a non-empty string" % (name,))
        if name == _METADATA:
            raise ValueError("%r is reserved, not a tensor name" % _METADATA)
        a = np.asarray(tensors[name])
        dtype = dtypes.get(name) or _dtype_name(a)
        if dtype not in DTYPES:
            raise ValueError("tensor %r: unknown dtype %r" % (name, dtype))
        if check_finite and dtype in _FLOAT_DTYPES:
            bad = _first_not_finite(a)
            if bad is not None:
                raise ValueError("tensor %r: element %s is %s; fedplane refuses models that are not finite"
                                 % (name, list(bad[0]), bad[1]))
        if dtype == "BF16":
            if a.dtype.kind != "f":
                raise ValueError("tensor %r: BF16 needs a float array, got %s" % (name, a.dtype))
            raw = _to_bf16(a).tobytes()
        else:
            if a.dtype.newbyteorder("<") != DTYPES[dtype].newbyteorder("<"):
                raise ValueError("tensor %r: array is %s, not %s; convert it first" % (name, a.dtype, dtype))
            raw = np.ascontiguousarray(a, dtype=DTYPES[dtype]).tobytes()
        header[name] = {"dtype": dtype, "shape": [int(d) for d in a.shape],
                        "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
        chunks.append(raw)
    if metadata:
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
            raise ValueError("metadata must map strings to strings")
        header[_METADATA] = {k: metadata[k] for k in sorted(metadata)}
    # Keys sorted, each tensor's fields in the order dtype, shape,
    # data_offsets: the bytes fedplane's writer produces for the same tensors.
    header = {k: header[k] for k in sorted(header)}
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-len(text) % 8)
    if len(text) > MAX_HEADER_SIZE:
        raise ValueError("header of %d bytes exceeds the limit of %d" % (len(text), MAX_HEADER_SIZE))
    _write_atomic(path, [struct.pack("<Q", len(text)), text] + chunks)


def _write_atomic(path, parts):
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            for p in parts:
                f.write(p)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


# --- metrics ---------------------------------------------------------------------


def _check_metric(name, value):
    if not isinstance(name, str) or name == "":
        raise ValueError("metric name %r: want a non-empty string" % (name,))
    if len(name.encode("utf-8")) > MAX_NAME_LEN:
        raise ValueError("metric %r: name is %d bytes long, at most %d allowed"
                         % (name[:40], len(name.encode("utf-8")), MAX_NAME_LEN))
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError("metric %r: value %r is not a number" % (name, value))
    v = float(value)
    if not math.isfinite(v) or abs(v) > _MAX_FLOAT32:
        raise ValueError("metric %r: value %r is not a finite number that fits a float32" % (name, value))
    if name == SAMPLES_METRIC and (v < 1 or v > _MAX_INT32 or v != math.trunc(v)):
        raise ValueError("metric %s is %r: want a whole number from 1 to %d" % (SAMPLES_METRIC, value, _MAX_INT32))
    return int(v) if isinstance(value, (int, np.integer)) else v


def read_metrics(path):
    """The metrics in the file at path, {name: value} in file order ({} if none)."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        return {}
    out = {}
    for i, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            obj = None
        if not isinstance(obj, dict) or "name" not in obj or "value" not in obj:
            raise ValueError('metrics %s line %d: want a JSON object like {"name": "loss", "value": 0.5}' % (path, i))
        if obj["name"] in out:
            raise ValueError("metrics %s line %d: metric %r repeats" % (path, i, obj["name"]))
        out[obj["name"]] = obj["value"]
    return out


def write_metrics(path, metrics):
    """Append metrics ({name: value} or (name, value) pairs) to the metrics file.

    Each becomes one line, {"name": "accuracy", "value": 0.91}. Names must be
    unique in the file and at most MAX_NAME_LEN bytes, values finite numbers
    that fit a float32 (the envoy sends float32), and n_samples, the FedAvg
    weight, a whole number from 1 to 2**31-1. Nothing is written if any
    metric is refused.
    """
    pairs = list(metrics.items()) if isinstance(metrics, dict) else list(metrics)
    seen = set(read_metrics(path))
    lines = []
    for name, value in pairs:
        v = _check_metric(name, value)
        if name in seen:
            raise ValueError("metric %r is already in %s" % (name, path))
        seen.add(name)
        lines.append(json.dumps({"name": name, "value": v}, ensure_ascii=False) + "\n")
    with open(path, "a", encoding="utf-8") as f:
        f.writelines(lines)

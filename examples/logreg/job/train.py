#!/usr/bin/env python3
"""One round of federated logistic regression at one site (fedplane's training command).

The envoy runs this once per round, in the unpacked job folder, with the
training command contract in the environment:

  FEDPLANE_INPUT_MODEL   safetensors file of the round's global model (read)
  FEDPLANE_OUTPUT_MODEL  where to write the locally trained model
  FEDPLANE_METRICS       file to append metrics to, one JSON object a line
  FEDPLANE_DATA          the site's shard: train.csv and val.csv
  FEDPLANE_ROUND, FEDPLANE_ENVOY, FEDPLANE_EXPERIMENT   for the progress line

The model is two float32 tensors, `weight` [dim] and `bias` [1]. A round:

  1. evaluates the INPUT (global) model on val.csv and reports `accuracy`
     and `val_loss`: a round's metrics describe the model the round started
     from, so the best round is the best global model (OpenFL's convention);
  2. trains from it with mini-batch SGD on train.csv;
  3. writes the trained model and reports `train_loss` (after training) and
     `n_samples` (the training rows, the FedAvg weight of this site).

Python 3 standard library only; the job folder is self-contained.
"""

import csv
import json
import math
import os
import random
import struct
import sys

#: Local training per round. Kept small on purpose so that the federation
#: needs several rounds to converge, which is what the demo shows.
EPOCHS = 1
LEARNING_RATE = 0.1
BATCH_SIZE = 32


class InputError(Exception):
    """Bad input: a missing variable, an unreadable model or data file."""


# --- safetensors -----------------------------------------------------------
#
# A safetensors file is an 8-byte little-endian header length N, N bytes of
# JSON ({"name": {"dtype": "F32", "shape": [...], "data_offsets": [begin, end]}},
# plus an optional "__metadata__"), then the raw little-endian tensor data.


def is_int_list(v):
    """Whether v is a JSON list of non-negative integers."""
    return isinstance(v, list) and all(isinstance(a, int) and not isinstance(a, bool) and a >= 0 for a in v)


def read_safetensors(path):
    """Read a safetensors file of F32 tensors: {name: (shape, [float, ...])}."""
    try:
        with open(path, "rb") as f:
            blob = f.read()
    except OSError as e:
        raise InputError("cannot read model %s: %s" % (path, e.strerror))
    if len(blob) < 8:
        raise InputError("model %s: too short for a safetensors file" % path)
    (n,) = struct.unpack("<Q", blob[:8])
    if 8 + n > len(blob):
        raise InputError("model %s: header length %d is beyond the end of the file" % (path, n))
    try:
        header = json.loads(blob[8 : 8 + n].decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise InputError("model %s: bad header JSON: %s" % (path, e))
    if not isinstance(header, dict):
        raise InputError("model %s: header is not a JSON object" % path)
    data = blob[8 + n :]
    tensors = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(entry, dict):
            raise InputError("model %s: tensor %r: entry is not an object" % (path, name))
        if entry.get("dtype") != "F32":
            raise InputError("model %s: tensor %r is %s, want F32" % (path, name, entry.get("dtype")))
        shape, offsets = entry.get("shape"), entry.get("data_offsets")
        if not is_int_list(shape) or not is_int_list(offsets) or len(offsets) != 2:
            raise InputError("model %s: tensor %r: bad shape %s or data_offsets %s" % (path, name, shape, offsets))
        begin, end = offsets
        count = math.prod(shape)
        if not 0 <= begin <= end <= len(data) or end - begin != 4 * count:
            raise InputError("model %s: tensor %r: shape %s does not fit data_offsets %s of %d data bytes"
                             % (path, name, shape, offsets, len(data)))
        tensors[name] = (shape, list(struct.unpack("<%df" % count, data[begin:end])))
    return tensors


def write_safetensors(path, tensors):
    """Write {name: (shape, [float, ...])} as F32 safetensors, tensors sorted by name.

    The header is padded with spaces to a multiple of 8 bytes so that the data
    is aligned. The file is written under a temporary name and then renamed.
    """
    header, offset, chunks = {}, 0, []
    for name in sorted(tensors):
        shape, values = tensors[name]
        raw = struct.pack("<%df" % len(values), *values)
        header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
        chunks.append(raw)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for raw in chunks:
            f.write(raw)
    os.replace(tmp, path)


# --- data and model ----------------------------------------------------------


def read_csv(path):
    """Read a CSV with header x0,...,x<d-1>,y: ([[float]*d], [0|1])."""
    try:
        with open(path, newline="") as f:
            rows = list(csv.reader(f))
    except OSError as e:
        raise InputError("cannot read data %s: %s" % (path, e.strerror))
    if len(rows) < 2 or rows[0][-1] != "y":
        raise InputError("data %s: want a header x0,...,y and at least one row" % path)
    xs, ys = [], []
    for i, row in enumerate(rows[1:], start=2):
        try:
            x, y = [float(v) for v in row[:-1]], int(row[-1])
        except ValueError:
            raise InputError("data %s line %d: not numbers: %s" % (path, i, ",".join(row)))
        if len(x) != len(rows[0]) - 1 or y not in (0, 1):
            raise InputError("data %s line %d: want %d numbers and a 0/1 label" % (path, i, len(rows[0]) - 1))
        xs.append(x)
        ys.append(y)
    return xs, ys


def unpack_model(tensors, dim):
    """The (weight, bias) of a model read by read_safetensors, checked against dim."""
    if set(tensors) != {"weight", "bias"}:
        raise InputError("model has tensors %s, want bias and weight" % sorted(tensors))
    (wshape, w), (bshape, b) = tensors["weight"], tensors["bias"]
    if wshape != [dim] or bshape != [1]:
        raise InputError("model shapes weight %s and bias %s, want [%d] and [1] for this data"
                         % (wshape, bshape, dim))
    return w, b[0]


def sigmoid(z):
    """The logistic function, without overflow for large |z|."""
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


def predict(w, b, x):
    """P(y = 1 | x)."""
    return sigmoid(sum(wi * xi for wi, xi in zip(w, x)) + b)


def evaluate(w, b, xs, ys):
    """(accuracy, mean log loss) of the model on (xs, ys); p >= 0.5 predicts 1."""
    eps = 1e-12
    correct, loss = 0, 0.0
    for x, y in zip(xs, ys):
        p = predict(w, b, x)
        correct += (p >= 0.5) == (y == 1)
        loss -= math.log(max(p, eps)) if y else math.log(max(1.0 - p, eps))
    return correct / len(ys), loss / len(ys)


def sgd(w, b, xs, ys, rng, epochs=EPOCHS, lr=LEARNING_RATE, batch=BATCH_SIZE):
    """Mini-batch SGD on the log loss from (w, b); returns the new (w, b)."""
    w = list(w)
    order = list(range(len(ys)))
    for _ in range(epochs):
        rng.shuffle(order)
        for start in range(0, len(order), batch):
            idx = order[start : start + batch]
            gw, gb = [0.0] * len(w), 0.0
            for i in idx:
                err = predict(w, b, xs[i]) - ys[i]
                gb += err
                for j, xij in enumerate(xs[i]):
                    gw[j] += err * xij
            step = lr / len(idx)
            w = [wj - step * gj for wj, gj in zip(w, gw)]
            b -= step * gb
    return w, b


# --- the training command ------------------------------------------------------


def env(name):
    """A required environment variable of the training command contract."""
    v = os.environ.get(name, "")
    if not v:
        raise InputError("%s is not set: run me from a fedplane envoy or set it by hand" % name)
    return v


def append_metrics(path, metrics):
    """Append {"name", "value"} lines to the metrics file."""
    with open(path, "a") as f:
        for name, value in metrics:
            f.write(json.dumps({"name": name, "value": value}) + "\n")


def main():
    data = env("FEDPLANE_DATA")
    input_model, output_model = env("FEDPLANE_INPUT_MODEL"), env("FEDPLANE_OUTPUT_MODEL")
    metrics = env("FEDPLANE_METRICS")
    rnd = os.environ.get("FEDPLANE_ROUND", "0")
    site = os.environ.get("FEDPLANE_ENVOY", "local")

    train_x, train_y = read_csv(os.path.join(data, "train.csv"))
    val_x, val_y = read_csv(os.path.join(data, "val.csv"))
    dim = len(train_x[0])
    if len(val_x[0]) != dim:
        raise InputError("train.csv has %d features, val.csv %d" % (dim, len(val_x[0])))
    w, b = unpack_model(read_safetensors(input_model), dim)

    # Metrics of the global model this round starts from.
    acc, val_loss = evaluate(w, b, val_x, val_y)

    # Seed from the site and round: reruns are reproducible, sites differ.
    rng = random.Random("%s/%s/%s" % (os.environ.get("FEDPLANE_EXPERIMENT", ""), site, rnd))
    w, b = sgd(w, b, train_x, train_y, rng)
    _, train_loss = evaluate(w, b, train_x, train_y)

    write_safetensors(output_model, {"weight": ([dim], w), "bias": ([1], [b])})
    append_metrics(metrics, [
        ("accuracy", acc),
        ("val_loss", val_loss),
        ("train_loss", train_loss),
        ("n_samples", len(train_y)),
    ])
    print("round %s %s: global model accuracy %.3f val_loss %.4f; trained on %d rows, train_loss %.4f"
          % (rnd, site, acc, val_loss, len(train_y), train_loss))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except InputError as e:
        print("train.py: %s" % e, file=sys.stderr)
        sys.exit(2)

"""A training command for fedplane's end-to-end tests (Python 3 standard library only).

It follows the training-command contract: it reads FEDPLANE_INPUT_MODEL (safetensors),
adds the site's constant (the number in $FEDPLANE_DATA/constant) to every float32
value, writes FEDPLANE_OUTPUT_MODEL, and reports metrics to FEDPLANE_METRICS.

argv[1] picks a behaviour: ok, slow (ok after 1.5 s, leaving a mark in
$FEDPLANE_DATA/training while it works), fail (exit 3 with a message on stderr), sleep
(write its pid to $FEDPLANE_DATA/train.pid and sleep forever), garbage (write a broken model),
talk (ok, after printing a loss line to stdout and the shard's path to stderr).
"""
import json
import os
import struct
import sys
import time


def read_safetensors(path):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        data = f.read()
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        count = (end - begin) // 4
        tensors[name] = (info["shape"], list(struct.unpack("<%df" % count, data[begin:end])))
    return tensors


def write_safetensors(path, tensors):
    header, offset, blobs = {}, 0, []
    for name in sorted(tensors):
        shape, values = tensors[name]
        blob = struct.pack("<%df" % len(values), *values)
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + len(blob)]}
        offset += len(blob)
        blobs.append(blob)
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for blob in blobs:
            f.write(blob)


def main():
    mode = sys.argv[1] if len(sys.argv) > 1 else "ok"
    data = os.environ["FEDPLANE_DATA"]
    if mode == "fail":
        print("loading shard from " + data, file=sys.stderr)
        print("RuntimeError: the shard is corrupt at row 17", file=sys.stderr)
        sys.exit(3)
    if mode == "sleep":
        with open(os.path.join(data, "train.pid"), "w") as f:
            f.write(str(os.getpid()))
        while True:
            time.sleep(1)
    if mode == "slow":
        mark = os.path.join(data, "training")
        with open(mark, "w") as f:
            f.write(os.environ["FEDPLANE_ROUND"])
        time.sleep(1.5)
        try:
            os.remove(mark)
        except FileNotFoundError:
            pass
    if mode == "talk":
        print("round %s: epoch 1 loss 0.25" % os.environ["FEDPLANE_ROUND"], flush=True)
        print("reading " + os.path.join(data, "constant"), file=sys.stderr, flush=True)
    if mode == "garbage":
        with open(os.environ["FEDPLANE_OUTPUT_MODEL"], "wb") as f:
            f.write(b"not a model")
        return
    with open(os.path.join(data, "constant")) as f:
        constant = float(f.read())
    with open(os.path.join(data, "samples")) as f:
        samples = int(f.read())
    model = read_safetensors(os.environ["FEDPLANE_INPUT_MODEL"])
    out = {name: (shape, [v + constant for v in values]) for name, (shape, values) in model.items()}
    write_safetensors(os.environ["FEDPLANE_OUTPUT_MODEL"], out)
    with open(os.environ["FEDPLANE_METRICS"], "w") as f:
        f.write(json.dumps({"name": "n_samples", "value": samples}) + "\n")
        f.write(json.dumps({"name": "constant", "value": constant}) + "\n")
        f.write(json.dumps({"name": "round", "value": int(os.environ["FEDPLANE_ROUND"])}) + "\n")


if __name__ == "__main__":
    main()

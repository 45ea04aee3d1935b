#!/usr/bin/env python3
"""Write the initial global model of the logistic regression job: all zeros.

    python3 examples/logreg/make_model.py [--dim 8] [--out examples/logreg/job/model.safetensors]

The model is two float32 tensors, `weight` [dim] and `bias` [1], in the
safetensors format: an 8-byte little-endian header length N, N bytes of JSON
padded with spaces to a multiple of 8, then the little-endian float32 data.
The output is committed as job/model.safetensors; rerun this only to change
the dimension (and then make the shards with the same --dim).
"""

import argparse
import os
import sys

# The job folder must be self-contained, so the safetensors code lives in
# train.py; reuse it from there rather than writing it twice.
sys.dont_write_bytecode = True  # no __pycache__ in the job folder
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "job"))
from train import write_safetensors  # noqa: E402


def main(argv):
    default_out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "job", "model.safetensors")
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dim", type=int, default=8, help="number of features (default 8)")
    p.add_argument("--out", default=default_out, help="output file (default job/model.safetensors)")
    args = p.parse_args(argv)
    if args.dim < 1:
        p.error("--dim must be at least 1")
    write_safetensors(args.out, {"weight": ([args.dim], [0.0] * args.dim), "bias": ([1], [0.0])})
    print("wrote %s: weight [%d], bias [1], all zeros" % (args.out, args.dim))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

#!/usr/bin/env python3
"""Write the initial global model of the digits job: job/train.py's Net, freshly initialised.

    python3 examples/digits/make_model.py [--seed 0] [--out examples/digits/job/model.safetensors]

PyTorch's default initialisation with torch.manual_seed(seed), stored as
float32 safetensors under the state_dict names. The output is committed as
job/model.safetensors, so every run starts from the same weights whatever
the torch release; rerun this only after changing Net. compare.py starts the
central baseline from the same file.
"""

import argparse
import os
import sys

# The network lives in the job folder, which must be self-contained; import it
# from there rather than define it twice.
sys.dont_write_bytecode = True  # no __pycache__ in the job folder: it would be submitted
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "job"))
import torch  # noqa: E402
from fedplane_train import write_safetensors  # noqa: E402
from train import Net, to_tensors  # noqa: E402


def main(argv):
    default_out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "job", "model.safetensors")
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seed", type=int, default=0, help="torch seed of the initialisation (default 0)")
    p.add_argument("--out", default=default_out, help="output file (default job/model.safetensors)")
    args = p.parse_args(argv)
    torch.manual_seed(args.seed)
    tensors = to_tensors(Net())
    write_safetensors(args.out, tensors)
    print("wrote %s: %s" % (args.out, ", ".join("%s %s" % (k, list(v.shape)) for k, v in sorted(tensors.items()))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

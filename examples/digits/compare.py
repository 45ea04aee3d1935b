#!/usr/bin/env python3
"""Score the federated digits model against the same network trained centrally.

    python3 examples/digits/compare.py --shards DIR --results RESULTS/<job id> [--json FILE]

DIR is what make_shards.py wrote; RESULTS/<job id> what `fladmin download-job`
wrote for the digits job. The script

  * reads the final federated model, RESULTS/<id>/models/last.safetensors,
    and the number of rounds R from RESULTS/<id>/job.json;
  * trains job/train.py's Net centrally, on all the sites' training images
    pooled, from the job's initial model (job/model.safetensors) for
    R x EPOCHS epochs with the same optimizer and batch size, and the
    seed --seed: the training budget each site spent in the federation, but
    on all the data at once;
  * for reference trains the same way on each site's images alone (what a
    site gets without federating);
  * scores every model on the held-out test split (DIR/test.npz), which no
    site saw, and prints a table.

With --json FILE it also writes {"federated": acc, "central": acc,
"sites": {"site-1": acc, ...}, "rounds": R, "test_images": n} to FILE.
Needs torch and numpy.
"""

import argparse
import glob
import json
import os
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the job folder: it would be submitted
JOB_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "job")
sys.path.insert(0, JOB_DIR)
import torch  # noqa: E402
from fedplane_train import read_safetensors  # noqa: E402
from train import EPOCHS, InputError, evaluate, from_tensors, load_npz, train  # noqa: E402


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--shards", required=True, help="the folder make_shards.py wrote (site-*/, test.npz)")
    p.add_argument("--results", required=True, help="the job's folder written by fladmin download-job")
    p.add_argument("--initial", default=os.path.join(JOB_DIR, "model.safetensors"),
                   help="the job's initial model (default job/model.safetensors)")
    p.add_argument("--seed", type=int, default=0, help="seed of the batch order of the central training (default 0)")
    p.add_argument("--json", help="also write the accuracies to this file as JSON")
    return p.parse_args(argv)


def job_rounds(results):
    """The rounds of the downloaded job, from its job.json."""
    path = os.path.join(results, "job.json")
    try:
        with open(path) as f:
            rounds = json.load(f).get("rounds")
    except (OSError, ValueError) as e:
        raise InputError("cannot read %s: %s" % (path, e))
    if not isinstance(rounds, int) or isinstance(rounds, bool) or rounds < 1:
        raise InputError("%s: rounds is %r, want a whole number of at least 1" % (path, rounds))
    return rounds


def trained(initial, x, y, epochs, seed):
    """A Net from the initial weights, trained on (x, y) for epochs epochs."""
    net = from_tensors(initial)
    train(net, x, y, epochs, seed)
    return net


def main(argv):
    args = parse_args(argv)
    torch.set_num_threads(1)  # small enough; and the same threads as the envoys
    rounds = job_rounds(args.results)
    epochs = rounds * EPOCHS
    federated = from_tensors(read_safetensors(os.path.join(args.results, "models", "last.safetensors")))
    initial = read_safetensors(args.initial)
    test_x, test_y = load_npz(os.path.join(args.shards, "test.npz"))

    site_dirs = sorted(glob.glob(os.path.join(args.shards, "site-*")), key=lambda d: int(d.rsplit("-", 1)[1]))
    if not site_dirs:
        raise InputError("%s holds no site-* folders: run make_shards.py" % args.shards)
    shards = {os.path.basename(d): load_npz(os.path.join(d, "train.npz")) for d in site_dirs}
    all_x = torch.cat([x for x, _ in shards.values()])
    all_y = torch.cat([y for _, y in shards.values()])

    rows = [("federated", "FedAvg over %d sites, %d rounds x %d epoch(s) each" % (len(shards), rounds, EPOCHS),
             evaluate(federated, test_x, test_y)[0])]
    central = trained(initial, all_x, all_y, epochs, args.seed)
    rows.append(("central", "all %d training images pooled, %d epochs" % (len(all_y), epochs),
                 evaluate(central, test_x, test_y)[0]))
    sites = {}
    for name, (x, y) in shards.items():
        sites[name] = evaluate(trained(initial, x, y, epochs, args.seed), test_x, test_y)[0]
        rows.append((name + " alone", "its own %d images only, %d epochs" % (len(y), epochs), sites[name]))

    print("accuracy on the %d held-out test images (no site saw them):" % len(test_y))
    for name, how, acc in rows:
        print("  %-14s %.4f   %s" % (name, acc, how))
    print("federation costs %.4f accuracy against central training"
          % (rows[1][2] - rows[0][2]))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"federated": rows[0][2], "central": rows[1][2], "sites": sites,
                       "rounds": rounds, "test_images": len(test_y)}, f, indent=1)
            f.write("\n")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except (InputError, ValueError, OSError) as e:
        print("compare.py: %s" % e, file=sys.stderr)
        sys.exit(1)

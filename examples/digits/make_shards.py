#!/usr/bin/env python3
"""Split scikit-learn's handwritten digits across sites, non-IID, with a held-out test split.

    python3 examples/digits/make_shards.py --out DIR [--sites 3] [--seed 0]

The data is sklearn.datasets.load_digits: 1,797 grey 8x8 images of the digits
0 to 9 (UCI "optical recognition of handwritten digits"), pixels 0 to 16,
about 180 of each digit. It ships inside scikit-learn, so nothing is
downloaded.

1. A stratified test split of 20% (360 images) is held out with the seed and
   written to DIR/test.npz. No site sees it; compare.py scores every model on
   it.
2. The other 1,437 images are dealt to the sites by label, not at random:
   each digit has an owner site (with 3 sites: 0-3 site-1, 4-6 site-2, 7-9
   site-3), which gets OWNER_SHARE (80%) of that digit's images; the rest are
   shared evenly among the other sites. So each site sees mostly its own
   digits and only a few of the others, the label skew that makes
   federated averaging harder than training on pooled data.
3. Each site keeps VAL_FRACTION (15%) of its images as its own validation
   set, on which train.py reports the global model's accuracy every round.

For every site i (1-based) the script writes

  DIR/site-<i>/train.npz   x float32 [n, 64] (pixels / 16), y int64 [n]
  DIR/site-<i>/val.npz     the same for the site's validation images
  DIR/site-<i>/samples     the number of training images (what `envoy --samples` wants)
  DIR/test.npz             the held-out test split, same layout

and a line per site with its digit counts. The output depends only on the
arguments. Needs numpy and scikit-learn (Debian: python3-sklearn).
"""

import argparse
import os
import sys

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

#: Share of the held-out test split, stratified by digit.
TEST_FRACTION = 0.2

#: Share of a digit's training images that go to the site owning the digit.
OWNER_SHARE = 0.8

#: Share of a site's images kept for its own validation.
VAL_FRACTION = 0.15

#: The digits' pixel values run from 0 to this; the shards hold pixels / 16.
MAX_PIXEL = 16.0

NUM_CLASSES = 10


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="output folder; site-<i>/ folders and test.npz are created in it")
    p.add_argument("--sites", type=int, default=3, help="number of sites, 2 to 10 (default 3)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the test split and the deal (default 0)")
    args = p.parse_args(argv)
    if not 2 <= args.sites <= NUM_CLASSES:
        p.error("--sites must be from 2 to %d, got %d" % (NUM_CLASSES, args.sites))
    return args


def owner(digit, sites):
    """The site (0-based) owning digit: the digits in contiguous blocks, the first sites one larger."""
    return min(digit * sites // NUM_CLASSES, sites - 1)


def deal(y, sites, rng):
    """Indices into y for each site: OWNER_SHARE of each digit to its owner, the rest spread evenly."""
    parts = [[] for _ in range(sites)]
    for digit in range(NUM_CLASSES):
        idx = rng.permutation(np.flatnonzero(y == digit))
        own = owner(digit, sites)
        n_own = int(round(OWNER_SHARE * len(idx)))
        parts[own].extend(idx[:n_own])
        others = [s for s in range(sites) if s != own]
        for k, chunk in enumerate(np.array_split(idx[n_own:], len(others))):
            parts[others[k]].extend(chunk)
    return [rng.permutation(np.array(p, dtype=np.int64)) for p in parts]


def save(path, x, y):
    np.savez(path, x=x.astype(np.float32), y=y.astype(np.int64))


def main(argv):
    args = parse_args(argv)
    digits = load_digits()
    x = (digits.data / MAX_PIXEL).astype(np.float32)
    y = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=TEST_FRACTION, random_state=args.seed, stratify=y)
    os.makedirs(args.out, exist_ok=True)
    save(os.path.join(args.out, "test.npz"), x_test, y_test)
    print("%s: %d held-out test images" % (os.path.join(args.out, "test.npz"), len(y_test)))

    rng = np.random.default_rng(args.seed)
    for i, idx in enumerate(deal(y_train, args.sites, rng)):
        n_val = int(round(VAL_FRACTION * len(idx)))
        val, train = idx[:n_val], idx[n_val:]
        d = os.path.join(args.out, "site-%d" % (i + 1))
        os.makedirs(d, exist_ok=True)
        save(os.path.join(d, "train.npz"), x_train[train], y_train[train])
        save(os.path.join(d, "val.npz"), x_train[val], y_train[val])
        with open(os.path.join(d, "samples"), "w") as f:
            f.write("%d\n" % len(train))
        counts = np.bincount(y_train[idx], minlength=NUM_CLASSES)
        print("%s: %d train + %d val images; per digit 0-9: %s"
              % (d, len(train), len(val), " ".join(str(c) for c in counts)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

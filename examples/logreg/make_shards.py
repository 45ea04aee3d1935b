#!/usr/bin/env python3
"""Make non-identically distributed data shards for the logistic regression example.

Every site draws from the same labelling rule, one true weight vector w* and
bias b*: a point x gets the label 1 when w*.x + b* plus a little Gaussian noise
is positive. The sites differ the way real sites do:

  * covariate shift: each site's features are centred on its own mean;
  * label shift: each site has its own share of positives (30%, 50%, 70%, ...);
  * size: each site has its own number of samples.

Like raw measurements, the features are not standardised: they share an
offset from zero and come in scales from 0.3 to 3, and the label depends most
on the small-scale ones. Plain SGD on such features learns slowly, so the
federation visibly improves round after round instead of in one step.

For every site i (1-based) the script writes

  DIR/site-<i>/train.csv   80% of the rows, header x0,...,x<dim-1>,y
  DIR/site-<i>/val.csv     the other 20%
  DIR/site-<i>/samples     the number of training rows (what `envoy --samples` wants)

The output depends only on the arguments: the same seed gives the same files.
Python 3 standard library only.
"""

import argparse
import csv
import math
import os
import random
import sys

#: Standard deviation of the noise added to w*.x + b* before thresholding;
#: it makes a few labels "wrong", so no model is perfect.
LABEL_NOISE = 0.5

#: Length (in units of standard deviations) of the offset all sites share,
#: and of each site's own mean shift on top of it.
COMMON_OFFSET = 3.0
SITE_SHIFT = 2.0

#: The features' scales run evenly on a log scale between these two.
MIN_SCALE, MAX_SCALE = 0.3, 3.0

#: Fraction of a site's rows that go to train.csv.
TRAIN_FRACTION = 0.8


def parse_args(argv):
    """Parse the command line; sizes must give one positive count per site."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sites", type=int, default=3, help="number of sites (default 3)")
    p.add_argument("--out", required=True, help="output folder; site-<i>/ folders are created in it")
    p.add_argument("--seed", type=int, default=7, help="random seed (default 7)")
    p.add_argument("--dim", type=int, default=8, help="number of features (default 8)")
    p.add_argument(
        "--samples",
        default="",
        help="comma-separated row counts per site, train+val (default 600,900,1200,... )",
    )
    args = p.parse_args(argv)
    if args.sites < 1:
        p.error("--sites must be at least 1")
    if args.dim < 1:
        p.error("--dim must be at least 1")
    if args.samples:
        try:
            sizes = [int(s) for s in args.samples.split(",")]
        except ValueError:
            p.error("--samples must be comma-separated whole numbers, got %r" % args.samples)
        if len(sizes) != args.sites:
            p.error("--samples lists %d sizes for %d sites" % (len(sizes), args.sites))
    else:
        sizes = [600 + 300 * i for i in range(args.sites)]
    if any(n < 10 for n in sizes):
        p.error("every site needs at least 10 samples")
    args.sizes = sizes
    return args


def positive_rate(site, sites):
    """The share of positives at a site: 30% at the first, 70% at the last, evenly between."""
    if sites == 1:
        return 0.5
    return 0.3 + 0.4 * site / (sites - 1)


def unit_vector(rng, dim):
    """A random direction in dim dimensions."""
    v = [rng.gauss(0.0, 1.0) for _ in range(dim)]
    norm = math.sqrt(sum(a * a for a in v)) or 1.0
    return [a / norm for a in v]


def scales(dim):
    """Each feature's scale: MIN_SCALE for x0 up to MAX_SCALE for the last."""
    if dim == 1:
        return [1.0]
    return [MIN_SCALE * (MAX_SCALE / MIN_SCALE) ** (j / (dim - 1)) for j in range(dim)]


class Federation:
    """What the sites share: the feature scales, the common offset and the labelling rule.

    Points are drawn as z ~ N(offset + site shift, I) in standard units and
    scaled to x = scale * z. The rule is v.(z - offset) + b0 > 0 with |v| = 2,
    v weighting a feature by 1/scale; in x's units that is w* = v / scale and
    b* = b0 - v.offset.
    """

    def __init__(self, rng, dim):
        self.scale = scales(dim)
        self.offset = [COMMON_OFFSET * a for a in unit_vector(rng, dim)]
        v = [u / s for u, s in zip(unit_vector(rng, dim), self.scale)]
        norm = math.sqrt(sum(a * a for a in v))
        v = [2.0 * a / norm for a in v]
        self.w = [a / s for a, s in zip(v, self.scale)]
        self.b = rng.uniform(-0.5, 0.5) - sum(a * o for a, o in zip(v, self.offset))

    def site_rows(self, rng, shift, n, pos_rate):
        """Draw n labelled rows of a site, exactly round(n*pos_rate) of them positive.

        Points are drawn around the site's mean and labelled by the shared
        rule; a point whose class is already full is dropped (rejection
        sampling), so the class balance is the site's own.
        """
        mean = [o + s for o, s in zip(self.offset, shift)]
        want = {1: round(n * pos_rate)}
        want[0] = n - want[1]
        rows = []
        while want[0] or want[1]:
            x = [s * rng.gauss(m, 1.0) for m, s in zip(mean, self.scale)]
            score = sum(wi * xi for wi, xi in zip(self.w, x)) + self.b + rng.gauss(0.0, LABEL_NOISE)
            y = 1 if score > 0 else 0
            if want[y]:
                want[y] -= 1
                rows.append(x + [y])
        rng.shuffle(rows)
        return rows


def write_csv(path, rows, dim):
    """Write rows with the header x0,...,x<dim-1>,y."""
    with open(path, "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["x%d" % i for i in range(dim)] + ["y"])
        for r in rows:
            out.writerow(["%.6f" % v for v in r[:-1]] + [r[-1]])


def main(argv):
    args = parse_args(argv)
    rng = random.Random(args.seed)
    fed = Federation(rng, args.dim)
    for i, n in enumerate(args.sizes):
        shift = [SITE_SHIFT * a for a in unit_vector(rng, args.dim)]
        rate = positive_rate(i, args.sites)
        rows = fed.site_rows(rng, shift, n, rate)
        n_train = int(round(n * TRAIN_FRACTION))
        d = os.path.join(args.out, "site-%d" % (i + 1))
        os.makedirs(d, exist_ok=True)
        write_csv(os.path.join(d, "train.csv"), rows[:n_train], args.dim)
        write_csv(os.path.join(d, "val.csv"), rows[n_train:], args.dim)
        with open(os.path.join(d, "samples"), "w") as f:
            f.write("%d\n" % n_train)
        print("%s: %d train + %d val rows, %.0f%% positive" % (d, n_train, n - n_train, 100 * rate))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""numpy doing what fedbench's aggregate figure times tensor.Aggregate doing.

Reads one JSON argument: {"agg": {name, eta, momentum, beta_1, beta_2, tau,
trim}, "model": path, "inputs": [paths], "weights": [...], "state": path or
null, "step": t, "reps": n}. For each rep it reads every tensor of the model,
the inputs (and the state) from the safetensors files in slabs, does the
aggregator's math with numpy, and drops the result, as the Go side writes to
io.Discard. Prints {"seconds": the best (shortest) rep, as fedbench reports
for Go and the floor, "peak_rss_kib": VmHWM}:
the high-water mark of this process's own memory (getrusage's ru_maxrss
would count the parent's pages, which a child shares until it execs).
"""
import json
import struct
import sys
import time

import numpy as np

SLAB = 1 << 20  # elements per read: the arrays stay a few MB, as Go's chunks


def header(path):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        h = json.loads(f.read(n))
    h.pop("__metadata__", None)
    start = 8 + n
    return {k: (start + v["data_offsets"][0], v["shape"]) for k, v in h.items()}


def read(f, off, count):
    f.seek(off)
    return np.fromfile(f, dtype="<f4", count=count)


def run(cfg):
    a = cfg["agg"]
    name = a["name"]
    model = header(cfg["model"])
    inputs = [header(p) for p in cfg["inputs"]]
    files = [open(p, "rb") for p in cfg["inputs"]]
    mf = open(cfg["model"], "rb")
    state = header(cfg["state"]) if cfg.get("state") else None
    sf = open(cfg["state"], "rb") if state else None
    w = np.array(cfg["weights"], dtype=np.float64)
    w32 = (w / w.sum()).astype(np.float32)
    n = len(files)
    t = float(cfg["step"])
    eta = a.get("eta", 0.0)
    b1, b2, tau = a.get("beta_1", 0.0), a.get("beta_2", 0.0), a.get("tau", 0.0)
    k = next(iter(state.values()))[1][1] if state else 0  # state shape [elements, k]
    sink = 0.0
    for tname, (moff, shape) in model.items():
        count = int(np.prod(shape)) if shape else 1
        for done in range(0, count, SLAB):
            m = min(SLAB, count - done)
            x = read(mf, moff + 4 * done, m)
            X = np.stack([read(f, h[tname][0] + 4 * done, m) for f, h in zip(files, inputs)])
            if name == "median":
                out = np.median(X, axis=0)
            elif name == "trimmed_mean":
                cut = int(np.floor(a["trim"] * n))
                out = np.sort(X, axis=0)[cut:n - cut].mean(axis=0)
            else:
                delta = w32 @ X - x
                if name == "fedavg":
                    out = x + delta
                else:
                    S = read(sf, state[tname][0] + 4 * k * done, k * m).reshape(m, k)
                    if name == "fedavgm":
                        v = a["momentum"] * S[:, 0] + delta
                        out = x + eta * v
                    elif name == "fedadagrad":
                        v = S[:, -1] + delta * delta
                        mm = b1 * S[:, 0] + (1 - b1) * delta if k == 2 else delta
                        out = x + eta * mm / (np.sqrt(v) + tau)
                    elif name == "fedadam":
                        mm = b1 * S[:, 0] + (1 - b1) * delta
                        v = b2 * S[:, 1] + (1 - b2) * delta * delta
                        eta_t = eta * np.sqrt(1 - b2 ** t) / (1 - b1 ** t)
                        out = x + eta_t * mm / (np.sqrt(v) + tau)
                    elif name == "fedyogi":
                        mm = b1 * S[:, 0] + (1 - b1) * delta
                        d2 = delta * delta
                        v = S[:, 1] - (1 - b2) * d2 * np.sign(S[:, 1] - d2)
                        out = x + eta * mm / (np.sqrt(v) + tau)
                    else:
                        raise SystemExit("unknown aggregator " + name)
            sink += float(out[0])
    return sink


def main():
    cfg = json.loads(sys.argv[1])
    took = []
    for _ in range(cfg["reps"]):
        t0 = time.perf_counter()
        run(cfg)
        took.append(time.perf_counter() - t0)
    with open("/proc/self/status") as f:
        hwm = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    print(json.dumps({"seconds": min(took), "peak_rss_kib": hwm}))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""One round of a small PyTorch network on handwritten digits at one site (fedplane's training command).

The envoy runs this once per round, in the unpacked job folder, with the
training command contract (docs/training.md) in the environment; the
FEDPLANE_DATA folder is a shard made by make_shards.py: train.npz and
val.npz, each x float32 [n, 64] (8x8 pixels scaled to 0..1) and y int64 [n].

The model is Net below, a multilayer perceptron 64 -> HIDDEN -> 10, stored in
safetensors under its PyTorch state_dict names (fc1.weight, fc1.bias,
fc2.weight, fc2.bias), all float32. A round:

  1. evaluates the INPUT (global) model on val.npz and reports `accuracy` and
     `val_loss`: a round's metrics describe the model the round started from,
     so the best round is the best global model (OpenFL's convention);
  2. trains from it for EPOCHS epochs of mini-batch SGD with momentum on
     train.npz, with a fresh optimizer (FedAvg averages weights only);
  3. writes the trained model and reports `train_loss` (the mean loss of the
     last epoch) and `n_samples` (the training images, this site's FedAvg
     weight).

Needs torch (Debian: python3-torch) and numpy. fedplane_train.py is a copy of
python/fedplane_train/__init__.py (a test keeps it identical), so the job
folder carries everything it imports besides torch and numpy.

compare.py and make_model.py import Net, train and evaluate from here, so the
central baseline is the very same network and training loop.
"""

import os
import sys
import zlib

sys.dont_write_bytecode = True  # the job folder may be read-only (envoy --sandbox)

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from fedplane_train import Round, read_safetensors, write_metrics, write_safetensors  # noqa: E402

#: Local training per round, and the optimizer. The central baseline in
#: compare.py trains rounds x EPOCHS epochs with the same settings.
EPOCHS = 1
LEARNING_RATE = 0.05
MOMENTUM = 0.9
BATCH_SIZE = 32

#: Width of the hidden layer.
HIDDEN = 32

NUM_PIXELS = 64
NUM_CLASSES = 10


class InputError(Exception):
    """Bad input: an unreadable shard or a model that does not fit Net."""


class Net(nn.Module):
    """64 pixels -> HIDDEN ReLU units -> 10 digit logits."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(NUM_PIXELS, HIDDEN)
        self.fc2 = nn.Linear(HIDDEN, NUM_CLASSES)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


def load_npz(path):
    """(x float32 [n, 64], y int64 [n]) of a shard file, as torch tensors, checked."""
    try:
        with np.load(path, allow_pickle=False) as f:
            x, y = f["x"], f["y"]
    except (OSError, KeyError, ValueError) as e:
        raise InputError("cannot read %s: %s" % (path, e))
    if x.ndim != 2 or x.shape[1] != NUM_PIXELS or y.shape != (x.shape[0],) or len(y) == 0:
        raise InputError("%s: want x [n, %d] and y [n] with n > 0, got x %s and y %s"
                         % (path, NUM_PIXELS, list(x.shape), list(y.shape)))
    if y.min() < 0 or y.max() >= NUM_CLASSES:
        raise InputError("%s: labels must be 0 to %d" % (path, NUM_CLASSES - 1))
    return torch.from_numpy(x.astype(np.float32)), torch.from_numpy(y.astype(np.int64))


def to_tensors(net):
    """The network's weights as {name: float32 numpy array}, for write_safetensors."""
    return {k: v.detach().cpu().numpy().astype(np.float32) for k, v in net.state_dict().items()}


def from_tensors(tensors):
    """A Net holding the weights read by read_safetensors; InputError if they do not fit it."""
    net = Net()
    try:
        net.load_state_dict({k: torch.from_numpy(v) for k, v in tensors.items()})
    except RuntimeError as e:  # missing, unexpected or mis-shaped tensors
        raise InputError("the model does not fit this network: %s" % e)
    return net


def evaluate(net, x, y):
    """(accuracy, mean cross-entropy) of net on (x, y)."""
    net.eval()
    with torch.no_grad():
        logits = net(x)
        loss = nn.functional.cross_entropy(logits, y).item()
        acc = (logits.argmax(dim=1) == y).float().mean().item()
    return acc, loss


def train(net, x, y, epochs, seed):
    """Train net in place by mini-batch SGD with momentum; returns the last epoch's mean loss.

    seed fixes the order of the batches, so a rerun gives the same model.
    """
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(net.parameters(), lr=LEARNING_RATE, momentum=MOMENTUM)
    net.train()
    loss_sum = 0.0
    for _ in range(epochs):
        loss_sum = 0.0
        order = torch.randperm(len(y), generator=gen)
        for start in range(0, len(y), BATCH_SIZE):
            idx = order[start:start + BATCH_SIZE]
            opt.zero_grad()
            loss = nn.functional.cross_entropy(net(x[idx]), y[idx])
            loss.backward()
            opt.step()
            loss_sum += loss.item() * len(idx)
    return loss_sum / len(y)


def main():
    torch.set_num_threads(1)  # the network is tiny; several envoys may share a machine
    r = Round.from_environ()
    train_x, train_y = load_npz(os.path.join(r.data, "train.npz"))
    val_x, val_y = load_npz(os.path.join(r.data, "val.npz"))
    model = read_safetensors(r.input_model)
    net = from_tensors(model)

    # Metrics of the global model this round starts from.
    acc, val_loss = evaluate(net, val_x, val_y)

    # Seeded by site and round, not by the job's id: every run of the job
    # gives the same models (and the README's figures), and sites differ.
    seed = zlib.crc32(("%s/%d" % (r.envoy, r.round)).encode())
    train_loss = train(net, train_x, train_y, EPOCHS, seed)

    write_safetensors(r.output_model, to_tensors(net), like=model)
    write_metrics(r.metrics, {
        "accuracy": acc,
        "val_loss": val_loss,
        "train_loss": train_loss,
        "n_samples": len(train_y),
    })
    print("round %d %s: global model accuracy %.3f val_loss %.4f; trained on %d images, train_loss %.4f"
          % (r.round, r.envoy, acc, val_loss, len(train_y), train_loss))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (InputError, ValueError) as e:
        print("train.py: %s" % e, file=sys.stderr)
        sys.exit(2)

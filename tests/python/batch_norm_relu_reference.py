"""PyTorch reference for the fused batch norm + ReLU (tests/test_batch_norm_relu.cpp).

usage: batch_norm_relu_reference.py IN_BUNDLE OUT_BUNDLE

IN_BUNDLE holds x1, x2, g1 (N, C, H, W), weight, bias (C) and momentum (a one-element float64;
negative for None, the cumulative average). Two training steps of nn.BatchNorm2d followed by
ReLU: step 1 on x1 back-propagates g1; step 2 on x2 only updates the running statistics.
OUT_BUNDLE: y1, dx1, dweight, dbias from step 1, y2, and the running statistics after step 2.
"""
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

import bundle


def main(in_dir, out_dir):
    t = bundle.load(in_dir)
    channels = t["x1"].shape[1]
    momentum = float(t["momentum"].item())
    bn = nn.BatchNorm2d(channels, momentum=None if momentum < 0 else momentum)
    bn.train()
    with torch.no_grad():
        bn.weight.copy_(t["weight"])
        bn.bias.copy_(t["bias"])
    x1 = t["x1"].clone().requires_grad_(True)
    y1 = F.relu(bn(x1))
    y1.backward(t["g1"])
    y2 = F.relu(bn(t["x2"]))
    bundle.save(out_dir, {
        "y1": y1, "dx1": x1.grad, "dweight": bn.weight.grad, "dbias": bn.bias.grad, "y2": y2,
        "running_mean": bn.running_mean, "running_var": bn.running_var,
        "num_batches_tracked": bn.num_batches_tracked.reshape(1),
    })


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])

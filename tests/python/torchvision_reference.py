"""Facts about torchvision's DenseNets for the C++ tests (python3-torchvision 0.14).

  keys <arch> <out.json>            state-dict keys with shapes, and the parameter count
  macs <arch> <size> <out.json>     forward MACs of every conv and linear layer for one
                                    3 x size x size image, and each features stage's output shape
"""
import json
import sys

import torch
import torchvision


def build(arch):
    return getattr(torchvision.models, arch)(weights=None)


def keys(arch, out):
    model = build(arch)
    state = model.state_dict()
    result = {
        "keys": {k: list(v.shape) for k, v in state.items()},
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    with open(out, "w") as f:
        json.dump(result, f)


def macs(arch, size, out):
    model = build(arch).eval()
    total = [0]

    def conv_hook(module, inputs, output):
        k = module.kernel_size[0] * module.kernel_size[1]
        total[0] += output.numel() * (module.in_channels // module.groups) * k

    def linear_hook(module, inputs, output):
        total[0] += output.numel() * module.in_features

    x = torch.zeros(1, 3, size, size)
    shapes = {}
    with torch.no_grad():
        y = x
        for name, stage in model.features.named_children():
            y = stage(y)
            shapes[name] = list(y.shape)
    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d):
            m.register_forward_hook(conv_hook)
        elif isinstance(m, torch.nn.Linear):
            m.register_forward_hook(linear_hook)
    with torch.no_grad():
        model(x)
    with open(out, "w") as f:
        json.dump({"macs": total[0], "shapes": shapes}, f)


if __name__ == "__main__":
    torch.manual_seed(0)
    command = sys.argv[1]
    if command == "keys":
        keys(sys.argv[2], sys.argv[3])
    elif command == "macs":
        macs(sys.argv[2], int(sys.argv[3]), sys.argv[4])
    else:
        sys.exit("unknown command " + command)

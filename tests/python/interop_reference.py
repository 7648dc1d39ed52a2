"""Reference models and logits for the interoperability tests (python3-torch, torchvision 0.14).

  make torchvision <arch> <dir>     seeded random torchvision <arch> (weights and BN statistics),
                                    saved with torch.save(model.state_dict()), plus the input and
                                    its eval-mode and train-mode logits (a tensor bundle)
  make reference <dir>              the same for the reference SE-DenseNet (reference_sedensenet.py)
  logits torchvision <arch> <weights> <dir>   load <weights> strictly, eval logits of <dir>'s input
  logits reference <weights> <dir>
  logits twin <weights> <dir>       python/sedensenet.py (REFERENCE_SHAPE below)
"""
import os
import sys

import torch
import torchvision

import bundle
import reference_sedensenet

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "python"))
import sedensenet  # noqa: E402

REFERENCE_SHAPE = dict(growth_rate=32, block_config=(2, 2, 2), num_init_features=64,
                       num_classes=7)


def randomize(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (0.5 if p.dim() > 1 else 0.2)
                    / max(1.0, (p[0].numel() if p.dim() > 1 else 1) ** 0.5))
            if "norm" in name and name.endswith("weight"):
                p.add_(1.0)
        for name, b in model.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(torch.randn(b.shape, generator=g) * 0.1)
            elif name.endswith("running_var"):
                b.copy_(torch.rand(b.shape, generator=g) + 0.5)


def build(kind, arch=None):
    if kind == "torchvision":
        return getattr(torchvision.models, arch)(weights=None)
    if kind == "reference":
        return reference_sedensenet.DenseNet(**REFERENCE_SHAPE)
    return sedensenet.DenseNet(**REFERENCE_SHAPE)


def make(kind, arch, folder):
    os.makedirs(folder, exist_ok=True)
    torch.manual_seed(0)
    model = build(kind, arch)
    randomize(model, 1)
    torch.save(model.state_dict(), os.path.join(folder, "weights.pth"))
    size = 32 if kind != "torchvision" else 64
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(2))
    model.eval()
    with torch.no_grad():
        eval_logits = model(x)
        model.train()
        train_logits = model(x)
    bundle.save(os.path.join(folder, "expected"),
                {"x": x, "eval": eval_logits, "train": train_logits})


def logits(kind, arch, weights, folder):
    model = build(kind, arch)
    # Our files hold tensors only: they load with weights_only=True (PyTorch 2.6+ default).
    model.load_state_dict(torch.load(weights, weights_only=True))  # strict
    model.eval()
    x = bundle.load(os.path.join(folder, "expected"))["x"]
    with torch.no_grad():
        out = model(x)
    bundle.save(os.path.join(folder, "python_" + kind), {"eval": out})


if __name__ == "__main__":
    torch.set_num_threads(2)
    command, kind = sys.argv[1], sys.argv[2]
    if command == "make":
        if kind == "torchvision":
            make(kind, sys.argv[3], sys.argv[4])
        else:
            make(kind, None, sys.argv[3])
    elif command == "logits":
        if kind == "torchvision":
            logits(kind, sys.argv[3], sys.argv[4], sys.argv[5])
        else:
            logits(kind, None, sys.argv[3], sys.argv[4])
    else:
        sys.exit("unknown command")

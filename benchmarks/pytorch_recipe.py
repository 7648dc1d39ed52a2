"""The recommended recipe in plain PyTorch, for docs/results.md: the same model (python/sedensenet.py,
built from the same options), the same pipeline (Resize, random horizontal flip, ToTensor,
ImageNet Normalize), AdamW without weight decay on BatchNorm parameters and biases, one epoch of
linear warm-up from lr / 100 then cosine to min_lr, updated every batch (as
include/sedensenet/train/schedule.hpp), label smoothing, gradient clipping, torchvision's
DataLoader. Trains on <data>/train, evaluates on <data>/test (or val) after every epoch and prints
one CSV row per epoch: epoch, train loss, train accuracy, test loss, test accuracy, seconds.

  /usr/bin/python3 benchmarks/pytorch_recipe.py --data data/fashion-mnist --stem-stride 2 \
      --growth-rate 16 --num-init-features 32 --block-config 6,6 --epochs 8
"""
import argparse
import math
import os
import sys
import time

import torch
import torch.nn.functional as F
import torchvision
import torchvision.transforms as T

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
from sedensenet import DenseNet, preset  # noqa: E402

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--data", required=True, help="folder with train/ and test/ (or val/)")
parser.add_argument("--preset", default=None, help="a preset name (python/sedensenet.py)")
parser.add_argument("--growth-rate", type=int)
parser.add_argument("--block-config", type=lambda s: tuple(int(v) for v in s.split(",")))
parser.add_argument("--num-init-features", type=int)
parser.add_argument("--stem-stride", type=int)
parser.add_argument("--image-size", type=int, default=28)
parser.add_argument("--epochs", type=int, default=8)
parser.add_argument("--batch", type=int, default=64)
parser.add_argument("--lr", type=float, default=2e-3)
parser.add_argument("--min-lr", type=float, default=1e-5)
parser.add_argument("--warmup-epochs", type=float, default=1.0)
parser.add_argument("--weight-decay", type=float, default=0.05)
parser.add_argument("--label-smoothing", type=float, default=0.1)
parser.add_argument("--grad-clip", type=float, default=5.0)
parser.add_argument("--workers", type=int, default=2)
parser.add_argument("--threads", type=int, default=2)
parser.add_argument("--seed", type=int, default=0)
args = parser.parse_args()

torch.set_num_threads(args.threads)
torch.manual_seed(args.seed)
normalize = T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
resize = T.Resize((args.image_size, args.image_size))
train_set = torchvision.datasets.ImageFolder(
    os.path.join(args.data, "train"),
    transform=T.Compose([resize, T.RandomHorizontalFlip(), T.ToTensor(), normalize]))
test_dir = os.path.join(args.data, "test")
if not os.path.isdir(test_dir):
    test_dir = os.path.join(args.data, "val")
test_set = torchvision.datasets.ImageFolder(test_dir,
                                            transform=T.Compose([resize, T.ToTensor(), normalize]))
train_loader = torch.utils.data.DataLoader(train_set, batch_size=args.batch, shuffle=True,
                                           num_workers=args.workers)
test_loader = torch.utils.data.DataLoader(test_set, batch_size=256, num_workers=args.workers)

shape = preset(args.preset) if args.preset else {}
for key in ("growth_rate", "block_config", "num_init_features", "stem_stride"):
    if getattr(args, key) is not None:
        shape[key] = getattr(args, key)
model = DenseNet(**shape, num_classes=len(train_set.classes))
decay = [p for p in model.parameters() if p.dim() > 1]
no_decay = [p for p in model.parameters() if p.dim() <= 1]
optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                               {"params": no_decay, "weight_decay": 0.0}], lr=args.lr)
batches = len(train_loader)


def learning_rate(progress):
    if progress < args.warmup_epochs:
        start = args.lr / 100.0
        return start + (args.lr - start) * progress / args.warmup_epochs
    t = min(max((progress - args.warmup_epochs) / max(args.epochs - args.warmup_epochs, 1e-12),
                0.0), 1.0)
    return args.min_lr + (args.lr - args.min_lr) * 0.5 * (1.0 + math.cos(math.pi * t))


print("epoch,train_loss,train_accuracy,test_loss,test_accuracy,seconds", flush=True)
for epoch in range(args.epochs):
    start = time.perf_counter()
    model.train()
    loss_sum, correct, seen = 0.0, 0, 0
    for i, (images, labels) in enumerate(train_loader):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(epoch + i / batches)
        optimizer.zero_grad()
        logits = model(images)
        loss = F.cross_entropy(logits, labels, label_smoothing=args.label_smoothing)
        loss.backward()
        if args.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
        optimizer.step()
        loss_sum += loss.item() * images.shape[0]
        correct += (logits.argmax(1) == labels).sum().item()
        seen += images.shape[0]
    model.eval()
    test_loss, test_correct, test_seen = 0.0, 0, 0
    with torch.no_grad():
        for images, labels in test_loader:
            logits = model(images)
            test_loss += F.cross_entropy(logits, labels, reduction="sum").item()
            test_correct += (logits.argmax(1) == labels).sum().item()
            test_seen += images.shape[0]
    print("%d,%.4f,%.4f,%.4f,%.4f,%.1f" % (epoch + 1, loss_sum / seen, correct / seen,
                                           test_loss / test_seen, test_correct / test_seen,
                                           time.perf_counter() - start), flush=True)

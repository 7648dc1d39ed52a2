"""The PyTorch side of benchmarks/training_throughput: the same model (python/sedensenet.py), the
same images (the first N of torchvision's ImageFolder order), the same pipeline (Resize, random
horizontal flip, ToTensor, Normalize), the recommended recipe's ingredients (AdamW, label
smoothing, gradient clipping), torchvision's DataLoader with worker processes. Prints images/s
over the batches after warm-up."""
import argparse
import os
import sys
import time

import torch
import torch.nn.functional as F
import torchvision
import torchvision.transforms as T

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
from sedensenet import DenseNet, preset  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("--data", required=True)
parser.add_argument("--preset", default="densenet_bc_22_k12")
parser.add_argument("--image-size", type=int, default=28)
parser.add_argument("--batch", type=int, default=64)
parser.add_argument("--images", type=int, default=6400)
parser.add_argument("--warmup-batches", type=int, default=10)
parser.add_argument("--workers", type=int, default=2)
parser.add_argument("--threads", type=int, default=2)
args = parser.parse_args()

torch.set_num_threads(args.threads)
torch.manual_seed(0)
transform = T.Compose([T.Resize((args.image_size, args.image_size)), T.RandomHorizontalFlip(),
                       T.ToTensor(), T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
dataset = torchvision.datasets.ImageFolder(args.data, transform=transform)
total = args.images + args.warmup_batches * args.batch
dataset = torch.utils.data.Subset(dataset, range(total))
loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch, shuffle=True,
                                     num_workers=args.workers)
model = DenseNet(**preset(args.preset), num_classes=10)
model.train()
optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.05)
timed, start = 0, None
for i, (images, labels) in enumerate(loader):
    if i == args.warmup_batches:
        start = time.perf_counter()
    optimizer.zero_grad()
    loss = F.cross_entropy(model(images), labels, label_smoothing=0.1)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
    optimizer.step()
    if i >= args.warmup_batches:
        timed += images.shape[0]
print("%.1f" % (timed / (time.perf_counter() - start)))

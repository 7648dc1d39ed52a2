"""The torchvision side of benchmarks/loader_throughput: ImageFolder + DataLoader with PIL and
Resize -> RandomHorizontalFlip -> ToTensor -> Normalize; whole batches for --seconds (over as many
epochs as that takes), printed as "RESULT images/s"."""
import argparse
import time

import torch
import torchvision
import torchvision.transforms as T


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", required=True)
    parser.add_argument("--size", type=int, required=True)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=4.0)
    args = parser.parse_args()
    torch.manual_seed(0)
    transform = T.Compose([T.Resize(args.size), T.RandomHorizontalFlip(), T.ToTensor(),
                           T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    dataset = torchvision.datasets.ImageFolder(args.data, transform=transform)
    loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch, shuffle=True,
                                         num_workers=args.workers)
    start = time.perf_counter()
    seen = 0
    while time.perf_counter() - start < args.seconds:
        for images, _ in loader:
            seen += images.shape[0]
            if time.perf_counter() - start >= args.seconds:
                break
    print("RESULT %.1f" % (seen / (time.perf_counter() - start)), flush=True)


if __name__ == "__main__":
    main()

"""The torchvision side of benchmarks/loader_throughput: ImageFolder + DataLoader with PIL and
Resize -> RandomHorizontalFlip -> ToTensor -> Normalize, images/s over the first N images."""
import argparse
import time

import torch
import torchvision
import torchvision.transforms as T


def measure(folder, size, workers, batch, images):
    transform = T.Compose([T.Resize(size), T.RandomHorizontalFlip(), T.ToTensor(),
                           T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    dataset = torchvision.datasets.ImageFolder(folder, transform=transform)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch, shuffle=True,
                                         num_workers=workers)
    start = time.perf_counter()
    seen = 0
    for images_batch, _ in loader:
        seen += images_batch.shape[0]
        if seen >= images:
            break
    return seen / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", required=True)
    parser.add_argument("--sizes", default="224,32")
    parser.add_argument("--workers", default="0,2")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--images", type=int, default=10000)
    parser.add_argument("--csv", required=True)
    args = parser.parse_args()
    torch.manual_seed(0)
    with open(args.csv, "w") as out:
        out.write("impl,size,workers,images_per_s\n")
        for size in map(int, args.sizes.split(",")):
            for workers in map(int, args.workers.split(",")):
                rate = measure(args.data, size, workers, args.batch, args.images)
                print("  torchvision  resize %3d  workers %d  %8.0f images/s"
                      % (size, workers, rate), flush=True)
                out.write("torchvision,%d,%d,%.1f\n" % (size, workers, rate))


if __name__ == "__main__":
    main()

"""The torchvision side of benchmarks/loader_throughput: ImageFolder + DataLoader with PIL and
Resize -> RandomHorizontalFlip -> ToTensor -> Normalize; whole batches for --seconds (over as many
epochs as that takes), printed as "RESULT images/s". With --ops: milliseconds per image of PIL's
decoding (open + convert("RGB"), as ImageFolder's loader, from bytes in memory) and of torchvision's Resize alone, over
the first 100 images (best of 5 passes), printed as "RESULT decode resize"."""
import argparse
import io
import time

import torch
import torchvision
import torchvision.transforms as T


def ops(folder, size):
    from PIL import Image

    dataset = torchvision.datasets.ImageFolder(folder)
    paths = [path for path, _ in dataset.samples[:100]]
    resize = T.Resize(size)

    def best_ms(work):
        best = float("inf")
        for _ in range(5):
            start = time.perf_counter()
            for i in range(len(paths)):
                work(i)
            best = min(best, time.perf_counter() - start)
        return best * 1000 / len(paths)

    files = []
    for path in paths:
        with open(path, "rb") as f:
            files.append(f.read())
    decoded = [None] * len(paths)

    def decode(i):  # from memory, as the C++ side
        decoded[i] = Image.open(io.BytesIO(files[i])).convert("RGB")

    decode_ms = best_ms(decode)
    resize_ms = best_ms(lambda i: resize(decoded[i]))
    print("RESULT %.4f %.4f" % (decode_ms, resize_ms), flush=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", required=True)
    parser.add_argument("--size", type=int, required=True)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--ops", action="store_true")
    args = parser.parse_args()
    if args.ops:
        ops(args.data, args.size)
        return
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

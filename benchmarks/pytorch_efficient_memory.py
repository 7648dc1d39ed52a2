"""The PyTorch side of benchmarks/efficient_memory: the same training steps on the same model
(python/sedensenet.py, the library's Python twin, SE on, r = 16), standard and with
torch.utils.checkpoint on each layer's bottleneck as the original efficient_densenet_pytorch does.

Memory on the CPU is measured with SEDenseNet's own CPU tensor counter, loaded into this process
from the memory probe library (the C++ benchmark passes --probe), so both sides use one method. On
CUDA both sides read the caching allocator's statistics (allocated and reserved peaks).

  python3 pytorch_efficient_memory.py --configs densenet_bc:100:64:32,densenet121:121:8:224 \
      --threads 2 --warmup 1 --steps 5 --probe build/benchmarks/libsedensenet_memory_probe.so \
      --csv out.csv

With --child MODE (standard or checkpoint), it measures the first configuration in that mode only
and prints one line, "RESULT tensor_peak_mb step_s rss_growth_mb reserved_mb", as
`efficient_memory --child` does: memory_modes runs both in fresh processes side by side. RSS growth
is the peak resident set over what the process held before the model was built (torch loaded).
"""
import argparse
import ctypes
import os
import resource
import statistics
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
from sedensenet import DenseNet, preset  # noqa: E402


def measure(model_name, depth, batch, size, efficient, warmup, steps, probe, device, bf16):
    torch.manual_seed(0)
    name = "densenet121" if model_name == "densenet121" else "densenet_bc_%d" % depth
    model = DenseNet(**preset(name), num_classes=10, efficient=efficient).to(device)
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    images = torch.randn(batch, 3, size, size, device=device)
    labels = torch.randint(0, 10, (batch,), device=device)
    cuda = device.type == "cuda"

    def step():
        optimizer.zero_grad()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            logits = model(images)
        loss = F.cross_entropy(logits.float(), labels)
        loss.backward()
        optimizer.step()
        if cuda:
            torch.cuda.synchronize()

    if cuda:
        torch.cuda.empty_cache()

    for _ in range(warmup):
        step()
    times, peak, reserved = [], 0, 0
    for _ in range(steps):
        if cuda:
            torch.cuda.reset_peak_memory_stats(device)
        else:
            probe.sedensenet_probe_restart_peak()
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
        if cuda:
            peak = max(peak, torch.cuda.max_memory_allocated(device))
            reserved = max(reserved, torch.cuda.max_memory_reserved(device))
        else:
            peak = max(peak, probe.sedensenet_probe_peak())
            reserved = peak
    del model, optimizer
    return peak / 1e6, reserved / 1e6, statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", required=True,
                        help="comma-separated model:depth:batch:size")
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--probe", required=True, help="path of libsedensenet_memory_probe.so")
    parser.add_argument("--csv", required=True)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--bf16", action="store_true", help="bfloat16 autocast")
    parser.add_argument("--child", choices=("standard", "checkpoint"),
                        help="measure the first configuration in this mode only; print RESULT")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    probe = None
    if device.type == "cpu":
        probe = ctypes.CDLL(args.probe)
        probe.sedensenet_probe_peak.restype = ctypes.c_int64
        probe.sedensenet_probe_current.restype = ctypes.c_int64
        probe.sedensenet_probe_install()
    precision = "bf16" if args.bf16 else "fp32"

    if args.child:
        def max_rss_mb():
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux
        rss_before = max_rss_mb()
        model, depth, batch, size = args.configs.split(",")[0].split(":")
        peak, reserved, step = measure(model, int(depth), int(batch), int(size),
                                       args.child == "checkpoint", args.warmup, args.steps, probe,
                                       device, args.bf16)
        print("RESULT %.1f %.4f %.1f %.1f" % (peak, step, max_rss_mb() - rss_before, reserved))
        return

    with open(args.csv, "w") as out:
        out.write("impl,model,depth,batch,size,device,precision,mode,peak_mb,reserved_mb,step_s,img_per_s\n")
        for spec in args.configs.split(","):
            model, depth, batch, size = spec.split(":")
            depth, batch, size = int(depth), int(batch), int(size)
            for mode, efficient in (("standard", False), ("checkpoint", True)):
                peak, reserved, step = measure(model, depth, batch, size, efficient, args.warmup,
                                               args.steps, probe, device, args.bf16)
                print("  pytorch %-12s depth %3d batch %3d %3dpx %s %-11s peak %8.1f MB  step %.3f s"
                      % (model, depth, batch, size, precision, mode, peak, step), flush=True)
                out.write("pytorch,%s,%d,%d,%d,%s,%s,%s,%.2f,%.2f,%.4f,%.2f\n"
                          % (model, depth, batch, size, device, precision, mode, peak, reserved,
                             step, batch / step))


if __name__ == "__main__":
    main()

"""The Python side of benchmarks/inference_latency: one method measured in this (fresh) process.

  --method eager   python/sedensenet.py's DenseNet with the state dict SEDenseNet saved, eval
                   mode, torch.no_grad (torch.inference_mode)
  --method jit     SEDenseNet's TorchScript export, torch.jit.optimize_for_inference
  --method ort     SEDenseNet's ONNX export in ONNX Runtime (CPU), all graph optimisations

Prints "RESULT median_ms images_per_s peak_rss_mb" as the C++ workers do.
"""
import argparse
import os
import resource
import sys
import time


def time_and_report(step, batch, seconds):
    warm_until = time.perf_counter() + 0.5
    i = 0
    while i < 3 or time.perf_counter() < warm_until:
        step()
        i += 1
    ms = []
    until = time.perf_counter() + seconds
    while len(ms) < 5 or time.perf_counter() < until:
        t0 = time.perf_counter()
        step()
        ms.append(1000 * (time.perf_counter() - t0))
    ms.sort()
    median = ms[len(ms) // 2]
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux
    print(f"RESULT {median:.4f} {1000 * batch / median:.2f} {rss:.1f}")


def main():
    p = argparse.ArgumentParser()
    for name in ("--method", "--file", "--preset"):
        p.add_argument(name, required=True)
    for name in ("--classes", "--size", "--batch", "--threads"):
        p.add_argument(name, type=int, required=True)
    p.add_argument("--seconds", type=float, default=2.0)
    a = p.parse_args()

    if a.method == "ort":
        import numpy as np
        import onnxruntime
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = a.threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        session = onnxruntime.InferenceSession(a.file, options, providers=["CPUExecutionProvider"])
        x = np.random.default_rng(0).standard_normal((a.batch, 3, a.size, a.size), dtype=np.float32)
        time_and_report(lambda: session.run(["logits"], {"images": x}), a.batch, a.seconds)
        return

    import torch
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    x = torch.randn(a.batch, 3, a.size, a.size)
    if a.method == "eager":
        sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
        from sedensenet import DenseNet, preset
        model = DenseNet(**preset(a.preset), num_classes=a.classes)
        model.load_state_dict(torch.load(a.file))
        model.eval()
    elif a.method == "jit":
        model = torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.load(a.file).eval()))
    else:
        raise SystemExit(f"unknown --method {a.method}")
    with torch.inference_mode():
        time_and_report(lambda: model(x), a.batch, a.seconds)


if __name__ == "__main__":
    main()

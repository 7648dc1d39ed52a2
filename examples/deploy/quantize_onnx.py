"""Post-training int8 quantization of an exported SEDenseNet model with ONNX Runtime's quantizer,
calibrated on a folder of images; optionally, the float and int8 models compared on a labelled
folder (top-1 and speed).

    sedensenet export runs/my-run/best.pt model.onnx
    python3 quantize_onnx.py model.onnx model.int8.onnx --calibrate photos/ [--images 256]
                             [--evaluate photos_test/ [--per-class N]] [--threads 2]

Needs: pip install onnxruntime onnx numpy pillow. The calibration folder is any folder of images
(searched recursively); the evaluation folder has one sub-folder per class, named as the classes
the model records. Static quantization, QDQ format: weights int8 per channel, activations uint8
(the calibrated range of each tensor).
"""
import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np
import onnxruntime
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from onnxruntime_predict import preprocess  # noqa: E402  (the model's own preprocessing)

EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tga", ".ppm", ".pgm", ".webp"}


def image_files(folder):
    found = []
    for root, _, names in os.walk(folder):
        found += [os.path.join(root, n) for n in names if os.path.splitext(n)[1].lower() in EXTENSIONS]
    return sorted(found)


def metadata(path):
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    return json.loads(session.get_modelmeta().custom_metadata_map["sedensenet"])


class FolderReader(CalibrationDataReader):
    """Calibration batches from image files, preprocessed as the model was trained."""

    def __init__(self, files, spec, batch=16):
        self.batches = [files[i:i + batch] for i in range(0, len(files), batch)]
        self.spec = spec

    def get_next(self):
        if not self.batches:
            return None
        return {"images": np.stack([preprocess(f, self.spec) for f in self.batches.pop(0)])}


def session(path, threads):
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def evaluate(paths, folder, meta, threads, per_class=0):
    classes = meta["classes"]
    files, labels = [], []
    for label, name in enumerate(classes):
        found = image_files(os.path.join(folder, name))
        for f in found[:per_class] if per_class > 0 else found:
            files.append(f)
            labels.append(label)
    if not files:
        raise SystemExit(f"{folder}: no images in sub-folders named as the model's classes {classes}")
    x = np.stack([preprocess(f, meta["input"]) for f in files])
    labels = np.array(labels)
    sessions = {name: session(p, threads) for name, p in paths.items()}
    predictions = {}
    for name, s in sessions.items():
        predictions[name] = np.concatenate([s.run(["logits"], {"images": x[i:i + 64]})[0].argmax(1)
                                            for i in range(0, len(x), 64)])
    timings = {name: {} for name in sessions}
    for batch in (1, 32):
        xb = x[:batch] if len(x) >= batch else np.repeat(x[:1], batch, 0)
        for round in range(3):  # alternating, medians
            for name in (list(sessions) if round % 2 == 0 else list(sessions)[::-1]):
                s = sessions[name]
                for _ in range(3):
                    s.run(["logits"], {"images": xb})
                ms = []
                until = time.perf_counter() + 1.0
                while len(ms) < 5 or time.perf_counter() < until:
                    t0 = time.perf_counter()
                    s.run(["logits"], {"images": xb})
                    ms.append(1000 * (time.perf_counter() - t0))
                timings[name].setdefault(batch, []).append(float(np.median(ms)))
    print(f"{len(files)} images of {folder}, {threads} threads")
    print(f"{'model':<8} {'top-1':>8} {'ms @1':>8} {'ms @32':>8}")
    for name in sessions:
        top1 = 100 * float((predictions[name] == labels).mean())
        print(f"{name:<8} {top1:>7.2f}% {np.median(timings[name][1]):>8.2f} {np.median(timings[name][32]):>8.1f}")
    agree = 100 * float((predictions["float"] == predictions["int8"]).mean())
    print(f"int8 agrees with float on {agree:.2f}% of the images; speed-up "
          f"{np.median(timings['float'][1]) / np.median(timings['int8'][1]):.2f}x at batch 1, "
          f"{np.median(timings['float'][32]) / np.median(timings['int8'][32]):.2f}x at batch 32")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model")
    p.add_argument("output")
    p.add_argument("--calibrate", required=True, help="folder of images for the activation ranges")
    p.add_argument("--images", type=int, default=256, help="calibration images (evenly spread)")
    p.add_argument("--evaluate", help="labelled folder: compare float and int8")
    p.add_argument("--per-class", type=int, default=0, help="evaluate at most this many images per class")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--overwrite", action="store_true")
    a = p.parse_args()
    if os.path.exists(a.output) and not a.overwrite:
        raise SystemExit(f"{a.output} already exists; choose another name or add --overwrite")
    meta = metadata(a.model)
    files = image_files(a.calibrate)
    if not files:
        raise SystemExit(f"{a.calibrate}: no image files")
    step = max(1, len(files) // a.images)
    files = files[::step][:a.images]
    with tempfile.TemporaryDirectory() as tmp:
        prepared = os.path.join(tmp, "prepared.onnx")
        quant_pre_process(a.model, prepared)
        quantize_static(prepared, a.output, FolderReader(files, meta["input"]),
                        quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    print(f"wrote {a.output} (int8, calibrated on {len(files)} images of {a.calibrate})")
    if a.evaluate:
        evaluate({"float": a.model, "int8": a.output}, a.evaluate, meta, a.threads, a.per_class)


if __name__ == "__main__":
    main()

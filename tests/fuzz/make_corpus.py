#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets (tests/fuzz/corpus/<target>/), small valid inputs
that libFuzzer mutates. Run with Debian's python3 (python3-torch, python3-pil):

    /usr/bin/python3 tests/fuzz/make_corpus.py

Image seeds start with one byte that seeds the random transforms (see targets.hpp)."""
import io
import json
import os

import numpy as np
import torch
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))


def write(target, name, data):
    folder = os.path.join(HERE, "corpus", target)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, name), "wb") as f:
        f.write(data)


def images():
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (7, 9, 3), dtype=np.uint8), "RGB")
    grey = Image.fromarray(rng.integers(0, 256, (6, 5), dtype=np.uint8), "L")
    rgba = Image.fromarray(rng.integers(0, 256, (5, 6, 4), dtype=np.uint8), "RGBA")
    grey16 = Image.fromarray(rng.integers(0, 65536, (4, 4), dtype=np.uint16).astype(np.int32), "I")
    y, x = np.mgrid[0:40, 0:56]
    smooth = np.stack([x * 4, y * 6, (x + y) % 32 * 8], -1) + rng.normal(0, 10, (40, 56, 3))
    photo = Image.fromarray(np.clip(smooth, 0, 255).astype(np.uint8), "RGB")
    cases = [
        ("rgb.png", rgb, "PNG", {}),
        ("grey.png", grey, "PNG", {}),
        ("rgba.png", rgba, "PNG", {}),
        ("grey16.png", grey16, "PNG", {}),
        ("palette.gif", rgb.convert("P"), "GIF", {}),
        ("rgb.bmp", rgb, "BMP", {}),
        ("rgb.ppm", rgb, "PPM", {}),
        ("grey.pgm", grey, "PPM", {}),
        ("rgb.jpg", rgb, "JPEG", {"quality": 80}),
        ("rgb.tga", rgb, "TGA", {}),
        # libjpeg-turbo's variants; the first two seeds have the top bit set, which asks for
        # decode-time downscaling (1/4 and 1/2 of this 56x40 image).
        ("progressive.jpg", photo, "JPEG", {"quality": 80, "progressive": True}),
        ("q90_422.jpg", photo, "JPEG", {"quality": 90, "subsampling": 1}),
        ("grey.jpg", photo.convert("L"), "JPEG", {"quality": 85}),
        ("cmyk.jpg", photo.convert("CMYK"), "JPEG", {"quality": 85}),
    ]
    for seed, (name, image, fmt, kwargs) in enumerate(cases):
        buffer = io.BytesIO()
        image.save(buffer, fmt, **kwargs)
        write("image", name, bytes([seed * 23 % 256]) + buffer.getvalue())


def state_dicts():
    torch.manual_seed(0)

    def saved(obj):
        buffer = io.BytesIO()
        torch.save(obj, buffer)
        return buffer.getvalue()

    write("state_dict", "plain.pt", saved({
        "features.conv0.weight": torch.randn(2, 3, 1, 1),
        "features.norm0.running_mean": torch.zeros(2),
        "features.norm0.num_batches_tracked": torch.tensor(3),
        "classifier.bias": torch.randn(3)}))
    write("state_dict", "checkpoint.pt", saved({
        "epoch": 3, "state_dict": {"classifier.weight": torch.randn(3, 4).t()}}))
    write("state_dict", "legacy_names.pt", saved({
        "features.denseblock1.denselayer1.norm.1.weight": torch.ones(2, dtype=torch.float64),
        "features.norm_final.bias": torch.zeros(1, dtype=torch.float16)}))
    shared = torch.arange(12.0)
    write("state_dict", "views.pt", saved({"a": shared[2:8].view(2, 3), "b": shared[::3]}))


def configs():
    write("config", "trainer.json", json.dumps({"trainer": {
        "epochs": 3, "batch_size": 16, "optimizer": "sgd", "lr": 0.1, "momentum": 0.9,
        "scheduler": "cosine", "warmup_epochs": 1, "label_smoothing": 0.1}}).encode())
    write("config", "model.json", json.dumps({"model": {
        "growth_rate": 12, "block_config": [6, 6, 6], "num_init_features": 24,
        "compression": 0.5, "bn_size": 4, "drop_rate": 0.0, "num_classes": 10,
        "small_inputs": True, "se_reduction": 16, "se_gate": "sigmoid", "memory": "efficient"}}).encode())
    write("config", "input.json", json.dumps({"input": {
        "size": 32, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}}).encode())
    write("config", "bad.json", b'{"model": {"growth_rate": -1, "block_config": []}}')


if __name__ == "__main__":
    images()
    state_dicts()
    configs()

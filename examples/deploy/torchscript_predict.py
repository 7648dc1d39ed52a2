"""Classify images with an exported SEDenseNet model in PyTorch (torch.jit.load), without
SEDenseNet.

    sedensenet export runs/my-run/best.pt model.ts
    python3 torchscript_predict.py model.ts cat.jpg dog.png

Needs: torch and torchvision (any version that reads the LibTorch that wrote the file). The class
names and preprocessing are the module's attributes (classes, input_size, mean, std); the alpha
policy is in the extra file sedensenet.json.
"""
import json
import sys

import torch
from PIL import Image
from torchvision import transforms


def main():
    model_path, images = sys.argv[1], sys.argv[2:]
    extra = {"sedensenet.json": ""}
    model = torch.jit.load(model_path, _extra_files=extra)
    alpha = json.loads(extra["sedensenet.json"])["input"].get("alpha", "drop")
    preprocess = transforms.Compose([
        transforms.Resize((model.input_size, model.input_size)),
        transforms.ToTensor(),
        transforms.Normalize(list(model.mean), list(model.std)),
    ])

    def load(path):
        image = Image.open(path)
        if alpha == "white" and image.mode in ("RGBA", "LA", "P"):
            image = image.convert("RGBA")
            image = Image.alpha_composite(Image.new("RGBA", image.size, (255, 255, 255, 255)), image)
        return preprocess(image.convert("RGB"))

    with torch.no_grad():
        probabilities = torch.softmax(model(torch.stack([load(p) for p in images])), 1)
    for path, p in zip(images, probabilities):
        values, indices = p.topk(min(3, p.numel()))
        print(path + ":", ", ".join(f"{model.classes[i]} {100 * v:.1f}%" for v, i in zip(values.tolist(), indices.tolist())))


if __name__ == "__main__":
    main()

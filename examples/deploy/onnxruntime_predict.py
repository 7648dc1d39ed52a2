"""Classify images with an exported SEDenseNet model in ONNX Runtime, without SEDenseNet or torch.

    sedensenet export runs/my-run/best.pt model.onnx
    python3 onnxruntime_predict.py model.onnx cat.jpg dog.png

Needs: pip install onnxruntime numpy pillow. The preprocessing (size, mean, std, alpha) and the
class names come from the file's metadata, as the library wrote them. PIL's bilinear resize is
the one the model was trained with (SEDenseNet reproduces torchvision's, which is PIL's).
"""
import json
import sys

import numpy as np
import onnxruntime
from PIL import Image


def preprocess(path, spec):
    image = Image.open(path)
    if spec.get("alpha") == "white" and image.mode in ("RGBA", "LA", "P"):
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image)
    image = image.convert("RGB").resize((spec["size"], spec["size"]), Image.BILINEAR)
    x = np.asarray(image, dtype=np.float32) / 255.0
    x = (x - np.array(spec["mean"], np.float32)) / np.array(spec["std"], np.float32)
    return x.transpose(2, 0, 1)


def main():
    model_path, images = sys.argv[1], sys.argv[2:]
    session = onnxruntime.InferenceSession(model_path, providers=["CPUExecutionProvider"])
    meta = json.loads(session.get_modelmeta().custom_metadata_map["sedensenet"])
    batch = np.stack([preprocess(path, meta["input"]) for path in images])
    logits = session.run(["logits"], {"images": batch})[0]
    probabilities = np.exp(logits - logits.max(1, keepdims=True))
    probabilities /= probabilities.sum(1, keepdims=True)
    for path, p in zip(images, probabilities):
        top = np.argsort(-p)[:3]
        print(path + ":", ", ".join(f"{meta['classes'][i]} {100 * p[i]:.1f}%" for i in top))


if __name__ == "__main__":
    main()

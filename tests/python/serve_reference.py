"""Runs an exported SEDenseNet model in another runtime for tests/test_serve.cpp.

  serve_reference.py torchscript MODEL.ts FOLDER   torch.jit.load (this Python's torch)
  serve_reference.py onnx MODEL.onnx FOLDER        onnx.checker, then ONNX Runtime (CPU)

FOLDER holds a tensor bundle (bundle.py) with "x" (N, 3, S, S); the logits are saved there as
"logits" and the model's class names as classes.json, read from the exported file's metadata.
"""
import json
import os
import sys

import bundle


def run_torchscript(path, folder):
    import torch

    extra = {"sedensenet.json": ""}
    module = torch.jit.load(path, _extra_files=extra)
    meta = json.loads(extra["sedensenet.json"])
    assert meta["format"] == "sedensenet.export", meta
    assert list(module.classes) == meta["classes"], (module.classes, meta["classes"])
    assert module.input_size == meta["input"]["size"]
    x = bundle.load(folder)["x"]
    with torch.no_grad():
        logits = module(x)
    return logits, meta["classes"]


def run_onnx(path, folder):
    import numpy as np
    import onnx
    import onnxruntime
    import torch

    model = onnx.load(path)
    onnx.checker.check_model(model, full_check=True)
    props = {p.key: p.value for p in model.metadata_props}
    meta = json.loads(props["sedensenet"])
    assert json.loads(props["classes"]) == meta["classes"]
    assert model.opset_import[0].version >= 13
    batch = model.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch.dim_param == "batch", batch  # dynamic batch size
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 2
    session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    x = bundle.load(folder)["x"].numpy()
    logits = session.run(["logits"], {"images": x})[0]
    # One image at a time gives the same rows (the batch dimension really is dynamic).
    first = session.run(["logits"], {"images": x[:1]})[0]
    assert np.abs(first - logits[:1]).max() <= 1e-4, np.abs(first - logits[:1]).max()
    return torch.from_numpy(logits), meta["classes"]


def main():
    mode, path, folder = sys.argv[1:4]
    logits, classes = {"torchscript": run_torchscript, "onnx": run_onnx}[mode](path, folder)
    bundle.save(folder, {"x": bundle.load(folder)["x"], "logits": logits.float()})
    with open(os.path.join(folder, "classes.json"), "w") as f:
        json.dump(classes, f)


if __name__ == "__main__":
    main()

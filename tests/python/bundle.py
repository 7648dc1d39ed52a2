"""Tensor exchange with the C++ tests (see tests/support/bundle.hpp): a folder with
manifest.json ({name: {shape, dtype}}) and one raw little-endian <name>.bin per tensor."""
import json
import os

import numpy as np
import torch

_DTYPES = {"float32": torch.float32, "float64": torch.float64, "int64": torch.int64,
           "uint8": torch.uint8, "bool": torch.bool}
_NAMES = {v: k for k, v in _DTYPES.items()}


def save(folder, tensors):
    os.makedirs(folder, exist_ok=True)
    manifest = {}
    for name, t in tensors.items():
        t = t.detach().cpu().contiguous()
        manifest[name] = {"shape": list(t.shape), "dtype": _NAMES[t.dtype]}
        t.numpy().tofile(os.path.join(folder, name + ".bin"))
    with open(os.path.join(folder, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)


def load(folder):
    with open(os.path.join(folder, "manifest.json")) as f:
        manifest = json.load(f)
    out = {}
    for name, info in manifest.items():
        dtype = _DTYPES[info["dtype"]]
        array = np.fromfile(os.path.join(folder, name + ".bin"),
                            dtype=torch.empty(0, dtype=dtype).numpy().dtype)
        out[name] = torch.from_numpy(array.reshape(info["shape"]).copy())
    return out

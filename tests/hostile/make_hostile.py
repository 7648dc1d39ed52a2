"""Writes hostile inputs for the untrusted-file tests (tests/hostile/test_hostile.sh and
tests/test_untrusted.cpp): one file per attack the library must refuse with a one-line error,
without running code, crashing, reading out of bounds or allocating without bound.

    python3 tests/hostile/make_hostile.py OUT_DIR MARKER_FILE

MARKER_FILE is the file the TorchScript payload creates if it ever runs: the tests check that it
does not exist afterwards. Archives are built by hand (zipfile) and pickles byte by byte, so that
each file is exactly the malformation named, whatever PyTorch's own writer would do.
"""
import json
import os
import struct
import sys
import zipfile


def zip_archive(path, records, compress=None, folder="archive"):
    """records: {name: bytes}; written stored (as torch.save does) unless compress names one."""
    with zipfile.ZipFile(path, "w") as z:
        for name, data in records.items():
            method = zipfile.ZIP_DEFLATED if name == compress else zipfile.ZIP_STORED
            z.writestr(zipfile.ZipInfo(f"{folder}/{name}"), data, compress_type=method)


# ---- pickle building blocks (protocol 2) ----
def proto():
    return b"\x80\x02"


def s(text):
    data = text.encode()
    return b"X" + struct.pack("<I", len(data)) + data


def i(v):
    if 0 <= v < 256:
        return b"K" + bytes([v])
    if -(2**31) <= v < 2**31:
        return b"J" + struct.pack("<i", v)
    return b"\x8a\x08" + struct.pack("<q", v)


def glob(module, name):
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def tup(*items):
    return b"(" + b"".join(items) + b"t"


def ordered_dict():
    return glob("collections", "OrderedDict") + b")R"


def tensor(key, numel, offset, size, stride, storage="FloatStorage"):
    pid = tup(s("storage"), glob("torch", storage), s(key), s("cpu"), i(numel)) + b"Q"
    return glob("torch._utils", "_rebuild_tensor_v2") + tup(
        pid, i(offset), tup(*map(i, size)), tup(*map(i, stride)), b"\x89", ordered_dict()) + b"R"


def state_dict(*entries):
    """entries: (name, tensor pickle) pairs in an OrderedDict."""
    body = b"".join(s(k) + v for k, v in entries)
    return ordered_dict() + (b"(" + body + b"u" if entries else b"")


def pickle_file(path, body, storages=None, **kw):
    zip_archive(path, {"data.pkl": proto() + body + b".", **(storages or {}), "version": b"3\n"}, **kw)


def floats(n):
    return struct.pack(f"<{n}f", *([0.5] * n))


def checkpoint(state, model=None, version=2):
    """A file in the shape of a SEDenseNet checkpoint (format version `version`); `state` is a
    JSON value or the text to store as the run state."""
    model = model or []
    text = state if isinstance(state, str) else json.dumps(state)
    return (b"}(" + s("format") + s("sedensenet-checkpoint") + s("version") + i(version) +
            s("state") + s(text) + s("model") + state_dict(*model) +
            s("optimizer") + b"N" + s("optimizer_tensors") + state_dict() + s("extra") +
            state_dict() + b"u")


def many_scans_jpeg(path, size, scans):
    import io
    from PIL import Image
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), (120, 130, 140)).save(buffer, "JPEG", progressive=True)
    data = buffer.getvalue()
    starts = [i for i in range(len(data) - 1) if data[i] == 0xFF and data[i + 1] == 0xDA]
    end = starts[-1] + 2  # the last scan runs to the next marker (not a stuffed 0xFF00 or RSTn)
    while not (data[end] == 0xFF and data[end + 1] != 0 and not 0xD0 <= data[end + 1] <= 0xD7):
        end += 1
    scan = data[starts[-1]:end]
    with open(path, "wb") as f:
        f.write(data[:end] + scan * (scans - len(starts)) + data[end:])


def main():
    out, marker = sys.argv[1], sys.argv[2]
    os.makedirs(out, exist_ok=True)
    w = lambda name: os.path.join(out, name)
    good_tensor = tensor("0", 4, 0, [4], [1])
    four = {"data/0": floats(4)}

    # Code execution: a TorchScript archive (the format of SEDenseNet 0.1 checkpoints) whose
    # __setstate__ creates a file when LibTorch's loader reads it.
    try:
        import evil_module  # noqa: F401  (the module's source must be a file for TorchScript)
    except ImportError:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        import evil_module
    evil_module.write(w("code_execution.pt"), marker)

    # Our own unpickler and archive reader.
    pickle_file(w("deep_list.pt"), b"]" * 100000 + b"a" * 99999)
    pickle_file(w("deep_tuple.pt"), b")" + b"\x85" * 100000)
    # A dict chain: {'k': {'k': {...}}}, built inside-out.
    chain = b"}"
    for _ in range(20000):
        chain = b"}" + s("k") + chain + b"s"
    pickle_file(w("deep_dict.pt"), chain)
    pickle_file(w("self_reference.pt"), b"]q\x00h\x00a")  # a list appended to itself
    pickle_file(w("fewer_strides.pt"), state_dict(("w", tensor("0", 4, 0, [2, 2], [1]))), four)
    pickle_file(w("huge_strides.pt"), state_dict(("w", tensor("0", 4, 0, [2, 2], [2**62, 1]))), four)
    pickle_file(w("huge_offset.pt"), state_dict(("w", tensor("0", 2**61, 2**62, [4], [1]))), four)
    pickle_file(w("negative_size.pt"), state_dict(("w", tensor("0", 4, 0, [-4], [1]))), four)
    pickle_file(w("short_storage.pt"), state_dict(("w", tensor("0", 1000, 0, [1000], [1]))), four)
    pickle_file(w("code_global.pt"), glob("os", "system") + tup(s("touch " + marker)) + b"R")
    pickle_file(w("deflated.pt"), state_dict(("w", good_tensor)), four, compress="data.pkl")
    big = state_dict(("w", tensor("0", 64 * 1024, 0, [64 * 1024], [1])))
    pickle_file(w("deflated_bomb.pt"), big, {"data/0": bytes(255 * 1024 * 4)}, compress="data/0")
    pickle_file(w("bad_crc.pt"), state_dict(("w", good_tensor)), four)
    with open(w("bad_crc.pt"), "r+b") as f:  # flip a byte of the tensor's data
        data = f.read()
        at = data.index(floats(4))
        f.seek(at + 5)
        f.write(bytes([data[at + 5] ^ 0x20]))
    zip_archive(w("two_folders.pt"), {"data.pkl": proto() + state_dict(("w", good_tensor)) + b"."})
    with zipfile.ZipFile(w("two_folders.pt"), "a") as z:
        z.writestr(zipfile.ZipInfo("other/data/0"), floats(4))
    with open(w("truncated.pt"), "wb") as f:
        with open(w("bad_crc.pt"), "rb") as g:
            f.write(g.read()[:200])

    # Checkpoints that parse but describe something absurd or foreign.
    input_spec = {"size": 16, "mean": [0.5], "std": [0.5]}
    huge = {"growth_rate": 12, "block_config": [166667] * 3, "num_init_features": 24,
            "num_classes": 10}
    pickle_file(w("absurd_model.pt"), checkpoint({"metadata": {"model": huge, "input": input_spec}}))
    wide = {"growth_rate": 1 << 20, "block_config": [2], "num_init_features": 24, "num_classes": 10}
    pickle_file(w("absurd_growth.pt"), checkpoint({"metadata": {"model": wide, "input": input_spec}}))
    pickle_file(w("newer_version.pt"), checkpoint({}, version=3))
    nested_state = "[" * 100000 + "]" * 100000
    pickle_file(w("deep_state.pt"), checkpoint(nested_state))
    pickle_file(w("not_a_checkpoint.pt"), b"}(" + s("epoch") + i(3) + b"u")
    small = {"growth_rate": 4, "block_config": [1, 1], "num_init_features": 8, "num_classes": 3}
    pickle_file(w("wrong_weights.pt"), checkpoint(
        {"metadata": {"model": small, "input": input_spec}, "epoch": 1},
        model=[("features.conv0.weight", good_tensor)]), four)
    with open(w("empty.pt"), "wb"):
        pass
    with open(w("text.pt"), "w") as f:
        f.write("not a checkpoint\n")

    # Configs.
    with open(w("deep_config.json"), "w") as f:
        f.write("[" * 100000 + "]" * 100000)
    with open(w("deep_object_config.json"), "w") as f:
        f.write('{"a":' * 5000 + "1" + "}" * 5000)
    with open(w("absurd_preset_config.json"), "w") as f:
        json.dump({"preset": "densenet_bc_1000006", "epochs": 1}, f)
    with open(w("huge_epochs_config.json"), "w") as f:
        f.write('{"epochs": 99999999999999999999}')

    # A progressive JPEG whose last scan (33 bytes) is repeated to 5000 scans: a 105 KB file that
    # PIL takes about 20 s to decode (each scan is a pass over every coefficient).
    many_scans_jpeg(w("many_scans.jpg"), 2048, 5000)

    # A data folder with branching symlink loops in every class folder.
    loops = w("loops")
    for cls in ("a", "b"):
        folder = os.path.join(loops, cls)
        os.makedirs(folder, exist_ok=True)
        for k in range(3):
            os.symlink("..", os.path.join(folder, f"up{k}"))
            os.symlink(".", os.path.join(folder, f"self{k}"))
        os.symlink(os.path.join("..", "b" if cls == "a" else "a"), os.path.join(folder, "other"))
        from PIL import Image
        for k in range(4):
            Image.new("RGB", (8, 8), (40 * k, 200 if cls == "a" else 20, 90)).save(
                os.path.join(folder, f"img{k}.png"))


if __name__ == "__main__":
    main()

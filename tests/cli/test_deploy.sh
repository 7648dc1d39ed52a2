#!/usr/bin/env bash
# The three ways to ship a model (docs/deploy.md) agree: `sedensenet predict` (the Classifier),
# examples/deploy/torchscript_predict.py (torch.jit.load in Python) and
# examples/deploy/onnxruntime_predict.py (ONNX Runtime), on the same images from files they export.
#
#   test_deploy.sh TOOL WEIGHTS IMAGE_FOLDER TORCH_PYTHON ONNX_PYTHON EXAMPLES_DIR
set -uo pipefail
tool=$1 weights=$2 images=$3 torch_python=$4 onnx_python=$5 examples=$6
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }

mapfile -t files < <(find "$images" -name '*.png' | sort | head -12)
[ ${#files[@]} -ge 4 ] || { echo "FAIL: fewer than 4 images in $images"; exit 1; }

"$tool" export "$weights" "$work/model.ts" > "$work/export.txt" 2>&1 || { cat "$work/export.txt"; fail "export torchscript"; }
"$tool" export "$weights" "$work/model.onnx" >> "$work/export.txt" 2>&1 || { cat "$work/export.txt"; fail "export onnx"; }
# The predictions go to stdout; warnings (PyTorch 2.x deprecates torch.jit.load in favour of
# torch.export) to stderr, shown when a step fails.
"$tool" predict --weights "$weights" --threads 2 "${files[@]}" > "$work/ours.txt" 2> "$work/ours.err" \
  || { cat "$work/ours.txt" "$work/ours.err"; fail "predict"; }
"$torch_python" "$examples/deploy/torchscript_predict.py" "$work/model.ts" "${files[@]}" > "$work/torchscript.txt" \
  2> "$work/torchscript.err" || { cat "$work/torchscript.txt" "$work/torchscript.err"; fail "torchscript_predict.py (with $torch_python)"; }
"$onnx_python" "$examples/deploy/onnxruntime_predict.py" "$work/model.onnx" "${files[@]}" > "$work/onnx.txt" \
  2> "$work/onnx.err" || { cat "$work/onnx.txt" "$work/onnx.err"; fail "onnxruntime_predict.py (with $onnx_python)"; }

# Same classes in the same order for every image, probabilities within 0.2 points (printed to 0.1).
"$onnx_python" - "$work/ours.txt" "$work/torchscript.txt" "$work/onnx.txt" <<'PY' || { cat "$work"/*.err; fail "the three ways disagree"; }
import sys
def parse(path):
    out = {}
    for line in open(path):
        name, _, rest = line.strip().rpartition(": ")
        out[name] = [(c.rsplit(" ", 1)[0], float(c.rsplit(" ", 1)[1].rstrip("%"))) for c in rest.split(", ")]
    return out
ours = parse(sys.argv[1])
for other_path in sys.argv[2:]:
    other = parse(other_path)
    assert other.keys() == ours.keys(), (other_path, sorted(other), sorted(ours))
    for name, top in ours.items():
        assert [c for c, _ in top] == [c for c, _ in other[name]], (other_path, name, top, other[name])
        assert all(abs(p - q) <= 0.2 for (_, p), (_, q) in zip(top, other[name])), (other_path, name, top, other[name])
print(f"{len(ours)} images: the same top 3 from sedensenet predict, TorchScript and ONNX Runtime")
PY
# int8: ONNX Runtime's quantizer, calibrated on a few of the images, compared on a few per class.
"$onnx_python" "$examples/deploy/quantize_onnx.py" "$work/model.onnx" "$work/model.int8.onnx" \
  --calibrate "$images" --images 16 --evaluate "$images" --per-class 4 > "$work/int8.txt" 2>&1 \
  || { cat "$work/int8.txt"; fail "quantize_onnx.py"; }
grep -q "int8 agrees with float on" "$work/int8.txt" || { cat "$work/int8.txt"; fail "quantize_onnx.py: no comparison"; }
"$onnx_python" "$examples/deploy/quantize_onnx.py" "$work/model.onnx" "$work/model.int8.onnx" \
  --calibrate "$images" > "$work/int8.txt" 2>&1 && fail "quantize_onnx.py overwrote its output"
grep -q "already exists" "$work/int8.txt" || fail "quantize_onnx.py: no message for an existing output"

[ $failures -eq 0 ] && echo "deploy: all passed" || { echo "deploy: $failures failed"; exit 1; }

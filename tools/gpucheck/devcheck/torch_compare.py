"""Times torchvision's AlexNet in PyTorch eager on the same card, with the
weights gpucheck timed (a Leafwatch checkpoint: safetensors under
torchvision's names), and prints ms/image beside Leafwatch's and the ratio.

usage: python3 torch_compare.py MODEL.safetensors gpucheck.json
"""
import json
import struct
import sys
import time

import numpy as np
import torch
import torchvision

DTYPES = {"F32": np.float32, "F16": np.float16}


def read_safetensors(path):
    """Parses a safetensors file with the standard library and numpy (the
    safetensors package may not be installed)."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    meta = header.pop("__metadata__", {})
    tensors = {}
    for name, t in header.items():
        a, b = t["data_offsets"]
        arr = np.frombuffer(data[a:b], dtype=DTYPES[t["dtype"]]).reshape(t["shape"])
        tensors[name] = torch.from_numpy(arr.copy())
    return tensors, meta


def main():
    model_path, report_path = sys.argv[1], sys.argv[2]
    tensors, meta = read_safetensors(model_path)
    labels = json.loads(meta["labels"])
    net = torchvision.models.alexnet(num_classes=len(labels))
    net.load_state_dict(tensors, strict=True)
    net = net.cuda().eval()
    with open(report_path) as f:
        report = json.load(f)
    ours = {(r["variant"], r["batch"]): r["ms_per_image"] for r in report["results"]}
    torch.backends.cudnn.benchmark = False
    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, {torch.cuda.get_device_name(0)}")
    print(f"{'batch':>5}  {'leafwatch ms/image':>18}  {'pytorch ms/image':>16}  {'ratio (leafwatch/pytorch)':>25}")
    for batch in (1, 8, 32):
        # Host input to host probabilities, as Leafwatch's figure is.
        x = torch.randn(batch, 3, 224, 224)
        with torch.inference_mode():
            for _ in range(3):
                torch.softmax(net(x.cuda()), dim=1).cpu()
            torch.cuda.synchronize()
            reps = 20
            t0 = time.perf_counter()
            for _ in range(reps):
                torch.softmax(net(x.cuda()), dim=1).cpu()
            ms = (time.perf_counter() - t0) * 1000 / (reps * batch)
        lw = ours.get(("torchvision", batch))
        ratio = f"{lw / ms:.2f}" if lw else "n/a"
        lws = f"{lw:.3f}" if lw else "n/a"
        print(f"{batch:>5}  {lws:>18}  {ms:>16.3f}  {ratio:>25}")
    # Agreement: the probe input gpucheck saved, through both; TF32 is off
    # so PyTorch computes in full fp32 as Leafwatch does.
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    probe = np.array(report.get("probe_probabilities") or [], dtype=np.float32)
    raw = np.fromfile(model_path + ".input", dtype="<f4")
    x = torch.from_numpy(raw.reshape(1, 3, 224, 224).copy()).cuda()
    with torch.inference_mode():
        theirs = torch.softmax(net(x), dim=1)[0].cpu().numpy()
    d = float(np.max(np.abs(theirs - probe))) if probe.size == theirs.size else float("nan")
    same = probe.size == theirs.size and int(np.argmax(probe)) == int(np.argmax(theirs))
    print(f"agree: max |leafwatch - pytorch| = {d:.3g} on the probe's {theirs.size} probabilities; same top-1: {same}")
    if not (d <= 1e-4):
        sys.exit(1)

if __name__ == "__main__":
    main()

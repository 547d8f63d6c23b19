"""Times torchvision's AlexNet in PyTorch eager on the same card, with the
weights gpucheck timed (a Leafwatch checkpoint: safetensors under
torchvision's names), in fp32 and in fp16 (.half()), and prints ms/image beside
Leafwatch's at the same precision with the ratio, the device memory of each,
and the agreement on the probe input.

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


def time_torch(net, dtype, batch):
    """ms/image from host input to host probabilities, as Leafwatch's figure is."""
    x = torch.randn(batch, 3, 224, 224)
    with torch.inference_mode():
        for _ in range(3):
            torch.softmax(net(x.cuda().to(dtype)).float(), dim=1).cpu()
        torch.cuda.synchronize()
        reps = 20
        t0 = time.perf_counter()
        for _ in range(reps):
            torch.softmax(net(x.cuda().to(dtype)).float(), dim=1).cpu()
        return (time.perf_counter() - t0) * 1000 / (reps * batch)


def main():
    model_path, report_path = sys.argv[1], sys.argv[2]
    tensors, meta = read_safetensors(model_path)
    labels = json.loads(meta["labels"])
    with open(report_path) as f:
        report = json.load(f)
    ours = {(r["variant"], r.get("precision", "fp32"), r["batch"]): r for r in report["results"]}
    torch.backends.cudnn.benchmark = False
    # TF32 off: PyTorch's fp32 is full fp32, as Leafwatch's is.
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, {torch.cuda.get_device_name(0)}")
    raw = np.fromfile(model_path + ".input", dtype="<f4")
    probe_x = torch.from_numpy(raw.reshape(1, 3, 224, 224).copy())
    ok = True
    for prec, dtype, bar, key in (("fp32", torch.float32, 1e-4, "probe_probabilities"),
                                  ("fp16", torch.float16, 0.005, "probe_probabilities_fp16")):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        net = torchvision.models.alexnet(num_classes=len(labels))
        net.load_state_dict(tensors, strict=True)
        net = net.to(dtype).cuda().eval()
        weights_mb = (torch.cuda.memory_allocated() - base) / 1e6
        print(f"== {prec} (PyTorch eager, {'.half() weights and inputs' if prec == 'fp16' else 'fp32'})")
        print(f"{'batch':>5}  {'leafwatch ms/image':>18}  {'pytorch ms/image':>16}  {'ratio (leafwatch/pytorch)':>25}")
        for batch in (1, 8, 32):
            ms = time_torch(net, dtype, batch)
            lw = ours.get(("torchvision", prec, batch), {}).get("ms_per_image")
            ratio = f"{lw / ms:.2f}" if lw else "n/a"
            lws = f"{lw:.3f}" if lw else "n/a"
            print(f"{batch:>5}  {lws:>18}  {ms:>16.3f}  {ratio:>25}")
        peak_mb = (torch.cuda.max_memory_allocated() - base) / 1e6
        lw_mb = max((r.get("device_mb", 0) for (v, p, _), r in ours.items() if v == "torchvision" and p == prec), default=0)
        print(f"device memory {prec}: leafwatch {lw_mb:.0f} MB (weights, activations, buffers); "
              f"pytorch {weights_mb:.0f} MB of weights, peak {peak_mb:.0f} MB over batches up to 32")
        probe = np.array(report.get(key) or [], dtype=np.float32)
        if probe.size == 0 and prec == "fp16":
            print("agree fp16: skipped, Leafwatch computed fp32 on this GPU (no fp16 arithmetic before 5.3)")
            del net
            continue
        with torch.inference_mode():
            theirs = torch.softmax(net(probe_x.cuda().to(dtype)).float(), dim=1)[0].cpu().numpy()
        d = float(np.max(np.abs(theirs - probe))) if probe.size == theirs.size else float("nan")
        same = probe.size == theirs.size and int(np.argmax(probe)) == int(np.argmax(theirs))
        print(f"agree {prec}: max |leafwatch - pytorch| = {d:.3g} on the probe's {theirs.size} probabilities "
              f"(bar {bar:g}); same top-1: {same}")
        ok = ok and d <= bar
        del net
    if not ok:
        sys.exit(1)


if __name__ == "__main__":
    main()

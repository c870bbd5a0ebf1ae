"""What a user would run instead of the CUDA engine, timed on the same GPU in the same run (issue #17): a plain
ResNet-20 (float weights, cuDNN) in fp16 and channels-last, eager and replayed as a CUDA graph, at the batch sizes
bench/gpu.ts uses. Weights are random: time does not depend on them.

    python3 bench/gpu/baselines.py [--device cuda] [--batches 1,64,256,1024,4096] [--out baselines.json]
"""
import argparse
import json
import time

import torch
from torch import nn


class Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.b1 = nn.BatchNorm2d(cout)
        self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.b2 = nn.BatchNorm2d(cout)
        self.sc = nn.Sequential() if stride == 1 and cin == cout else nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = torch.relu(self.b1(self.c1(x)))
        return torch.relu(self.b2(self.c2(y)) + self.sc(x))


def resnet20(classes: int = 10) -> nn.Module:
    layers, cin = [nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU()], 16
    for cout, stride in ((16, 1), (32, 2), (64, 2)):
        for i in range(3):
            layers.append(Block(cin, cout, stride if i == 0 else 1))
            cin = cout
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, classes)]
    return nn.Sequential(*layers)


def timed(fn, sync, seconds: float):
    fn()
    sync()
    times = []
    start = time.perf_counter()
    while time.perf_counter() - start < seconds or len(times) < 3:
        t = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t)
    times.sort()
    return times[len(times) // 2] * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--batches", default="1,64,256,1024,4096")
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--out")
    a = ap.parse_args()
    dev = torch.device("cuda:0" if a.device == "cuda" else "cpu")
    cuda = dev.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    dtype = torch.float16 if cuda else torch.float32
    model = resnet20().to(dev, dtype).to(memory_format=torch.channels_last).eval()
    torch.backends.cudnn.benchmark = True
    rows = []
    with torch.inference_mode():
        for n in (int(b) for b in a.batches.split(",")):
            x = torch.randn(n, 3, 32, 32, device=dev, dtype=dtype).to(memory_format=torch.channels_last)
            row = {"batch": n, "eager_ms": timed(lambda: model(x), sync, a.seconds)}
            if cuda:
                static_in = x.clone()
                s = torch.cuda.Stream()
                s.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(s):
                    for _ in range(3):
                        model(static_in)
                torch.cuda.current_stream().wait_stream(s)
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph):
                    model(static_in)
                row["graph_ms"] = timed(graph.replay, sync, a.seconds)
            row["images_per_s"] = n / (min(row.get("graph_ms", row["eager_ms"]), row["eager_ms"]) / 1e3)
            rows.append(row)
            print(json.dumps(row), flush=True)
    result = {"device": torch.cuda.get_device_name(0) if cuda else "cpu", "torch": torch.__version__, "dtype": str(dtype), "rows": rows}
    if a.out:
        with open(a.out, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()

"""The models the benchmark compares dqserve against, built from the static twin's trained weights (the format-1
bundle that resnet20_w4/5 was re-exported from), each one ONNX graph taking the normalised float NCHW image a
user's own preprocessing would produce:

  float-levels.onnx  the static twin in bundle format 1's arithmetic, stitched into one graph (Clip -> Mul -> Round
                     -> Conv -> Round -> Mul -> Add per quantized conv): "today's static twin as one session"
  int8.onnx          the same network as a plain int8 model: every conv a QLinearConv with int8 per-channel weights
                     (the trained weights' float values on 127 levels), uint8 per-tensor activations calibrated on
                     training images, the network's [0, 1] input clip as the 8-bit range, QLinearAdd residuals:
                     the single-session int8 anchor

Usage: /usr/bin/python3 bench/baselines.py [--data ../shared/data/cifar10] [--out bench/models]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import onnx
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from training import int8  # noqa: E402
from training.data import load_split  # noqa: E402
from training.export import CALIBRATION_IMAGES  # noqa: E402
from training.onnx_export import MS, Graph  # noqa: E402

SOURCE = ROOT / "training" / "format1-bundles" / "resnet20_w4_4"
F32 = onnx.TensorProto.FLOAT


def _stem(g: Graph, net: int8.Net) -> str:
    k = net.stem_weight.shape[2]
    x = g.op("Conv", ["image", g.const(net.stem_weight.numpy(), "w"), g.const(net.stem_bias.numpy(), "b")],
             kernel_shape=[k, k], strides=[net.stem_stride] * 2, pads=[net.stem_pad] * 4)
    return g.op("Relu", [x])


def _finish(g: Graph, net: int8.Net, features: str) -> onnx.ModelProto:
    h = g.op("Flatten", [g.op("GlobalAveragePool", [features])], axis=1)
    g.dense(h, net.fc, out="logits")
    g.input("image", F32, ["N", 3, 32, 32])
    return g.model({"logits": (F32, ["N", net.fc.weight.shape[0]])})


def float_levels(net: int8.Net) -> onnx.ModelProto:
    g = Graph("float_levels")

    def conv(x: str, q: int8.QConv) -> str:
        x = g.op("Clip", [x, g.scalar(0.0), g.scalar(float(int8.f32(q.clip)))])
        x = g.op("Round", [g.op("Mul", [x, g.scalar(float(int8.f32(q.levels / q.clip)))])])
        k = q.m.shape[2]
        acc = g.op("Round", [g.op("Conv", [x, g.const(q.m.float().numpy(), "m")], kernel_shape=[k, k],
                                  strides=[q.stride] * 2, pads=[q.pad] * 4)])
        c = q.m.shape[0]
        y = g.op("Mul", [acc, g.const(q.mul.numpy().reshape(1, c, 1, 1), "mul")])
        return g.op("Add", [y, g.const(q.bias.numpy().reshape(1, c, 1, 1), "bias")])

    x = _stem(g, net)
    for blk in net.blocks:
        h = g.op("Relu", [conv(x, blk.conv1.only)])
        sc = x if blk.shortcut is None else conv(x, blk.shortcut.only)
        x = g.op("Relu", [g.op("Add", [conv(h, blk.conv2.only), sc])])
    return _finish(g, net, x)


def int8_plain(net: int8.Net, calib_u8: torch.Tensor) -> onnx.ModelProto:
    """Float weights W = m * mul * rate (the conv on clipped inputs, BN folded), quantized per output channel;
    activation scales from int8.calibrate, the bundles' own rule."""
    int8.calibrate(net, calib_u8, [torch.full((len(calib_u8), len(net.dynamic_layers)), net.candidates[0])])
    g = Graph("int8")
    s_in = float(int8.f32(1 / 255))  # conv inputs: the network's [0, 1] clip on 256 levels

    def qconv(a: str, q: int8.QConv, y_scale: float, y_zero: int) -> str:
        w = q.m.double() * q.mul.double().view(-1, 1, 1, 1) * (q.levels / q.clip)
        ws = w.abs().amax(dim=(1, 2, 3)).clamp(min=1e-12) / 127
        wq = torch.round(w / ws.view(-1, 1, 1, 1)).to(torch.int8)
        bias = torch.round(q.bias.double() / (s_in * ws)).to(torch.int32)
        k = q.m.shape[2]
        return g.op("QLinearConv", [a, g.scalar(s_in), g.u8(0), g.const(wq.numpy(), "w"),
                                    g.const(ws.float().numpy(), "ws"), g.const(np.zeros(len(ws), np.int8), "wz"),
                                    g.scalar(y_scale), g.u8(y_zero), g.const(bias.numpy(), "b")],
                    domain=MS, channels_last=1, kernel_shape=[k, k], strides=[q.stride] * 2, pads=[q.pad] * 4)

    x = g.op("Transpose", [_stem(g, net)], perm=[0, 2, 3, 1])
    s_r = net.s_stem
    r = g.op("QuantizeLinear", [x, g.scalar(s_r), g.u8(0)])
    a = g.op("QuantizeLinear", [x, g.scalar(s_in), g.u8(0)])  # saturates at 255 = the clip at 1
    for i, blk in enumerate(net.blocks):
        h = qconv(a, blk.conv1.only, s_in, 0)
        s_z = blk.s_z
        z = qconv(h, blk.conv2.only, s_z, 128)
        if blk.shortcut is None:
            sc, s_sc, z_sc = r, s_r, 0
        else:
            s_sc, z_sc = blk.s_sc, 128
            sc = qconv(a, blk.shortcut.only, s_sc, z_sc)
        r = g.qadd(z, s_z, 128, sc, s_sc, z_sc, blk.s_out)
        a = g.qadd(z, s_z, 128, sc, s_sc, z_sc, s_in)
        s_r = blk.s_out
    features = g.op("Transpose", [g.op("DequantizeLinear", [r, g.scalar(s_r), g.u8(0)])], perm=[0, 3, 1, 2])
    return _finish(g, net, features)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "cifar10"))
    ap.add_argument("--out", default=str(ROOT / "bench" / "models"))
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    net = int8.from_bundle_v1(SOURCE)
    onnx.save(float_levels(net), out / "float-levels.onnx")
    calib = load_split(a.data, "train").subset(CALIBRATION_IMAGES, seed=0).images
    onnx.save(int8_plain(net, calib), out / "int8.onnx")
    print(f"wrote {out}/float-levels.onnx and {out}/int8.onnx from {SOURCE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What padding costs each conv kernel of a model: the conv as built, against the same conv on an
input that arrives already padded (same multiply-adds, no padding pass in the kernel).

    python scripts/bench_padding.py [--model vgg-fmnist] [--size 28] [--method tai]
                                    [--rank macs:0.25] [--threads 2] [--rounds 7]

For every padded conv of the model (as the build prepares it), it builds two one-conv modules
with our CPU schedules: `padded` (the conv with its padding, plus its bias add and ReLU when the
model has a bias after it) and `pre-padded` (padding 0 on an input already padded by numpy).
Both outputs must agree; each kernel is then timed alone (`bench.kernels.profile_kernels`) in
interleaved rounds. The difference is what the padding costs the kernel as built (its pad loops,
the pad buffer, which above 1 KiB is a workspace allocation per call, and its parallel region):
what a kernel given its input already padded would save. Prints microseconds per call (median
over rounds) and the share of the kernel the padding takes.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="vgg-fmnist", help="bundled model name (tvm_lowrank.models)")
    parser.add_argument("--size", type=int, default=28, help="input height = width")
    parser.add_argument("--method", default="tai", help='"dense" or a low-rank method')
    parser.add_argument("--rank", default="macs:0.25", help="rank policy of a low-rank method")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--target", default=None, help="target name (default: this CPU's)")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved timing rounds")
    return parser.parse_args(argv)


@dataclass(frozen=True)
class PaddedConv:
    """One padded conv of the model: its input shape, weight, geometry and epilogue."""

    in_shape: tuple[int, int, int, int]
    weight: np.ndarray
    strides: tuple[int, int]
    padding: tuple[int, int, int, int]  # top, left, bottom, right
    dilation: tuple[int, int]
    groups: int
    bias_relu: bool

    def pad(self, x: np.ndarray) -> np.ndarray:
        """`x` (of in_shape) with this conv's zero padding: the pre-padded twin's input."""
        top, left, bottom, right = self.padding
        return np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))

    def label(self) -> str:
        out_ch, in_ch, kh, kw = self.weight.shape
        return f"{in_ch * self.groups}->{out_ch} {kh}x{kw} on {self.in_shape[2]}x{self.in_shape[3]}"


def padded_convs(mod) -> list[PaddedConv]:
    """The model's convs with a non-zero padding, once per distinct shape."""
    from tvm_lowrank.passes._conv_graph import conv_sites

    found = {}
    sites, _ = conv_sites(mod["main"])
    for site in sites:
        padding = site.geometry.padding
        if site.weight is None or not site.standard_layout or not any(padding) or site.in_hw is None:
            continue
        in_channels = site.weight_shape[1] * site.groups
        conv = PaddedConv((1, in_channels, *site.in_hw), site.weight, site.geometry.stride, padding,
                          site.geometry.dilation, site.groups, site.has_bias)
        found.setdefault((conv.label(), padding, conv.strides, conv.dilation, conv.bias_relu), conv)
    return list(found.values())


def conv_module(conv: PaddedConv, pre_padded: bool):
    """A one-conv Relax module; `pre_padded`: its input is the padded map and its padding is 0."""
    from tvm import relax

    shape = conv.pad(np.zeros(conv.in_shape, "float32")).shape if pre_padded else conv.in_shape
    bias = np.linspace(-0.5, 0.5, conv.weight.shape[0], dtype="float32").reshape(1, -1, 1, 1)
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(shape, "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit(relax.op.nn.conv2d(x, relax.const(conv.weight), strides=conv.strides,
                                           padding=(0, 0, 0, 0) if pre_padded else conv.padding,
                                           dilation=conv.dilation, groups=conv.groups))
            if conv.bias_relu:
                y = bb.emit(relax.op.nn.relu(relax.op.add(y, relax.const(bias))))
            out = bb.emit_output(y)
        bb.emit_func_output(out)
    return bb.get()


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("TVM_NUM_THREADS", str(args.threads))
    sys.path.insert(0, str(REPO / "scripts"))
    sys.path.insert(0, str(REPO))
    from bench_untuned import prepare_sized

    from tvm_lowrank.bench.kernels import kernel_flops, profile_kernels
    from tvm_lowrank.build import build, load_executable, run_vm
    from tvm_lowrank.targets import host_cpu_target, load_target

    target = load_target(args.target or host_cpu_target())
    prepared = prepare_sized(args.model, args.size, args.method, args.rank)
    rng = np.random.default_rng(0)
    cases = []
    with tempfile.TemporaryDirectory() as folder:
        for index, conv in enumerate(padded_convs(prepared.mod)):
            x = rng.standard_normal(conv.in_shape).astype("float32")
            variants = []
            for pre_padded, data in ((False, x), (True, conv.pad(x))):
                mod = conv_module(conv, pre_padded)
                path = str(Path(folder) / f"conv{index}_{int(pre_padded)}.so")
                build(mod, target).export_library(path)
                variants.append((path, data, kernel_flops(mod, target)))
            outputs = [run_vm(load_executable(path), data) for path, data, _ in variants]
            np.testing.assert_allclose(outputs[1], outputs[0], rtol=1e-5, atol=1e-4)
            cases.append((conv, variants))
        seconds = {(i, v): [] for i in range(len(cases)) for v in range(2)}
        for _ in range(args.rounds):
            for i, (_, variants) in enumerate(cases):
                for v, (path, data, flops) in enumerate(variants):
                    seconds[i, v].append(sum(row["seconds"] for row in profile_kernels(path, data, flops)))
    print(f"{args.model} {args.size}x{args.size} {args.method} on {target.name}, {args.threads} threads: "
          f"microseconds per call (median of {args.rounds} interleaved rounds)")
    print(f"{'conv':28s} {'epilogue':9s} {'padded':>8s} {'pre-padded':>11s} {'padding share':>14s}")
    total = [0.0, 0.0]
    for i, (conv, _) in enumerate(cases):
        padded, pre = (float(np.median(seconds[i, v])) * 1e6 for v in range(2))
        total[0] += padded
        total[1] += pre
        print(f"{conv.label():28s} {'bias+relu' if conv.bias_relu else '-':9s} {padded:8.1f} {pre:11.1f} "
              f"{(padded - pre) / padded:14.0%}")
    print(f"{'all (each shape once)':38s} {total[0]:8.1f} {total[1]:11.1f} {(total[0] - total[1]) / total[0]:14.0%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

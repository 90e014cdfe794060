"""Every layer exports with torch.export and to ONNX (the dynamo exporter), and ONNX Runtime agrees."""

import onnxruntime
import pytest
import torch
from torch import nn

from tvm_lowrank.nn import CPConv2d, Im2colConv2d, LowRankConv2d, LowRankLinear, Rank1Conv2d, Tucker2Conv2d

CONV_INPUT = (2, 4, 10, 9)
MODULES = {
    "tai": lambda: LowRankConv2d(4, 6, 3, rank=3, stride=2, padding=1),
    "tai_bn": lambda: LowRankConv2d(4, 6, 3, rank=3, padding=1, dilation=2, bn_between=True),
    "cp": lambda: CPConv2d(4, 6, 3, rank=5, stride=(1, 2), padding=1),
    "tucker2": lambda: Tucker2Conv2d(4, 6, (3, 5), rank=(3, 2), padding=(1, 2)),
    "im2col": lambda: Im2colConv2d(4, 6, 3, rank=2),
    "rank1_decomposed": lambda: Rank1Conv2d(4, 6, 3, rank=2, padding=1),
    "rank1_composed": lambda: Rank1Conv2d(4, 6, 3, rank=2, padding=1).compose(),
    "linear": lambda: LowRankLinear(9, 5, rank=3),
}


@pytest.mark.parametrize("make", MODULES.values(), ids=MODULES.keys())
def test_torch_export_and_onnx(make, rel_err):
    module = make().eval()
    x = torch.randn(2, 9) if isinstance(module, LowRankLinear) else torch.randn(*CONV_INPUT)
    with torch.no_grad():
        expected = module(x)
    program = torch.export.export(module, (x,))
    with torch.no_grad():
        assert rel_err(program.module()(x), expected) <= 1e-6

    onnx_program = torch.onnx.export(program, dynamo=True, verbose=False)
    session = onnxruntime.InferenceSession(onnx_program.model_proto.SerializeToString(),
                                           providers=["CPUExecutionProvider"])
    (output,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    assert rel_err(torch.from_numpy(output), expected) <= 1e-5

"""Every method's trained model goes to the compiler: exported, its chains recognised, built for the
host and verified against PyTorch; and `tvm-lowrank train` refuses bad input with a clear error."""

import pytest
import torch

from tvm_lowrank.cli import main
from tvm_lowrank.train import METHODS, MethodOptions, TrainSettings, compile_trained, export_trained, run_method

QUICK = TrainSettings(epochs=0.5, batch_size=64, lr=1e-3)
OPTIONS = MethodOptions(rank="macs:0.5", switch_every="3steps", period=3)
CHAIN_METHOD = {"atcd": "rank1", "atcd-fixed": "rank1", "tai-scratch": "tai", "tai-finetune": "tai",
                "cp-iterative": "cp", "deeptwist": "tai"}


# One method per chain kind runs in CI (rank-1, Tai with BatchNorm between, CP + SVD); the other
# three produce the same chain kinds and run with the slow tests.
SAME_CHAINS_AS_ANOTHER = ("atcd-fixed", "tai-finetune", "deeptwist")


@pytest.mark.parametrize("method", [pytest.param(m, marks=pytest.mark.slow) if m in SAME_CHAINS_AS_ANOTHER else m
                                    for m in METHODS])
def test_trained_model_compiles_and_verifies(method, digits, tiny_vgg, trained_tiny, tmp_path):
    torch.manual_seed(0)
    result = run_method(method, tiny_vgg, digits, QUICK, OPTIONS, trained=trained_tiny.model)
    compiled = compile_trained(result.model, digits.example, tmp_path / method, "x86-avx2",
                               num_random_inputs=4)
    recognised = [r for r in compiled.records if r.action == "pre-decomposed"]
    assert len(recognised) >= 5 and CHAIN_METHOD[method] in {r.method for r in recognised}
    assert not [r for r in compiled.records if r.action == "decomposed"]  # nothing re-decomposed
    assert compiled.verification.passed and compiled.verification.compiler_exact


def test_export_writes_a_compilable_program(digits, trained_tiny, tmp_path):
    files = export_trained(trained_tiny.model, digits.example, tmp_path / "dense.pt")
    assert [f.name for f in files] == ["dense.pt", "dense.pt2"] and all(f.is_file() for f in files)
    program = torch.export.load(str(files[1]))
    expected = trained_tiny.model(digits.example)
    torch.testing.assert_close(program.module()(digits.example), expected)


@pytest.mark.parametrize("argv, message", [
    (["--method", "svd"], "unknown training method 'svd'"),
    (["--method", "atcd", "--epochs", "0"], "epochs must be > 0"),
    (["--method", "atcd", "--out", "model.txt"], "expected a .pt or .pt2"),
    (["--method", "atcd", "--model", "alexnet"], "unknown model 'alexnet'"),
    (["--method", "atcd", "--switch-every", "often"], "cannot read alternation schedule 'often'"),
    (["--method", "tai-finetune", "--rank", "macs:-1"], "rank policy 'macs:-1'"),
    (["--method", "deeptwist", "--deeptwist-form", "cp"], "form must be one of"),
])
def test_cli_train_rejects_bad_input(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["train", *argv]) == 2
    error = capsys.readouterr().err
    assert error.startswith("tvm-lowrank train: error:") and message in error
    assert not list(tmp_path.iterdir())  # nothing written


def test_cli_train_then_compile(tmp_path, capsys):
    out = tmp_path / "resnet.pt2"
    assert main(["train", "--method", "tai-finetune", "--model", "resnet-fmnist", "--train-limit", "512",
                 "--test-limit", "500", "--rank", "macs:0.5", "--out", str(out), "--compile", "x86-avx2"]) == 0
    printed = capsys.readouterr().out
    assert "tai-finetune: test accuracy" in printed and "pre-decomposed" in printed
    assert out.is_file() and (tmp_path / "resnet" / "model.so").is_file()
    assert main(["compile", str(out), "--method", "dense", "--out", str(tmp_path / "again")]) == 0

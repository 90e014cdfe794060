"""`tvm-lowrank` end to end on a tiny model: compile, verify, and each bad input's exit code."""

import json

import numpy as np
import pytest
import torch

from tvm_lowrank.artifact import REFERENCE_FILE, load_artifact
from tvm_lowrank.cli import main

MODEL = "cli_models:tiny_cnn"


def test_compile_then_verify(tmp_path, capsys):
    out = tmp_path / "tai"
    assert main(["compile", MODEL, "--rank", "4", "--out", str(out), "--min-top1-agreement", "0"]) == 0
    printed = capsys.readouterr().out
    assert "decomposed" in printed and "vs PyTorch low-rank reference" in printed
    manifest = load_artifact(out).manifest
    decomposed = [layer for layer in manifest["layers"] if layer["action"] == "decomposed"]
    assert [layer["rank"] for layer in decomposed] == [4, 4, 4]
    assert manifest["totals"]["mac_reduction"] > 1.5
    assert manifest["verification"]["passed"] and manifest["verification"]["compiler_exact"]
    assert main(["verify", str(out)]) == 0


def test_onnx_cp_and_dense_builds(tmp_path):
    from cli_models import tiny_cnn

    model, example = tiny_cnn()
    onnx_path = tmp_path / "tiny.onnx"
    torch.onnx.export(model, (example,), str(onnx_path), dynamo=True)
    assert main(["compile", str(onnx_path), "--method", "cp", "--rank", "macs:0.5",
                 "--out", str(tmp_path / "cp"), "--min-top1-agreement", "0"]) == 0
    cp_layers = load_artifact(tmp_path / "cp").manifest["layers"]
    assert {layer["method"] for layer in cp_layers if layer["action"] == "decomposed"} == {"cp"}
    assert main(["compile", MODEL, "--method", "dense", "--out", str(tmp_path / "dense")]) == 0
    dense = load_artifact(tmp_path / "dense").manifest
    assert dense["totals"]["mac_reduction"] == 1.0
    assert dense["verification"]["vs_original"]["max_rel_error"] < 1e-4


def test_tampered_reference_fails_verify(tmp_path, capsys):
    out = tmp_path / "tai"
    assert main(["compile", MODEL, "--rank", "4", "--out", str(out), "--min-top1-agreement", "0"]) == 0
    with np.load(out / REFERENCE_FILE) as data:
        arrays = dict(data)
    arrays["lowrank_outputs"] = arrays["lowrank_outputs"] + 1.0
    np.savez(out / REFERENCE_FILE, **arrays)
    capsys.readouterr()
    assert main(["verify", str(out)]) == 2
    assert "compiler changed the numerics" in capsys.readouterr().err
    assert load_artifact(out).manifest["verification"]["passed"] is False


def test_failed_verification_keeps_previous_artifact(tmp_path, capsys):
    out = tmp_path / "model"
    assert main(["compile", MODEL, "--rank", "4", "--out", str(out), "--min-top1-agreement", "0"]) == 0
    before = (out / "model.so").read_bytes()
    assert main(["compile", MODEL, "--rank", "1", "--out", str(out), "--min-top1-agreement", "1.01"]) == 2
    assert "top-1 agreement" in capsys.readouterr().err
    assert (out / "model.so").read_bytes() == before
    assert load_artifact(out).manifest["verification"]["passed"]
    assert (tmp_path / "model.failed" / "manifest.json").is_file()


@pytest.mark.parametrize("args, message", [
    (["--target", "no-such-target"], "x86-avx2"),
    (["--rank", "energy:1.5"], "energy"),
    (["--rank", "lots"], "rank"),
    (["--method", "magic"], "magic"),
])
def test_bad_options_exit_nonzero(tmp_path, capsys, args, message):
    assert main(["compile", MODEL, "--out", str(tmp_path / "x"), *args]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_rank_file_beyond_layer_limit(tmp_path, capsys):
    rank_file = tmp_path / "ranks.json"
    rank_file.write_text(json.dumps({"conv0": 1000}))
    assert main(["compile", MODEL, "--rank-file", str(rank_file), "--out", str(tmp_path / "x")]) == 2
    assert "conv0" in capsys.readouterr().err


def test_bad_model_files(tmp_path, capsys):
    corrupt = tmp_path / "broken.onnx"
    corrupt.write_bytes(b"\x00not an onnx model")
    assert main(["compile", str(corrupt), "--out", str(tmp_path / "x")]) == 2
    assert "broken.onnx" in capsys.readouterr().err
    assert main(["compile", str(tmp_path / "missing.pt2"), "--out", str(tmp_path / "x")]) == 2
    assert "missing.pt2" in capsys.readouterr().err
    assert main(["verify", str(tmp_path / "nothing")]) == 2
    assert "not a tvm-lowrank artifact" in capsys.readouterr().err

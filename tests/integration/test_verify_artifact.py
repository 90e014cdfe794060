"""Verification arithmetic and artifact handling, without building anything."""

import json

import numpy as np
import pytest

from tvm_lowrank.artifact import MANIFEST_FILE, ReferenceData, load_artifact, write_artifact
from tvm_lowrank.errors import ModelLoadError, VerificationError
from tvm_lowrank.verify import Agreement, compare


def _logits(rng, batch=20, classes=10):
    return rng.standard_normal((batch, 1, classes)).astype(np.float32)


def test_agreement_measures_errors_and_top1():
    rng = np.random.default_rng(0)
    reference = _logits(rng)
    outputs = reference.copy()
    outputs[3, 0] = outputs[3, 0, ::-1]  # one input now predicts a different class
    agreement = Agreement.measure(outputs, reference)
    assert agreement.top1_agreement == pytest.approx(19 / 20)
    assert agreement.max_abs_error == pytest.approx(np.abs(outputs - reference).max())
    assert agreement.max_rel_error == pytest.approx(agreement.max_abs_error / np.abs(reference).max())


def test_compiler_error_above_tolerance_fails_loudly():
    rng = np.random.default_rng(1)
    reference = _logits(rng)
    drifted = reference + 1e-3 * np.abs(reference).max()
    result = compare(drifted, reference, reference, min_top1_agreement=0.5)
    assert not result.compiler_exact and not result.passed
    with pytest.raises(VerificationError, match="compiler changed the numerics"):
        result.raise_if_failed()


def test_float_rounding_passes_and_accuracy_uses_labels():
    rng = np.random.default_rng(2)
    reference = _logits(rng)
    rounded = reference * (1 + 1e-7)
    labels = reference[-5:].reshape(5, -1).argmax(axis=1)
    result = compare(rounded, reference, reference, min_top1_agreement=0.99, labels=labels)
    assert result.passed and result.accuracy == 1.0
    result.raise_if_failed()


def test_low_top1_agreement_with_original_fails():
    rng = np.random.default_rng(3)
    original, lowrank = _logits(rng), _logits(rng)
    result = compare(lowrank, original, lowrank, min_top1_agreement=0.99)
    assert result.compiler_exact and not result.approximation_ok
    with pytest.raises(VerificationError, match="top-1 agreement"):
        result.raise_if_failed()


def test_nan_output_is_an_error():
    reference = np.ones((2, 10), dtype=np.float32)
    with pytest.raises(VerificationError, match="NaN"):
        Agreement.measure(np.full_like(reference, np.nan), reference)


def _reference():
    inputs = np.zeros((2, 1, 3, 3), dtype=np.float32)
    outputs = np.ones((2, 1, 4), dtype=np.float32)
    return ReferenceData(inputs, outputs, outputs, np.zeros(0, dtype=np.int64))


def test_artifact_round_trip(tmp_path):
    out = tmp_path / "art"
    artifact = write_artifact(out, lambda path: path.write_bytes(b"lib"), {"method": "tai"}, _reference())
    loaded = load_artifact(out)
    assert loaded.manifest["method"] == "tai" and loaded.library_path.read_bytes() == b"lib"
    np.testing.assert_array_equal(loaded.reference().original_outputs, _reference().original_outputs)
    artifact.update_manifest(verification={"passed": True})
    assert load_artifact(out).manifest["verification"] == {"passed": True}


def test_failed_write_keeps_the_old_artifact(tmp_path):
    out = tmp_path / "art"
    write_artifact(out, lambda path: path.write_bytes(b"old"), {"method": "tai"}, _reference())

    def broken_export(path):
        raise RuntimeError("compiler crashed")

    with pytest.raises(RuntimeError):
        write_artifact(out, broken_export, {"method": "cp"}, _reference())
    assert load_artifact(out).library_path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["art"]  # no staging leftovers


def test_missing_or_corrupt_artifact_is_named(tmp_path):
    with pytest.raises(ModelLoadError, match="not a tvm-lowrank artifact"):
        load_artifact(tmp_path / "nothing")
    out = tmp_path / "art"
    write_artifact(out, lambda path: path.write_bytes(b"lib"), {}, _reference())
    (out / MANIFEST_FILE).write_text("{not json")
    with pytest.raises(ModelLoadError, match="corrupt"):
        load_artifact(out)
    (out / MANIFEST_FILE).write_text(json.dumps({"format_version": 99}))
    with pytest.raises(ModelLoadError, match="format 99"):
        load_artifact(out)

"""The benchmark grid and cache keys: which cells a run has, and when a finished cell is reused."""

import pytest

from tvm_lowrank.bench.cache import cell_key, database_fingerprint
from tvm_lowrank.bench.grid import FASHION_MNIST, Cell, expand_grid, resolve_model, split_list
from tvm_lowrank.database import RECORD_FILE


def test_dense_has_one_cell_per_model_and_target_and_targets_are_outermost():
    cells = expand_grid(["m"], split_list("dense, tai,tai"), ["macs:0.25", "macs:0.5"], ["t1", "t2"])
    assert cells == [Cell("m", "dense", "-", "t1"), Cell("m", "tai", "macs:0.25", "t1"),
                     Cell("m", "tai", "macs:0.5", "t1"), Cell("m", "dense", "-", "t2"),
                     Cell("m", "tai", "macs:0.25", "t2"), Cell("m", "tai", "macs:0.5", "t2")]


def test_key_changes_with_everything_a_measurement_depends_on():
    cell = Cell("m", "tai", "macs:0.25", "t")
    base = cell_key(cell, "model", "target", "none", {"repeat": 30})
    assert base == cell_key(cell, "model", "target", "none", {"repeat": 30})
    variants = [cell_key(Cell("m", "tai", "macs:0.5", "t"), "model", "target", "none", {"repeat": 30}),
                cell_key(Cell("m", "cp", "macs:0.25", "t"), "model", "target", "none", {"repeat": 30}),
                cell_key(cell, "model2", "target", "none", {"repeat": 30}),
                cell_key(cell, "model", "target2", "none", {"repeat": 30}),
                cell_key(cell, "model", "target", "db", {"repeat": 30}),
                cell_key(cell, "model", "target", "none", {"repeat": 10})]
    assert len({base, *variants}) == 7


def test_database_fingerprint_follows_its_records(tmp_path):
    assert database_fingerprint(None) == "none"
    empty = database_fingerprint(tmp_path)
    (tmp_path / RECORD_FILE).write_text("[0, []]\n")
    assert database_fingerprint(tmp_path) not in ("none", empty)


def test_models_know_their_test_set():
    assert resolve_model("vgg-fmnist").dataset == FASHION_MNIST
    assert resolve_model("vgg-fmnist", dataset="none").dataset is None
    assert resolve_model("model.onnx").dataset is None and resolve_model("model.onnx").bundled is None
    assert resolve_model("pkg.mod:factory", dataset=FASHION_MNIST).dataset == FASHION_MNIST
    with pytest.raises(ValueError, match="unknown dataset"):
        resolve_model("vgg-fmnist", dataset="imagenet")

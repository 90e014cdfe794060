"""`tvm-lowrank tune` and `compile --schedules` on the session's tuned database."""

import shutil

import pytest

from conftest import TRIALS
from tvm_lowrank.artifact import load_artifact
from tvm_lowrank.cli import main
from tvm_lowrank.errors import OutdatedDatabaseWarning

MODEL = "tune_models:two_convs"


def test_tune_rerun_then_compile_with_schedules(tuned, tmp_path, capsys):
    database = tmp_path / "db"
    shutil.copytree(tuned.database, database)
    assert main(["tune", MODEL, "--target", tuned.target.name, "--method", "dense", "--database", str(database),
                 "--trials", str(TRIALS), "--min-trials-per-task", "3"]) == 0
    printed = capsys.readouterr().out
    assert "in the database already" in printed and "0 measurements" in printed
    out = tmp_path / "artifact"
    assert main(["compile", MODEL, "--target", tuned.target.name, "--method", "dense", "--out", str(out),
                 "--schedules", str(database)]) == 0
    assert "tuned kernels: 2 of 2" in capsys.readouterr().out
    manifest = load_artifact(out).manifest
    assert manifest["schedules"]["kernels_from_database"] == 2
    assert manifest["schedules"]["outdated_kernels"] == []
    assert manifest["verification"]["passed"]


def test_compile_warns_when_the_database_predates_our_schedules(tuned, tmp_path, capsys,
                                                                 schedules_changed):
    out = tmp_path / "artifact"
    with pytest.warns(OutdatedDatabaseWarning, match="tune this model again"):
        assert main(["compile", MODEL, "--target", tuned.target.name, "--method", "dense", "--out", str(out),
                     "--schedules", str(tuned.database)]) == 0
    assert "tuned before today's default schedules (re-tune): 2 kernel(s)" in capsys.readouterr().out
    assert len(load_artifact(out).manifest["schedules"]["outdated_kernels"]) == 2


def test_tune_reports_a_damaged_database(tuned, tmp_path, capsys):
    database = tmp_path / "db"
    shutil.copytree(tuned.database, database)
    (database / "database_tuning_record.json").write_text("[0, [")
    assert main(["tune", MODEL, "--target", tuned.target.name, "--database", str(database)]) == 2
    assert "database_tuning_record.json, line 1" in capsys.readouterr().err

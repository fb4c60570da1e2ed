"""Model files beyond tests/estimators/test_persistence.py: atomic writes under failure, the
version and checksum fields, old files without a checksum, and the classical estimators."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import ldmfilter
from ldmfilter.estimators import persistence
from ldmfilter.estimators.persistence import FORMAT, FORMAT_VERSION, checksum


@pytest.fixture(scope="module")
def kalman():
    X = np.random.default_rng(0).normal(size=(40, 3)).cumsum(0)
    return ldmfilter.KalmanFilter(state_dim=2, n_iter=3).fit(X), X


def test_a_failed_write_keeps_the_previous_file_and_leaves_no_temporary(kalman, tmp_path, monkeypatch):
    model, _ = kalman
    path = model.save(tmp_path / "model.ldm")
    before = path.read_bytes()

    def broken_save(payload, target):  # writes part of the temporary file, then fails
        with open(target, "wb") as stream:
            stream.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(persistence.torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        model.save(path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.ldm"]


def test_files_carry_format_version_and_checksum(kalman, tmp_path):
    model, X = kalman
    payload = torch.load(model.save(tmp_path / "model.ldm"), weights_only=True)
    assert payload["format"] == FORMAT and payload["version"] == FORMAT_VERSION
    assert payload["checksum"] == checksum(payload)
    loaded = ldmfilter.load(tmp_path / "model.ldm")
    np.testing.assert_array_equal(loaded.filter(X).mean, model.filter(X).mean)


def test_files_without_a_checksum_still_load(kalman, tmp_path):
    """Files written before the checksum (same format version) load without the check."""
    model, X = kalman
    path = model.save(tmp_path / "model.ldm")
    payload = torch.load(path, weights_only=True)
    del payload["checksum"]
    torch.save(payload, path)
    np.testing.assert_array_equal(ldmfilter.load(path).filter(X).mean, model.filter(X).mean)


@pytest.mark.parametrize("version", [FORMAT_VERSION + 1, "2", None, 2.5])
def test_unknown_versions_are_refused_before_anything_else(kalman, tmp_path, version):
    model, _ = kalman
    path = model.save(tmp_path / "model.ldm")
    payload = torch.load(path, weights_only=True)
    payload["version"] = version  # the checksum no longer matches either: the version is reported first
    torch.save(payload, path)
    with pytest.raises(ValueError, match="newer ldmfilter"):
        ldmfilter.load(path)


@pytest.mark.parametrize("field", ["params", "schema", "estimator", "checksum"])
def test_edited_fields_are_caught_by_the_checksum(kalman, tmp_path, field):
    model, _ = kalman
    path = model.save(tmp_path / "model.ldm")
    payload = torch.load(path, weights_only=True)
    payload[field] = payload[field].replace("2", "3") if field != "estimator" else "KalmanFilter "
    if payload[field] == torch.load(path, weights_only=True)[field]:
        payload[field] += " "
    torch.save(payload, path)
    with pytest.raises(ValueError, match="damaged"):
        ldmfilter.load(path)


def test_every_truncation_is_refused_with_a_value_error(kalman, tmp_path):
    model, _ = kalman
    data = model.save(tmp_path / "model.ldm").read_bytes()
    cut = tmp_path / "cut.ldm"
    for size in np.linspace(0, len(data) - 1, 25).astype(int):
        cut.write_bytes(data[:size])
        with pytest.raises(ValueError):
            ldmfilter.load(cut)

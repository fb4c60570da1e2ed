"""Model files: exact round trip, atomic writes, refusal of foreign, corrupt, tampered or newer files."""

import subprocess
import sys

import numpy as np
import pytest
import torch

import ldmfilter
from ldmfilter.estimators.persistence import FORMAT, FORMAT_VERSION, checksum
from ldmfilter.simulate import make_dotmotion


@pytest.fixture(scope="module")
def fitted():
    data = make_dotmotion("figure8", 12, T=20, seed=0)
    model = ldmfilter.LDMFilter(max_epochs=1, verbose=False, trainer_kwargs={"max_steps": 3}).fit(data.frames)
    return model, data.frames


@pytest.mark.parametrize("kwargs", [{}, {"noise": "input", "state_dim": 4, "latent_dim": 2},
                                    {"noise": "input_full", "state_dim": 4, "latent_dim": 2}])
def test_round_trip_reproduces_filter_exactly(tmp_path, kwargs):
    data = make_dotmotion("figure8", 12, T=20, seed=1)
    model = ldmfilter.LDMFilter(max_epochs=1, verbose=False, **kwargs).fit(data.frames)
    path = model.save(tmp_path / "model.ldm")
    loaded = ldmfilter.load(path)
    for name in ("mean", "cov", "log_likelihood"):
        np.testing.assert_array_equal(getattr(model.filter(data.frames), name), getattr(loaded.filter(data.frames), name))
    np.testing.assert_array_equal(model.transform(data.frames), loaded.transform(data.frames))
    assert loaded.obs_shape_ == model.obs_shape_ and loaded.noise == model.noise


def test_loaded_model_filters_smooths_and_forecasts_without_importing_lightning(tmp_path, fitted):
    """Lightning is for training only, pandas and xarray for table input and output: a process that
    loads a model and uses it on numpy arrays imports none of them (Lightning alone costs 175 MiB and
    seconds of start-up); asking for a table then imports pandas on the spot."""
    model, frames = fitted
    path = model.save(tmp_path / "model.ldm")
    np.save(tmp_path / "frames.npy", frames[:2])
    code = (
        "import sys, numpy as np, ldmfilter\n"
        f"model = ldmfilter.load({str(path)!r})\n"
        f"frames = np.load({str(tmp_path / 'frames.npy')!r})\n"
        "result = model.filter(frames); model.smooth(frames); model.forecast(frames, 3); model.transform(frames)\n"
        "stream = model.stream(2); stream.update(frames[:, 0])\n"
        "heavy = ('lightning', 'pytorch_lightning', 'pandas', 'xarray')\n"
        "print(sorted({name.split('.')[0] for name in sys.modules} & set(heavy)))\n"
        "print(type(result.to_pandas('state')).__name__)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == ["[]", "DataFrame"]


def test_format_2_files_keep_their_absolute_noise_head(tmp_path):
    """Before format 3 the input-dependent head gave R_t itself, not relative to exp(s): a file
    of format 2 loads with that meaning, so its filter output does not change."""
    data = make_dotmotion("noisy_circle", 8, T=20, seed=2)
    model = ldmfilter.LDMFilter(state_dim=2, latent_dim=2, noise="input", max_epochs=1, verbose=False).fit(data.frames)
    path = model.save(tmp_path / "model.ldm")
    payload = torch.load(path, weights_only=True)
    payload["version"] = 2
    payload["checksum"] = checksum(payload)
    torch.save(payload, path)
    old = ldmfilter.load(path)
    assert old.noise == "input_absolute" and not old.model_.noise.scale_tied and model.model_.noise.scale_tied
    scale = float(torch.exp(model.model_.dynamics.log_scale.detach()))
    assert scale != pytest.approx(1.0, abs=1e-3)
    np.testing.assert_allclose(old.noise_variance(data.frames) * scale, model.noise_variance(data.frames), rtol=1e-5)
    np.testing.assert_array_equal(ldmfilter.load(model.save(tmp_path / "now.ldm")).filter(data.frames).mean,
                                  model.filter(data.frames).mean)


def test_save_is_atomic_and_leaves_no_temporary(tmp_path, fitted):
    model, _ = fitted
    model.save(tmp_path / "model.ldm")
    model.save(tmp_path / "model.ldm")  # overwrite in place
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.ldm"]


def test_unfitted_model_cannot_be_saved(tmp_path):
    with pytest.raises(RuntimeError, match="not fitted"):
        ldmfilter.LDMFilter().save(tmp_path / "x.ldm")


def test_truncated_file_is_refused(tmp_path, fitted):
    model, _ = fitted
    path = model.save(tmp_path / "model.ldm")
    path.write_bytes(path.read_bytes()[:400])
    with pytest.raises(ValueError, match="not a readable ldmfilter model file"):
        ldmfilter.load(path)


def test_foreign_files_are_refused(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(ValueError, match="not a readable"):
        ldmfilter.load(text)
    tensors = tmp_path / "weights.pt"
    torch.save({"weight": torch.zeros(3)}, tensors)
    with pytest.raises(ValueError, match="not an ldmfilter model file"):
        ldmfilter.load(tensors)


def test_pickled_code_is_never_run(tmp_path):
    class Exploit:
        def __reduce__(self):
            return (print, ("this must not run",))

    path = tmp_path / "evil.ldm"
    torch.save({"format": FORMAT, "version": FORMAT_VERSION, "payload": Exploit()}, path)
    with pytest.raises(ValueError, match="not a readable"):
        ldmfilter.load(path)


def test_newer_file_version_gives_a_clear_error(tmp_path, fitted):
    model, _ = fitted
    path = model.save(tmp_path / "model.ldm")
    payload = torch.load(path, weights_only=True)
    payload["version"] = FORMAT_VERSION + 1
    torch.save(payload, path)
    with pytest.raises(ValueError, match="newer ldmfilter"):
        ldmfilter.load(path)


def test_tampered_weights_are_refused(tmp_path, fitted):
    model, _ = fitted
    path = model.save(tmp_path / "model.ldm")
    payload = torch.load(path, weights_only=True)
    payload["state_dict"].pop(next(iter(payload["state_dict"])))
    torch.save(payload, path)
    with pytest.raises(ValueError, match="damaged"):
        ldmfilter.load(path)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        ldmfilter.load(tmp_path / "nope.ldm")


@pytest.mark.parametrize("readout", ["linear", "mlp"])
def test_round_trip_keeps_readouts_names_and_frequency(tmp_path, readout):
    """A DataFrame model with a target read-out: the file keeps read-outs, channel names and the step."""
    import pandas as pd

    rng = np.random.default_rng(0)
    index = pd.date_range("2024-01-01", periods=60, freq="15min", name="when")
    X = pd.DataFrame(rng.normal(size=(60, 3)), index=index, columns=["a", "b", "c"])
    Y = pd.DataFrame({"level": X.sum(axis=1).cumsum()}, index=index)
    model = ldmfilter.LDMFilter(state_dim=3, latent_dim=2, hidden=(8,), max_epochs=1, verbose=False)
    model.fit(X, targets=Y, readout=readout)
    loaded = ldmfilter.load(model.save(tmp_path / "frame.ldm"))
    assert loaded.schema_ == model.schema_ and loaded.schema_.feature_names == ("a", "b", "c")
    assert loaded.schema_.frequency == "15min" and loaded.target_names_ == ("level",)
    assert type(loaded.readouts_["targets"]) is type(model.readouts_["targets"])
    for method in ("filter", "smooth"):
        before, after = getattr(model, method)(X), getattr(loaded, method)(X)
        for space in ("state", "observations", "targets"):
            np.testing.assert_array_equal(before.space(space).mean, after.space(space).mean)
            np.testing.assert_array_equal(before.space(space).cov, after.space(space).cov)
    pd.testing.assert_frame_equal(model.forecast(X, 4).to_pandas("targets"), loaded.forecast(X, 4).to_pandas("targets"))
    with pytest.raises(ValueError, match="columns"):
        loaded.filter(X.rename(columns={"c": "d"}))

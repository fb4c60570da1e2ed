"""The nonlinear-predictor benchmark: every part runs at its --quick settings (slow); the wobbly options."""

import math
from dataclasses import replace

import numpy as np
import pytest


@pytest.mark.slow
def test_quick_nonlinear_benchmark_runs(load_benchmark):
    module = load_benchmark("nonlinear")
    results = module.main(["--quick", "--seeds", "0", "--no-write"])
    assert set(results) == {"cost", "wobbly", "forecast"}
    for rows in results["cost"].values():
        assert set(rows) == {"linear", "MLP, linearize", "MLP, unscented", "MLP, cubature"}
        assert all(seconds > 0 for seconds in rows.values())
    for row in results["wobbly"][0].values():
        assert -1.0 < row["r2"] <= 1.0 and 0.0 <= row["coverage"] <= 1.0 and math.isfinite(row["nll"])
    for rows in results["forecast"][0].values():
        for row in rows.values():
            assert set(row["scores"]) == set(module.HORIZONS)
            assert all(math.isfinite(s["nll"]) and s["crps"] > 0 for s in row["scores"].values())
    text = module.render_forecast(results["forecast"], module.QUICK)
    assert "NLL h=20" in text and "**" in text


@pytest.mark.slow
def test_rules_option_restricts_the_mlp_rows(load_benchmark):
    module = load_benchmark("nonlinear")
    results = module.main(["--quick", "--parts", "cost", "--rules", "linearize", "--no-write"])
    for rows in results["cost"].values():
        assert set(rows) == {"linear", "MLP, linearize"}
    text = module.render_cost(results["cost"], module.QUICK)
    assert "interleaved rounds" in text and "| linear | " in text and "1.00× |" in text


def test_wobbly_noise_option_reaches_only_the_kalman_models(load_benchmark):
    module = load_benchmark("nonlinear")
    for noise in ("fixed", "input", "input_full"):
        models = module.wobbly_models(replace(module.QUICK, wobbly_noise=noise), seed=0, epochs=1)
        kalman = {name: model for name, model in models.items() if model.predictor != "rnn"}
        assert len(kalman) == 2 and all(model.noise == noise for model in kalman.values())
        assert all(("input-dependent R" in name) == (noise == "input") for name in kalman)
        assert all(("input-dependent full R" in name) == (noise == "input_full") for name in kalman)
        assert module.WOBBLY_NOISE_TEXT[noise] in module.render_wobbly(
            {0: {name: {"r2": 0.9, "r2_mlp": None, "coverage": 0.9, "nll": 1.0, "fit_s": 1.0, "steps_per_s": 1.0}
                 for name in models}}, replace(module.QUICK, wobbly_noise=noise))


def test_wobbly_clip_option_reaches_only_the_kalman_models(load_benchmark):
    module = load_benchmark("nonlinear")
    models = module.wobbly_models(replace(module.QUICK, wobbly_clip=1.0), seed=0, epochs=1)
    for name, model in models.items():
        clipped = model.predictor != "rnn"
        assert (model.trainer_kwargs == {"gradient_clip_val": 1.0}) == clipped
        assert ("gradients clipped at 1" in name) == clipped


def test_calibrate_option_adds_recalibrated_rows(load_benchmark):
    module = load_benchmark("nonlinear")
    results = module.main(["--quick", "--parts", "forecast", "--forecast-data", "lorenz", "--rules", "linearize",
                           "--seeds", "0", "--calibrate", "likelihood", "coverage", "--no-write"])
    rows = results["forecast"][0]["lorenz, 1/r² = +20 dB"]
    coverage = "recalibrated to 90% coverage"
    assert list(rows) == ["linear", "linear, recalibrated", f"linear, {coverage}",
                          "MLP, linearize", "MLP, linearize, recalibrated", f"MLP, linearize, {coverage}"]
    for name in ("linear", "MLP, linearize"):
        raw = rows[name]["scores"]
        for variant in ("recalibrated", coverage):
            calibrated = rows[f"{name}, {variant}"]["scores"]
            assert all(math.isfinite(calibrated[h]["nll"]) for h in module.HORIZONS)
            assert raw[1]["crps"] != calibrated[1]["crps"]  # the factors change the spread (CRPS depends on it)
    text = module.render_forecast(results["forecast"], replace(module.QUICK, calibrate=("likelihood", "coverage")))
    assert "| linear, recalibrated |" in text and f"| linear, {coverage} |" in text
    assert "calibrate_forecast(X_val, 20" in text and "method='coverage'" in text


def test_calibrate_option_alone_means_likelihood(load_benchmark):
    module = load_benchmark("nonlinear")
    results = module.main(["--quick", "--parts", "forecast", "--forecast-data", "lorenz", "--rules", "linearize",
                           "--seeds", "0", "--calibrate", "--no-write"])
    assert list(results["forecast"][0]["lorenz, 1/r² = +20 dB"]) == [
        "linear", "linear, recalibrated", "MLP, linearize", "MLP, linearize, recalibrated"]


def test_wobbly_state_dim_and_schedule_options_reach_only_the_kalman_models(load_benchmark):
    module = load_benchmark("nonlinear")
    settings = replace(module.QUICK, wobbly_state_dim=8, wobbly_schedule="cosine")
    for name, model in module.wobbly_models(settings, seed=0, epochs=1).items():
        kalman = model.predictor != "rnn"
        assert (model.state_dim == 8 and model.schedule == "cosine") == kalman
        assert ("S=8" in name and "cosine schedule" in name) == kalman
    text = module.render_wobbly({0: {"row": {"r2": 0.9, "coverage": 0.9, "nll": 1.0, "fit_s": 1.0, "steps_per_s": 1.0}}}, settings)
    assert "state dimension S = 8" in text and "`schedule='cosine'`" in text


def test_wobbly_lr_scale_option_reaches_only_the_kalman_models(load_benchmark):
    module = load_benchmark("nonlinear")
    paper = module.LDMFilter().learning_rate
    settings = replace(module.QUICK, wobbly_lr_scale=0.5)
    for name, model in module.wobbly_models(settings, seed=0, epochs=1).items():
        kalman = model.predictor != "rnn"
        assert model.learning_rate == (0.5 * paper if kalman else paper)
        assert ("learning rate ×0.5" in name) == kalman
    text = module.render_wobbly({0: {"row": {"r2": 0.9, "coverage": 0.9, "nll": 1.0, "fit_s": 1.0, "steps_per_s": 1.0}}}, settings)
    assert "Kalman models: ×0.5 those" in text


def test_wobbly_n_init_option_reaches_only_the_kalman_models_and_logs_the_choice(load_benchmark):
    module = load_benchmark("nonlinear")
    settings = replace(module.QUICK, wobbly_n_init=3, wobbly_train=16, wobbly_test=8)
    for name, model in module.wobbly_models(settings, seed=0, epochs=1).items():
        kalman = model.predictor != "rnn"
        assert model.n_init == (3 if kalman else 1)
        assert ("best of 3 restarts" in name) == kalman
    text = module.render_wobbly({0: {"row": {"r2": 0.9, "coverage": 0.9, "nll": 1.0, "fit_s": 1.0, "steps_per_s": 1.0}}}, settings)
    assert "`n_init=3` keeps of its restarts" in text
    lines = []
    rows = module.run_wobbly_seed(settings, 0, log=lines.append, predictors=("linear",))
    assert len(rows) == 1 and any("restarts [0, 100, 200]: final loss" in line and "agreement" in line and "kept" in line for line in lines)


def test_wobbly_activation_option_reaches_only_the_mlp_predictor(load_benchmark):
    module = load_benchmark("nonlinear")
    settings = replace(module.QUICK, wobbly_activation="localized")
    for name, model in module.wobbly_models(settings, seed=0, epochs=1).items():
        localized = model.dynamics == "mlp"
        assert (model.dynamics_activation == "localized") == localized
        assert ("localized" in name) == localized
    text = module.render_wobbly({0: {"row": {"r2": 0.9, "coverage": 0.9, "nll": 1.0, "fit_s": 1.0, "steps_per_s": 1.0}}}, settings)
    assert "`dynamics_activation='localized'`" in text


def test_cost_activations_option_times_each_residual_unit(load_benchmark):
    module = load_benchmark("nonlinear")
    names = [name for name, _ in module.variants(("linearize",), ("tanh", "localized"))]
    assert names == ["linear", "MLP, linearize", "MLP, linearize, localized"]
    assert dict(module.variants(("linearize",), ("localized",)))["MLP, linearize, localized"]["dynamics_activation"] == "localized"


def test_wobbly_mlp_readout_option_adds_a_column_for_the_kalman_models(load_benchmark):
    module = load_benchmark("nonlinear")
    settings = replace(module.QUICK, wobbly_train=16, wobbly_test=4, wobbly_mlp_readout=True)
    rows = module.run_wobbly_seed(settings, 0, log=lambda *_: None, predictors=("mlp", "rnn"))
    kalman, rnn = rows.values()
    assert -1.0 < kalman["r2_mlp"] <= 1.0 and rnn["r2_mlp"] is None
    text = module.render_wobbly({0: rows}, settings)
    assert "| MLP read-out R² |" in text and "| — |" in text
    y = np.array([[0.0, 1.0], [1.0, 3.0], [2.0, 2.0]])
    assert module.r2_score(y, y) == 1.0 and module.r2_score(y, np.broadcast_to(y.mean(0), y.shape)) == 0.0


def test_multistep_and_lorenz_levels_options_reach_every_forecast_model(load_benchmark, monkeypatch):
    module = load_benchmark("nonlinear")
    built = []

    def recording(**kwargs):
        built.append(kwargs["multistep"])
        return module_ldm(**kwargs)

    module_ldm = module.LDMFilter
    monkeypatch.setattr(module, "LDMFilter", recording)
    results = module.main(["--quick", "--parts", "forecast", "--forecast-data", "lorenz", "--rules", "linearize",
                           "--seeds", "0", "--lorenz-levels", "20", "--multistep", "3", "--no-write"])
    assert list(results["forecast"][0]) == ["lorenz, 1/r² = +20 dB"]
    assert built == [3, 3]  # the linear and the MLP predictor
    text = module.render_forecast(results["forecast"], replace(module.QUICK, multistep=3))
    assert "`multistep=3`" in text and "2- to 3-step predictions" in text


def test_wobbly_moments_option_reaches_every_kalman_model(load_benchmark):
    module = load_benchmark("nonlinear")
    settings = replace(module.QUICK, wobbly_moments="unscented", wobbly_observation="clamp")
    for name, model in module.wobbly_models(settings, seed=0, epochs=1).items():
        kalman = model.predictor == "kalman"
        assert (model.moments == "unscented") == kalman
        assert name.count("unscented") == kalman
    text = module.render_wobbly({0: {"row": {"r2": 0.9, "coverage": 0.9, "nll": 1.0, "fit_s": 1.0, "steps_per_s": 1.0}}}, settings)
    assert "moment rule `moments='unscented'`" in text

"""Calibrated alarms (anomalykit.calibration, Detector.p_values / predict(alpha=, fdr=) / drift):
the formulas by hand, Benjamini-Hochberg against scipy, the false-alarm guarantee statistically
over seeded resamplings (tolerances from the binomial and the calibration set's size), the
held-out rows never trained on, save/load, export, the CLI, and the one-line refusals."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from scipy.stats import false_discovery_control

import anomalykit
from anomalykit import ConfigError, Detector, InputError, Param
from anomalykit.calibration import benjamini_hochberg, calibration_count, hold_out, p_values


class Mahalanobis(Detector):
    """Squared distance to the training mean in units of the training standard deviation: fast, and
    a monotone function of the Gaussian density, so its p-values are exact conformal ones."""

    name = "cal-maha"
    summary = "standardised squared distance to the training mean"
    params = (Param("epochs", 0, "unused", low=0),)
    supports_labels = False
    seen_rows: list[int] = []

    def _build(self, input_shape):
        self.nets["stats"] = torch.nn.Module()
        self.nets["stats"].register_buffer("mean", torch.zeros(input_shape))
        self.nets["stats"].register_buffer("std", torch.ones(input_shape))

    def _fit(self, X, y):
        type(self).seen_rows.append(X.shape[0])
        self.nets["stats"].mean.copy_(X.mean(0))
        self.nets["stats"].std.copy_(X.std(0))

    def _score(self, X):
        return ((X - self.nets["stats"].mean) / self.nets["stats"].std).flatten(1).square().sum(1)


@pytest.fixture(autouse=True, scope="module")
def registered():
    """cal-maha registered for anomalykit.load and the CLI, as a plugin would be."""
    import types

    from anomalykit import hookimpl
    from anomalykit.registry import get_registry

    reg = get_registry()
    assert reg.add_plugin(types.SimpleNamespace(anomalykit_register_methods=hookimpl(lambda register: register(Mahalanobis))),
                          name="cal-maha-plugin")
    yield
    reg.remove_plugin("cal-maha-plugin")


def gaussian(n, d=4, shift=0.0, seed=0):
    return np.random.default_rng(seed).normal(shift, 1.0, size=(n, d)).astype(np.float32)


# -- the formulas ----------------------------------------------------------------------------------
def test_p_values_by_hand():
    cal = np.array([1.0, 2.0, 3.0, 4.0])
    # scores 0, 2, 2.5, 5: calibration scores >= each: 4, 3, 2, 0 -> (1 + k) / 5
    np.testing.assert_allclose(p_values(cal, [0.0, 2.0, 2.5, 5.0]), [1.0, 0.8, 0.6, 0.2])


def test_benjamini_hochberg_by_hand_and_against_scipy():
    # sorted p 0.01, 0.03, 0.04, 0.2 against i q / 4 = 0.025, 0.05, 0.075, 0.1: the first three
    assert benjamini_hochberg(np.array([0.01, 0.04, 0.03, 0.2]), 0.1).tolist() == [1, 1, 1, 0]
    # a p-value above its own line but below a later one is still flagged (the step-up rule)
    assert benjamini_hochberg(np.array([0.03, 0.035, 0.5]), 0.1).tolist() == [1, 1, 0]
    assert benjamini_hochberg(np.array([0.5, 0.9]), 0.1).tolist() == [0, 0]
    rng = np.random.default_rng(0)
    for _ in range(50):
        p = np.r_[rng.uniform(size=40), rng.uniform(0, 0.01, size=int(rng.integers(0, 10)))]
        q = float(rng.uniform(0.01, 0.3))
        np.testing.assert_array_equal(benjamini_hochberg(p, q), (false_discovery_control(p, method="bh") <= q).astype(int))


@pytest.mark.parametrize("calibration, n, count", [(0.2, 100, 20), (0.25, 10, 2), (0.001, 50, 1), (7, 50, 7), (0, 50, 0)])
def test_calibration_count(calibration, n, count):
    assert calibration_count(calibration, n) == count


def test_calibration_count_refuses_what_leaves_nothing_or_is_not_a_count():
    with pytest.raises(InputError, match="holds out 10 of the 10 normal rows"):
        calibration_count(10, 10)
    with pytest.raises(ConfigError, match="a fraction in \\(0, 1\\) or a whole number"):
        calibration_count(2.5, 10)


def test_hold_out_takes_seeded_normal_rows_only():
    X = torch.arange(20.0).reshape(10, 2)
    labels = torch.tensor([0, 0, 1, 0, 0, 1, 0, 0, 0, 0])
    train, train_labels, cal = hold_out(X, labels, 0.25, seed=3)
    assert cal.shape == (2, 2) and train.shape == (8, 2) and train_labels.tolist().count(1) == 2
    cal_rows = set(cal[:, 0].tolist())
    assert not cal_rows & set(train[:, 0].tolist()) and cal_rows <= {0.0, 2.0, 6.0, 8.0, 12.0, 14.0, 16.0, 18.0}
    again = hold_out(X, labels, 0.25, seed=3)[2]
    assert torch.equal(again, cal) and not torch.equal(hold_out(X, labels, 0.25, seed=4)[2], cal)


# -- the detector API ------------------------------------------------------------------------------
def test_fit_trains_without_the_calibration_rows_and_scores_them_after():
    X = gaussian(200)
    Mahalanobis.seen_rows.clear()
    det = Mahalanobis(calibration=0.2, seed=1).fit(X)
    assert Mahalanobis.seen_rows == [160] and det.decision_scores_.shape == (160,)
    train, _, cal = hold_out(torch.from_numpy(X), None, 0.2, seed=1)
    mean, std = train.mean(0), train.std(0)  # the scaling and the model: training rows only
    expected = (((cal - mean) / std) ** 2).sum(1).double().numpy()
    det_none = Mahalanobis(preprocess="none", calibration=0.2, seed=1).fit(X)
    np.testing.assert_allclose(det_none.calibration_scores_, np.sort(expected), rtol=1e-5)
    assert np.all(np.diff(det.calibration_scores_) >= 0)


def test_without_calibration_the_alarms_refuse_in_one_line():
    det = Mahalanobis().fit(gaussian(50))
    assert det.calibration_scores_ is None
    for call in (lambda: det.p_values(gaussian(3)), lambda: det.predict(gaussian(3), alpha=0.1),
                 lambda: det.predict(gaussian(3), fdr=0.1), lambda: det.drift(gaussian(3))):
        with pytest.raises(ConfigError, match="fitted without them; create it with calibration=0.2") as err:
            call()
        assert "\n" not in str(err.value)
    cal = Mahalanobis(calibration=10).fit(gaussian(50))
    with pytest.raises(ConfigError, match="alpha must be in \\(0, 1\\)"):
        cal.predict(gaussian(3), alpha=1.5)
    with pytest.raises(ConfigError, match="not both"):
        cal.predict(gaussian(3), alpha=0.1, fdr=0.1)


def test_predict_with_alpha_and_fdr():
    det = Mahalanobis(calibration=0.5, seed=2).fit(gaussian(400))
    X = np.r_[gaussian(50, seed=5), gaussian(10, shift=6.0, seed=6)]
    p = det.p_values(X)
    np.testing.assert_array_equal(det.predict(X, alpha=0.05), (p <= 0.05).astype(int))
    np.testing.assert_array_equal(det.predict(X, fdr=0.1), benjamini_hochberg(p, 0.1))
    assert det.predict(X, fdr=0.1)[50:].all()  # the far rows are found
    np.testing.assert_array_equal(det.predict(X), (det.score_samples(X) > det.threshold_).astype(int))  # unchanged


@pytest.mark.parametrize("alpha", [0.01, 0.05, 0.1])
def test_the_false_alarm_rate_is_at_most_alpha_over_resamplings(alpha):
    """200 seeded resamplings: train 300, calibrate on n = 199, test 200 fresh normal rows. Conformal
    p-values give alpha - 1/(n + 1) <= E[false-alarm rate] <= alpha; the tolerance is 4 standard
    errors of the mean of 200 rates, each with variance alpha(1 - alpha) (1/m + 1/(n + 2))."""
    n, m, R = 199, 200, 200
    rates = []
    for r in range(R):
        det = Mahalanobis(calibration=n, seed=r, preprocess="none").fit(gaussian(300 + n, seed=10_000 + r))
        rates.append(det.predict(gaussian(m, seed=20_000 + r), alpha=alpha).mean())
    tol = 4 * math.sqrt(alpha * (1 - alpha) * (1 / m + 1 / (n + 2)) / R)
    floor = math.floor(alpha * (n + 1)) / (n + 1)  # the exact conformal false-alarm rate
    assert floor - tol <= np.mean(rates) <= alpha + tol, (np.mean(rates), floor, alpha, tol)


def test_bh_controls_the_false_discovery_rate_on_mixed_batches():
    """Normal rows with 10% far rows: the realised FDR over 100 resamplings stays at or below q
    (BH on conformal p-values controls it at q times the share of normal rows), with power."""
    q, fdps, power = 0.1, [], []
    for r in range(100):
        det = Mahalanobis(calibration=300, seed=r, preprocess="none").fit(gaussian(600, seed=30_000 + r))
        X = np.r_[gaussian(180, seed=40_000 + r), gaussian(20, shift=2.5, seed=50_000 + r)]
        flags = det.predict(X, fdr=q)
        false = int(flags[:180].sum())
        fdps.append(false / max(int(flags.sum()), 1))
        power.append(flags[180:].mean())
    se = np.std(fdps) / math.sqrt(len(fdps))
    assert np.mean(fdps) <= q + 3 * se, (np.mean(fdps), se)
    assert np.mean(power) > 0.5


def test_drift_finds_a_shifted_batch_and_not_a_like_one():
    det = Mahalanobis(calibration=300, seed=0, preprocess="none").fit(gaussian(800))
    same = det.drift(gaussian(300, seed=7))
    moved = det.drift(gaussian(300, shift=0.4, seed=8))
    assert not same.drifted() and 0.35 < same.mean_p_value < 0.65 and same.n == 300 and same.n_calibration == 300
    assert moved.drifted() and moved.mean_p_value < same.mean_p_value
    with pytest.raises(InputError, match="at least 2 rows"):
        det.drift(gaussian(1))


def test_save_load_and_export_keep_the_p_values(tmp_path):
    from anomalykit.export import load_scorer

    X = gaussian(300)
    det = Mahalanobis(calibration=0.3, seed=3).fit(X)
    new = np.r_[gaussian(40, seed=9), gaussian(5, shift=3.0, seed=10)]
    again = anomalykit.load(det.save(tmp_path / "m.pt"))
    np.testing.assert_array_equal(again.calibration_scores_, det.calibration_scores_)
    np.testing.assert_array_equal(again.p_values(new), det.p_values(new))
    for name in ("m.onnx", "m.torchscript.pt"):
        scorer = load_scorer(det.export(tmp_path / name))
        assert scorer.calibration_rows == len(det.calibration_scores_)
        np.testing.assert_array_equal(scorer.p_values(new), p_values(det.calibration_scores_, scorer.score_samples(new)))
        np.testing.assert_allclose(scorer.p_values(new), det.p_values(new), atol=1.0 / (len(det.calibration_scores_) + 1))
    plain = load_scorer(Mahalanobis().fit(X).export(tmp_path / "plain.onnx"))
    with pytest.raises(ConfigError, match="exported from a model fitted without calibration rows"):
        plain.p_values(new)


def test_the_cli_scores_with_p_values_and_checks_drift(tmp_path):
    from anomalykit.cli import cli

    det = Mahalanobis(calibration=0.3, seed=0).fit(gaussian(300))
    det.save(tmp_path / "m.pt")
    data = np.r_[gaussian(30, seed=11), gaussian(3, shift=6.0, seed=12)]
    np.save(tmp_path / "x.npy", data)
    runner = CliRunner()
    res = runner.invoke(cli, ["score", str(tmp_path / "m.pt"), str(tmp_path / "x.npy"), "--alpha", "0.05",
                              "--out", str(tmp_path / "s.csv")])
    assert res.exit_code == 0, res.output
    lines = (tmp_path / "s.csv").read_text().splitlines()
    assert lines[0] == "score,p_value,flag" and len(lines) == 34
    p = np.array([float(line.split(",")[1]) for line in lines[1:]])
    np.testing.assert_allclose(p, det.p_values(data), rtol=1e-8)
    assert [int(line.split(",")[2]) for line in lines[1:]] == (p <= 0.05).astype(int).tolist()
    np.save(tmp_path / "moved.npy", gaussian(200, shift=1.0, seed=14))
    res = runner.invoke(cli, ["drift", str(tmp_path / "m.pt"), str(tmp_path / "moved.npy")])
    assert res.exit_code == 1 and res.stdout.startswith("drift: KS statistic")
    np.save(tmp_path / "same.npy", gaussian(100, seed=13))
    res = runner.invoke(cli, ["drift", str(tmp_path / "m.pt"), str(tmp_path / "same.npy")])
    assert res.exit_code == 0 and res.stdout.startswith("no drift")
    plain = tmp_path / "plain.pt"
    Mahalanobis().fit(gaussian(50)).save(plain)
    res = runner.invoke(cli, ["score", str(plain), str(tmp_path / "x.npy"), "--fdr", "0.1"])
    assert res.exit_code == 2 and "fitted without them" in res.stderr and res.stderr.count("\n") == 1

"""Mixed precision (anomalykit.precision): where the autocast regions are, what stays float32, the
refusals, and the surfaces (CLI, checkpoints, exports)."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import anomalykit
from anomalykit import CheckpointError, ConfigError, Detector, InputError, Param
from anomalykit import ops
from anomalykit import precision as P

pytestmark = pytest.mark.usefixtures("one_thread")


class Probe(Detector):
    """A linear autoencoder that records the autocast state its step and its score see."""

    name = "prec-probe"
    summary = "records the autocast state"
    params = (Param("epochs", 2, "epochs", low=0),)
    supports_labels = False
    seen: dict[str, list] = {}

    def _build(self, input_shape):
        d = int(np.prod(input_shape))
        self.nets["ae"] = torch.nn.Sequential(torch.nn.Linear(d, 4), torch.nn.Linear(4, d))

    def _fit(self, X, y):
        ae = self.nets["ae"]
        trainer = self.trainer(optimizers={"ae": torch.optim.Adam(ae.parameters(), lr=1e-2)})

        def step(x, ctx):
            out = ae(x.flatten(1))
            type(self).seen.setdefault("step", []).append((torch.is_autocast_enabled("cpu"), out.dtype))
            return {"loss": ctx.update("ae", (out - x.flatten(1)).square().mean())}

        trainer.run(X, step)

    def _score(self, X):
        out = self.nets["ae"](X.flatten(1))
        type(self).seen.setdefault("score", []).append((torch.is_autocast_enabled("cpu"), out.dtype))
        return (out - X.flatten(1)).square().sum(1)


def rows(n=64, seed=0):
    return np.random.default_rng(seed).normal(size=(n, 6)).astype(np.float32)


def test_bf16_mixed_runs_steps_and_scoring_under_autocast_with_float32_weights(tmp_path):
    Probe.seen = {}
    det = Probe(precision="bf16-mixed", batch_size=16).fit(rows())
    assert set(Probe.seen["step"]) == {(True, torch.bfloat16)}
    assert set(Probe.seen["score"]) == {(True, torch.bfloat16)}
    assert all(p.dtype == torch.float32 for p in det.nets.parameters())
    scores = det.score_samples(rows(10, seed=1))
    assert scores.dtype == np.float64 and np.isfinite(scores).all()
    saved = torch.load(det.save(tmp_path / "m.pt"), weights_only=True)
    assert {t.dtype for t in saved["nets"].values()} == {torch.float32} and saved["params"]["precision"] == "bf16-mixed"
    Probe.seen = {}
    Probe(batch_size=16).fit(rows())
    assert set(Probe.seen["step"]) == {(False, torch.float32)} and set(Probe.seen["score"]) == {(False, torch.float32)}


def test_bf16_scores_are_close_to_the_float32_scores_of_the_same_weights():
    det = Probe(precision="bf16-mixed", batch_size=16).fit(rows())
    X = rows(20, seed=2)
    bf16 = det.score_samples(X)
    det.set_params(precision="32")
    f32 = det.score_samples(X)
    assert not np.array_equal(bf16, f32)
    np.testing.assert_allclose(bf16, f32, rtol=0.05, atol=0.05 * np.abs(f32).max())


def test_16_mixed_needs_cuda_and_unknown_precisions_are_refused():
    with pytest.raises(ConfigError, match="precision=16-mixed needs a CUDA device") as err:
        Probe(precision="16-mixed", device="cpu").fit(rows())
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="parameter 'precision' must be one of 32, bf16-mixed, 16-mixed"):
        Probe(precision="fp8")


def test_emulated_bf16_warns_once(monkeypatch):
    monkeypatch.setattr(P, "cpu_bf16_units", lambda: "")
    monkeypatch.setattr(P, "_warned_emulated", False)
    with pytest.warns(RuntimeWarning, match="this CPU has no bfloat16 units .* emulated and slower") as caught:
        Probe(precision="bf16-mixed").fit(rows())
    assert len(caught) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Probe(precision="bf16-mixed").fit(rows())


def test_the_bf16_units_come_from_cpuinfo_and_a_capped_onednn(monkeypatch, tmp_path):
    P.cpu_bf16_units.cache_clear()
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert P.cpu_bf16_units() == ""
    P.cpu_bf16_units.cache_clear()
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA")
    flags = open("/proc/cpuinfo").read() if __import__("os").path.exists("/proc/cpuinfo") else ""
    expected = "amx_bf16" if " amx_bf16" in flags else ("avx512_bf16" if " avx512_bf16" in flags else "")
    assert P.cpu_bf16_units() == expected
    P.cpu_bf16_units.cache_clear()


def test_resuming_under_another_precision_is_refused(tmp_path):
    Probe(batch_size=16).fit(rows(), checkpoint_dir=tmp_path)
    with pytest.raises(CheckpointError, match=r"different parameters \(precision\)"):
        Probe(batch_size=16, precision="bf16-mixed").fit(rows(), checkpoint_dir=tmp_path, resume=True)


def test_spectral_norm_runs_its_power_iteration_outside_autocast(monkeypatch):
    """On CUDA autocast would run the power iteration's matrix-vector products in float16; the
    parametrization leaves the autocast region for it (checked here by the state it runs in)."""
    from anomalykit.nn import SpectralNorm, maybe_sn

    states = []
    plain = SpectralNorm._power_method

    def recording(self, weight_mat, n):
        states.append((torch.is_autocast_enabled("cpu"), weight_mat.dtype))
        return plain(self, weight_mat, n)

    monkeypatch.setattr(SpectralNorm, "_power_method", recording)
    layer = maybe_sn(torch.nn.Linear(5, 3), True)
    x = torch.randn(4, 5, requires_grad=True)
    for speedups in ("0", "1"):
        monkeypatch.setenv("ANOMALYKIT_SPEEDUPS", speedups)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = layer(x)
        assert out.dtype == torch.bfloat16 and layer.weight.dtype == torch.float32
    assert states and set(states) == {(False, torch.float32)}
    sn = layer.parametrizations.weight[0]
    assert sn._u.dtype == torch.float32 and sn._v.dtype == torch.float32


def test_full_precision_leaves_autocast_for_its_block():
    a, b = torch.randn(3, 3), torch.randn(3, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.mm(a, b).dtype == torch.bfloat16
        with P.full_precision("cpu"):
            assert torch.mm(a, b).dtype == torch.float32
        assert torch.mm(a, b).dtype == torch.bfloat16
    with P.full_precision("cpu"):
        assert torch.mm(a, b).dtype == torch.float32


def test_the_fused_ops_promote_mixed_inputs_only_under_autocast():
    a = torch.randn(3, 4, dtype=torch.bfloat16)
    b = torch.randn(3, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = ops.pair_feature_l1(a, b)
        mixed = ops.simplex_mix(torch.randn(4, 2, dtype=torch.bfloat16), torch.tensor([[0, 1]]),
                                           torch.tensor([[0.5, 0.5]]))
    assert out.dtype == torch.float32 and mixed.dtype == torch.float32
    torch.testing.assert_close(out, (a.float() - b).abs().sum(1))
    with pytest.raises(InputError, match="same dtype"):
        ops.pair_feature_l1(a, b)


def test_exports_of_a_bf16_model_are_float32_and_match_its_float32_scores(tmp_path):
    from anomalykit.export import load_scorer

    det = Probe(precision="bf16-mixed", batch_size=16).fit(rows())
    scorer = load_scorer(det.export(tmp_path / "m.pt"))
    assert det.hp.precision == "bf16-mixed"  # restored after the export
    X = rows(12, seed=3)
    det.set_params(precision="32")
    np.testing.assert_allclose(scorer.score_samples(X), det.score_samples(X), rtol=1e-5, atol=1e-6)


def test_the_cli_takes_precision_and_info_names_the_bf16_hardware(tmp_path):
    from click.testing import CliRunner

    from anomalykit.cli import cli

    res = CliRunner().invoke(cli, ["run", "ama", "--epochs", "1", "--precision", "bf16-mixed", "--set", "width=8",
                                   "--out", str(tmp_path / "run"), "-q"])
    assert res.exit_code == 0, res.output
    import json

    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["params"]["precision"] == "bf16-mixed"
    info = CliRunner().invoke(cli, ["info"]).stdout
    assert "bfloat16: " + ("native (" + P.cpu_bf16_units() + ")" if P.cpu_bf16_units() else "emulated") in info

"""Export to ONNX / TorchScript (anomalykit.export): parity with score_samples, fresh-process
scoring without anomalykit, refusals, the CLI.

Each method is fitted once, tiny (conftest.TINY_PARAMS), on 8x8 digits of class 0; "held-out"
rows are the other digits. Parity is |exported - score_samples| <= 1e-4 x max(|score|, the
largest score of the batch): relative, but to the scores' scale, because AMA's −log A-score
crosses 0 and a per-row relative error is undefined there.
"""
import importlib
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

import anomalykit
from anomalykit import ConfigError, Detector, ExportError, NotFittedError, Param
from anomalykit.cli import cli
from anomalykit.export import ExportedScorer, is_exported_scorer, load_scorer

from conftest import tiny_params

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.*` is deprecated:DeprecationWarning")

#: Methods that export in both formats, and ADGAN (TorchScript only: gradient steps in its score).
BOTH = ("ama", "mae-simplex", "csi-aae", "pca-recon")
TORCHSCRIPT_ONLY = ("adgan",)
RTOL = 1e-4


def close(got, ref, rtol=RTOL):
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    assert got.shape == ref.shape
    tol = rtol * np.maximum(np.abs(ref), np.abs(ref).max())
    worst = float((np.abs(got - ref) / tol).max())
    assert worst <= 1.0, f"deviation {worst:.2f} x the allowed {rtol:g} (relative)"


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    images = d.images.astype(np.float32)[:, None]  # (N, 1, 8, 8), values 0..16
    train = images[d.target == 0][:120]
    held_out = images[d.target != 0][:64]
    return train, held_out


@pytest.fixture(scope="module")
def registry_with_pca():
    from anomalykit.registry import get_registry

    reg = get_registry()
    added = "pca-recon" not in reg.methods
    if added:
        assert reg.add_plugin(importlib.import_module("anomalykit_pca"), name="pca-recon-export-test")
    yield reg
    if added:
        reg.remove_plugin("pca-recon-export-test")


@pytest.fixture(scope="module")
def fitted(registry_with_pca, digits, one_thread):
    """method -> a tiny fitted detector (fitted on first use)."""
    train, _ = digits
    cache = {}

    def get(method):
        if method not in cache:
            cache[method] = anomalykit.load_method(method, **tiny_params(method), device="cpu").fit(train)
        return cache[method]

    return get


@pytest.fixture(scope="module")
def exported(fitted, tmp_path_factory):
    """(method, format) -> path of the exported file (exported on first use)."""
    folder = tmp_path_factory.mktemp("exported")
    cache = {}

    def get(method, fmt):
        if (method, fmt) not in cache:
            path = folder / f"{method}.{'onnx' if fmt == 'onnx' else 'pt'}"
            assert fitted(method).export(path, format=fmt) == path
            cache[method, fmt] = path
        return cache[method, fmt]

    return get


def run_onnx(path, x):
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": np.ascontiguousarray(x, dtype=np.float32)})[0]


def run_torchscript(path, x):
    module = torch.jit.load(str(path))
    with torch.no_grad():
        return module(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))).numpy()


RUN = {"onnx": run_onnx, "torchscript": run_torchscript}
CASES = [(m, f) for m in BOTH for f in ("onnx", "torchscript")] + [(m, "torchscript") for m in TORCHSCRIPT_ONLY]


@pytest.mark.parametrize("method, fmt", CASES)
def test_exported_scores_match_score_samples_at_two_batch_sizes(method, fmt, fitted, exported, digits):
    _, held_out = digits
    det, path = fitted(method), exported(method, fmt)
    reference = det.score_samples(held_out)
    for n in (5, len(held_out)):  # two batch sizes, neither the traced one
        out = RUN[fmt](path, held_out[:n])
        assert out.shape == (n,) and out.dtype == np.float32
        close(out, reference[:n])
    # the scorer API on top of the graph: float64 scores, the checkpoint's threshold and predictions
    scorer = load_scorer(path)
    assert scorer.method == method and scorer.input_shape_ == det.input_shape_ and scorer.threshold_ == det.threshold_
    scores = scorer.score_samples(held_out)
    assert scores.dtype == np.float64
    close(scores, reference)
    flags, expected = scorer.predict(held_out), det.predict(held_out)
    near = np.abs(reference - det.threshold_) <= RTOL * np.abs(reference).max()
    np.testing.assert_array_equal(flags[~near], expected[~near])


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_exported_graph_scores_in_a_fresh_process_without_anomalykit(fmt, fitted, exported, digits, tmp_path):
    """One subprocess per format loads every exported file with torch.jit.load / onnxruntime
    alone (no anomalykit, no plugin package; ONNX not even torch) and scores held-out rows."""
    _, held_out = digits
    methods = [m for m, f in CASES if f == fmt]
    np.save(tmp_path / "x.npy", held_out)
    files = {m: str(exported(m, fmt)) for m in methods}
    if fmt == "onnx":
        body = """
            import onnxruntime as ort
            for name, path in files.items():
                session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
                out[name] = session.run(None, {"x": x[:5]})[0].tolist() + session.run(None, {"x": x})[0].tolist()
        """
    else:
        body = """
            import torch
            for name, path in files.items():
                module = torch.jit.load(path)
                with torch.no_grad():
                    out[name] = module(torch.from_numpy(x[:5])).tolist() + module(torch.from_numpy(x)).tolist()
        """
    code = textwrap.dedent("""
        import json, sys
        import numpy as np
        files = json.loads(sys.argv[1]); x = np.load(sys.argv[2]); out = {}
    """) + textwrap.dedent(body) + textwrap.dedent("""
        loaded = sorted(k for k in sys.modules if k.split(".")[0] in ("anomalykit", "anomalykit_plugins", "anomalykit_pca")
                        or (k == "torch" and sys.argv[3] == "onnx"))
        print(json.dumps({"scores": out, "loaded": loaded}))
    """)
    res = subprocess.run([sys.executable, "-c", code, json.dumps(files), str(tmp_path / "x.npy"), fmt],
                         capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    result = json.loads(res.stdout.strip().splitlines()[-1])
    assert result["loaded"] == []  # neither anomalykit nor a plugin package (nor torch, for ONNX) was imported
    for method in methods:
        reference = fitted(method).score_samples(held_out)
        close(result["scores"][method], np.r_[reference[:5], reference])


def test_graphs_hold_reference_math_only(exported):
    """No anomalykit custom op in a TorchScript graph, no custom ONNX domain: self-contained
    (the exporter also refuses a recorded graph with an ``anomalykit::`` op)."""
    import onnx

    for method in BOTH:
        model = onnx.load(str(exported(method, "onnx")))
        assert {op.domain for op in model.opset_import} <= {"", "ai.onnx"}
        assert all(node.domain in ("", "ai.onnx") for node in model.graph.node)
    for method in BOTH + TORCHSCRIPT_ONLY:
        kinds = {n.kind() for n in torch.jit.load(str(exported(method, "torchscript"))).inlined_graph.nodes()}
        assert not [k for k in kinds if k.startswith("anomalykit::")], kinds


def test_exported_file_keeps_the_fitted_constants(fitted, exported):
    """The preprocessor and the method's fitted state travel inside the file (nothing is read
    from the checkpoint): the metadata says so and the CSI-AAE feature bank is a graph constant."""
    scorer = ExportedScorer(exported("csi-aae", "onnx"))
    assert scorer.meta["preprocess"] == fitted("csi-aae").preprocessor_.kind == "range"
    assert scorer.meta["ops"] == "reference" and scorer.meta["batch_size"] is None
    import onnx

    bank = fitted("csi-aae")._bank  # (N, 4 rotations, d) unit training features
    sizes = {int(np.prod(init.dims)) for init in onnx.load(str(exported("csi-aae", "onnx"))).graph.initializer}
    assert bank.numel() in sizes, sizes


@pytest.mark.parametrize("params", [
    dict(theta_copies="sample"),
    dict(theta_copies="none", score="latent-prior"),
    dict(scoring="vmap"),
    dict(scoring="reference"),
    dict(score="loss"),
    dict(score="critic"),
    dict(score="critic-gaussian"),
    dict(score="residual-gaussian"),
])
def test_adgan_scoring_variants_export_to_torchscript(params, registry_with_pca, digits, tmp_path, one_thread):
    train, held_out = digits
    det = anomalykit.load_method("adgan", **tiny_params("adgan", **params), device="cpu").fit(train[:64])
    path = det.export(tmp_path / "adgan.pt")
    reference = det.score_samples(held_out[:20])
    close(run_torchscript(path, held_out[:20]), reference)
    # a one-channel image batch is contiguous whatever its channel stride; numpy arrays come with
    # any (here 1): the recorded graph must not depend on it (views are recorded as reshapes)
    x = torch.from_numpy(held_out[:20]).clone()
    odd = torch.as_strided(x, x.shape, (64, 1, 8, 1))
    with torch.no_grad():
        close(torch.jit.load(str(path))(odd).numpy(), reference)


@pytest.mark.parametrize("score", ["critic-gaussian", "critic"])
def test_adgan_scores_without_search_export_to_onnx(score, registry_with_pca, digits, tmp_path, one_thread):
    """The critic's own scores (critic-gaussian, ADGAN's default, and critic) are a forward pass:
    no gradient steps, so ONNX is not refused, and the graph scores as the model does."""
    train, held_out = digits
    det = anomalykit.load_method("adgan", **tiny_params("adgan", score=score), device="cpu").fit(train[:64])
    assert det.score_needs_grad is False
    reference = det.score_samples(held_out[:20])
    close(run_onnx(det.export(tmp_path / "adgan.onnx"), held_out[:20]), reference)


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_csi_aae_gaussian_score_exports(fmt, registry_with_pca, digits, tmp_path, one_thread):
    """score=gaussian: the per-shift Gaussians are constants of the graph, which scores as the model does."""
    train, held_out = digits
    det = anomalykit.load_method("csi-aae", **tiny_params("csi-aae", score="gaussian"), device="cpu").fit(train[:64])
    reference = det.score_samples(held_out[:20])
    run = run_onnx if fmt == "onnx" else run_torchscript
    close(run(det.export(tmp_path / ("csi.onnx" if fmt == "onnx" else "csi.pt")), held_out[:20]), reference)


def test_adgan_onnx_is_refused_with_one_line(fitted, tmp_path):
    with pytest.raises(ExportError) as err:
        fitted("adgan").export(tmp_path / "adgan.onnx")
    message = str(err.value)
    assert "\n" not in message and "gradient steps" in message and "torchscript" in message
    assert not (tmp_path / "adgan.onnx").exists()


def test_fixed_batch_size(fitted, digits, tmp_path):
    _, held_out = digits
    det = fitted("mae-simplex")
    path = tmp_path / "fixed.onnx"
    det.export(path, batch_size=8)
    import onnxruntime as ort

    shape = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).get_inputs()[0].shape
    assert shape == [8, 1, 8, 8]
    scorer = load_scorer(path)
    assert scorer.batch_size == 8
    close(scorer.score_samples(held_out[:13]), det.score_samples(held_out[:13]))  # 8 + 5 padded rows


def test_exported_scorer_reads_lazy_rows_a_batch_at_a_time(fitted, exported, digits, tmp_path):
    from conftest import counting_npy_rows

    _, held_out = digits
    np.save(tmp_path / "x.npy", held_out)
    rows = counting_npy_rows(tmp_path / "x.npy")
    scorer = load_scorer(exported("mae-simplex", "torchscript"))
    scorer.score_batch_size = 16
    want = scorer.score_samples(held_out)
    np.testing.assert_array_equal(scorer.score_samples(rows), want)
    np.testing.assert_array_equal(scorer.score_samples(np.load(tmp_path / "x.npy", mmap_mode="r")), want)
    reads = [len(r) for r in rows.reads]
    assert sum(reads) == len(held_out) and max(reads) == 16


def test_uint8_images_keep_their_preprocessor_inside(registry_with_pca, digits, tmp_path):
    train, held_out = digits
    to_uint8 = lambda a: (a * 15).astype(np.uint8)  # noqa: E731
    det = anomalykit.load_method("pca-recon", n_components=4).fit(to_uint8(train))
    assert det.preprocessor_.kind == "uint8"
    import onnxruntime as ort

    X = to_uint8(held_out)
    ref = det.score_samples(X)
    for fmt, name in (("onnx", "u8.onnx"), ("torchscript", "u8.pt")):
        path = det.export(tmp_path / name)
        if fmt == "onnx":  # the graph takes what fit took: uint8
            session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            assert session.get_inputs()[0].type == "tensor(uint8)"
            close(session.run(None, {"x": X})[0], ref)
        else:  # TorchScript casts inside: uint8 or the same values as float32
            close(torch.jit.load(str(path))(torch.from_numpy(X)).numpy(), ref)
            close(RUN[fmt](path, X.astype(np.float32)), ref)
        scorer = load_scorer(path)
        close(scorer.score_samples(X), ref)
        close(scorer.score_samples(X.astype(np.float32)), ref)  # integral floats 0..255 are converted
        with pytest.raises(anomalykit.InputError, match="fitted on uint8 images"):
            scorer.score_samples(X.astype(np.float32) + 0.5)


def test_tabular_rows_with_robust_scaling(fitted, registry_with_pca, blobs, tmp_path, one_thread):
    X, _ = blobs
    det = anomalykit.load_method("ama", **tiny_params("ama"), device="cpu").fit(X[:200].numpy() * 50 + 7)
    assert det.preprocessor_.kind == "robust"
    rows = X.numpy() * 50 + 7
    for fmt, name in (("onnx", "rows.onnx"), ("torchscript", "rows.pt")):
        path = det.export(tmp_path / name)
        close(RUN[fmt](path, rows[:3]), det.score_samples(rows[:3]))
        close(RUN[fmt](path, rows), det.score_samples(rows))


# -- third-party plugins that cannot be traced -------------------------------------------------
class _Linear(Detector):
    name = "linear-test"
    summary = "a linear score (test)"
    params = (Param("epochs", 0, "unused", low=0),)

    def _build(self, input_shape):
        self.nets["lin"] = nn.Linear(int(np.prod(input_shape)), 1)

    def _fit(self, X, y):
        pass

    def _score(self, X):
        return self.nets["lin"](X.reshape(X.shape[0], -1)).squeeze(1)


class _NumpyRoundTrip(_Linear):
    name = "numpy-test"

    def _score(self, X):  # leaves torch: a tracer records a constant of the traced batch
        return torch.from_numpy(super()._score(X).detach().numpy() * 2.0)


class _Branchy(_Linear):
    name = "branchy-test"

    def _score(self, X):  # a branch on tensor values: a trace would keep whichever branch it saw
        s = super()._score(X)
        return s if s.mean() > 0 else -s


class _Noisy(_Linear):
    name = "noisy-test"

    def _score(self, X):  # a random draw in the score
        s = super()._score(X)
        return s + 1e-9 * torch.rand_like(s)


class _NativeOp(_Linear):
    name = "native-op-test"

    def _score(self, X):  # calls anomalykit's native op directly, past the front-end's switch
        s = super()._score(X).unsqueeze(1)
        return torch.ops.anomalykit.pair_feature_l1(s, torch.zeros_like(s))


class _Declared(_Linear):
    name = "declared-test"
    export_unsupported = "its score queries a remote service"


@pytest.mark.parametrize("cls, fmt, fragment", [
    (_Branchy, "torchscript", "could not be exported to torchscript (torch.export: "),
    (_Branchy, "onnx", "could not be exported to onnx"),
    (_NumpyRoundTrip, "torchscript", "depends on the traced batch size"),
    (_Noisy, "torchscript", "random numbers"),
    (_Noisy, "onnx", "random numbers"),
    (_Declared, "onnx", "declared-test cannot be exported: its score queries a remote service"),
])
def test_untraceable_scores_are_refused_with_one_line(cls, fmt, fragment, blobs, tmp_path):
    X, _ = blobs
    det = cls().fit(X[:50])
    path = tmp_path / ("m.onnx" if fmt == "onnx" else "m.pt")
    with pytest.raises(ExportError) as err:
        det.export(path)
    assert "\n" not in str(err.value) and fragment in str(err.value), str(err.value)
    assert not path.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.native("pair_feature_l1")
@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_a_native_op_in_the_graph_is_refused(fmt, blobs, tmp_path):
    X, _ = blobs
    det = _NativeOp().fit(X[:50])
    with pytest.raises(ExportError) as err:
        det.export(tmp_path / ("m.pt" if fmt == "torchscript" else "m.onnx"))
    assert "\n" not in str(err.value)
    if fmt == "torchscript":
        assert "calls anomalykit's native op(s) anomalykit::pair_feature_l1" in str(err.value)
    assert not list(tmp_path.iterdir())


def test_a_plain_third_party_detector_exports(blobs, tmp_path):
    X, _ = blobs
    det = _Linear().fit(X[:50])
    for name in ("lin.onnx", "lin.pt"):
        close(load_scorer(det.export(tmp_path / name)).score_samples(X), det.score_samples(X))
    # numpy inside _score: the ONNX capture (TorchDynamo) turns it into tensor ops
    det = _NumpyRoundTrip().fit(X[:50])
    close(load_scorer(det.export(tmp_path / "np.onnx")).score_samples(X), det.score_samples(X))


def test_every_installed_method_exports_or_is_refused(installed_methods, registry_with_pca, fitted, exported, digits,
                                                     tmp_path):
    """Whatever is installed (third-party plugins included) exports to TorchScript with parity or is
    refused with one ExportError line; nothing else escapes, and no built-in method is refused."""
    _, held_out = digits
    refused = {}
    for method in installed_methods:
        try:
            path = exported(method, "torchscript") if method in BOTH + TORCHSCRIPT_ONLY else \
                fitted(method).export(tmp_path / f"{method}.pt")
        except ExportError as exc:
            assert "\n" not in str(exc), method
            refused[method] = str(exc)
            continue
        close(load_scorer(path).score_samples(held_out), fitted(method).score_samples(held_out))
    builtin = {name for name, info in registry_with_pca.methods.items() if info.distribution == "anomalykit"}
    assert builtin == {"ama", "mae-simplex", "csi-aae", "adgan", "patch-knn", "patch-ae"} and not builtin & set(refused), refused


def test_the_parity_check_refuses_a_graph_that_is_off_on_one_row(fitted, tmp_path, monkeypatch):
    """The check measures the largest deviation of any row: a graph right on every row but one is refused."""
    from anomalykit.export import scorer as scorer_module

    plain = scorer_module.ExportedScorer.run_graph_outputs

    def off_on_the_last_row(self, x):
        outputs = plain(self, x)
        out = np.array(outputs[0], dtype=np.float32)
        if len(out) == 7:  # the check's second batch (sizes 1 and 7): only its last row is off
            out[-1] += np.float32(1e-2) * np.float32(max(np.abs(out).max(), 1.0))
        return [out, *outputs[1:]]

    monkeypatch.setattr(scorer_module.ExportedScorer, "run_graph_outputs", off_on_the_last_row)
    path = tmp_path / "pca.pt"
    with pytest.raises(ExportError, match=r"differ from score_samples by [0-9.]+e-0[1-3] of the largest score") as err:
        fitted("pca-recon").export(path)
    assert "\n" not in str(err.value) and not path.exists()  # nothing is written when the check fails


def test_a_uint8_scorer_takes_pixel_values_0_to_255_and_refuses_others(registry_with_pca, digits, tmp_path):
    train, held_out = digits
    to_uint8 = lambda a: np.clip(a * 16, 0, 255).astype(np.uint8)  # noqa: E731 -- digits 0..16 -> 0..255
    det = anomalykit.load_method("pca-recon", n_components=4).fit(to_uint8(train))
    X = to_uint8(held_out)
    X[0] = 0
    X[1] = 255
    X[2, 0, 0, :] = 255
    assert X.min() == 0 and X.max() == 255
    scorer = load_scorer(det.export(tmp_path / "u8.pt"))
    close(scorer.score_samples(X.astype(np.float32)), det.score_samples(X))  # both ends accepted as floats
    for bad in (256.0, -1.0, 254.5):
        rows = X.astype(np.float32)
        rows[3, 0, 0, 0] = bad
        with pytest.raises(anomalykit.InputError, match="pass integer pixel values 0..255"):
            scorer.score_samples(rows)


# -- API and CLI errors --------------------------------------------------------------------------
def test_api_errors(fitted, tmp_path, registry_with_pca):
    det = fitted("pca-recon")
    with pytest.raises(ConfigError, match="export format must be one of onnx, torchscript"):
        det.export(tmp_path / "m.bin", format="tflite")
    with pytest.raises(ConfigError, match="cannot tell the export format"):
        det.export(tmp_path / "m.bin")
    with pytest.raises(ConfigError, match="batch size must be 'dynamic' or a positive integer"):
        det.export(tmp_path / "m.onnx", batch_size="big")
    with pytest.raises(NotFittedError, match="call fit"):
        anomalykit.load_method("pca-recon").export(tmp_path / "m.onnx")
    assert not list(tmp_path.iterdir())
    # an explicit format needs no suffix: a scorer file is recognised by its content
    for fmt in ("onnx", "torchscript"):
        det.export(tmp_path / f"{fmt}.bin", format=fmt)
        assert load_scorer(tmp_path / f"{fmt}.bin").format == fmt


def test_cli_export_then_score_with_the_exported_file_alone(fitted, tmp_path):
    runner = CliRunner()
    model = fitted("mae-simplex").save(tmp_path / "model.pt")
    res = runner.invoke(cli, ["score", str(model), "digits", "--split", "test", "--out", str(tmp_path / "ckpt.npy")])
    assert res.exit_code == 0, res.output
    reference = np.load(tmp_path / "ckpt.npy")
    for fmt, name in (("onnx", "model.onnx"), ("torchscript", "model.torchscript.pt")):
        res = runner.invoke(cli, ["export", str(tmp_path), "--format", fmt])
        assert res.exit_code == 0, res.output
        assert f"exported {tmp_path / name} ({fmt}, dynamic batch" in res.output
        assert is_exported_scorer(tmp_path / name) and not is_exported_scorer(model)
        res = runner.invoke(cli, ["score", str(tmp_path / name), "digits", "--split", "test", "--out", str(tmp_path / "s.npy")])
        assert res.exit_code == 0, res.output
        close(np.load(tmp_path / "s.npy"), reference)
    res = runner.invoke(cli, ["export", str(model), "--format", "onnx", "--out", str(tmp_path / "b.onnx"), "--batch-size", "16"])
    assert res.exit_code == 0 and "batch size 16" in res.output


@pytest.mark.parametrize("args, fragment", [
    (["--format", "tflite"], "'tflite' is not one of 'onnx', 'torchscript'"),
    (["--format", "onnx", "--batch-size", "0"], "batch size must be 'dynamic' or a positive integer"),
    (["--format", "onnx", "--out", "{model}"], "would overwrite the checkpoint"),
])
def test_cli_export_errors_are_one_line(args, fragment, fitted, tmp_path):
    model = fitted("pca-recon").save(tmp_path / "model.pt")
    res = CliRunner().invoke(cli, ["export", str(model), *[a.format(model=model) for a in args]])
    assert res.exit_code == 2 and fragment in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr


def test_cli_refuses_adgan_onnx_with_one_line(fitted, tmp_path):
    model = fitted("adgan").save(tmp_path / "adgan.pt")
    res = CliRunner().invoke(cli, ["export", str(model), "--format", "onnx"])
    assert res.exit_code == 2 and len(res.stderr.strip().splitlines()) == 1
    assert res.stderr.startswith("error: adgan cannot be exported to ONNX")


def test_score_refuses_a_foreign_or_broken_onnx_file(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    onnx.save(helper.make_model(graph), tmp_path / "foreign.onnx")
    (tmp_path / "broken.onnx").write_bytes(b"not a model")
    for name, fragment in (("foreign.onnx", "not a file written by `anomalykit export`"), ("broken.onnx", "not a readable exported scorer")):
        res = CliRunner().invoke(cli, ["score", str(tmp_path / name), "digits"])
        assert res.exit_code == 2 and fragment in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr


def test_row_blocks_pad_the_last_block():
    """The scripted block loop used for score_needs_grad methods: any row count, input order kept."""
    from anomalykit.export import _RowBlocks

    class Block(nn.Module):
        def forward(self, x):  # traced for blocks of exactly 3 rows
            return x.reshape(3, -1).sum(1)

    module = torch.jit.script(_RowBlocks(torch.jit.trace(Block(), torch.zeros(3, 2)), 3))
    for n in (0, 1, 3, 7):
        x = torch.arange(2.0 * n).reshape(n, 2)
        torch.testing.assert_close(module(x), x.sum(1))

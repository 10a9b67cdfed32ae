"""The ``anomalykit`` command line (click).

Every documented error (bad data, parameter, dataset, checkpoint, plugin) prints one line
``error: ...`` on stderr and exits with status 2. ``ANOMALYKIT_DEBUG=1`` adds the traceback.
"""
from __future__ import annotations

import functools
import json
import os
import platform
import sys
import time
import traceback

import click

from ._version import PLUGIN_API_VERSION, __version__
from .errors import AnomalyKitError, ConfigError
from .precision import PRECISIONS


def _friendly(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except AnomalyKitError as exc:
            if os.environ.get("ANOMALYKIT_DEBUG") == "1":
                traceback.print_exc()
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)
        except KeyboardInterrupt:
            click.echo("interrupted; an unfinished run folder can be continued with `anomalykit run --resume DIR`", err=True)
            sys.exit(130)

    return wrapper


class _deprecations_as_lines:
    """Format anomalykit's deprecation warnings as one ``anomalykit: deprecated: ...`` line (through
    ``warnings.formatwarning``, so a caller recording warnings still sees them)."""

    def __enter__(self):
        import warnings

        from .deprecation import AnomalykitDeprecationWarning

        self._warnings, self._format = warnings, warnings.formatwarning
        plain = self._format

        def format(message, category, filename, lineno, line=None):
            if issubclass(category, AnomalykitDeprecationWarning):
                return f"anomalykit: deprecated: {message}\n"
            return plain(message, category, filename, lineno, line)

        warnings.formatwarning = format
        return self

    def __exit__(self, *exc):
        self._warnings.formatwarning = self._format
        return False


class _OneLineErrors(click.Group):
    """Usage errors (bad option values, unknown options) as one ``error: ...`` line, exit 2."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        try:
            with _deprecations_as_lines():
                rv = super().main(args=args, prog_name=prog_name, complete_var=complete_var, standalone_mode=False, **extra)
        except click.exceptions.NoArgsIsHelpError as exc:
            click.echo(exc.ctx.get_help())
            sys.exit(0)
        except click.UsageError as exc:
            hint = f" (see `anomalykit {exc.ctx.info_name} --help`)" if exc.ctx is not None and exc.ctx.info_name != "anomalykit" else ""
            click.echo(f"error: {exc.format_message()}{hint}", err=True)
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            click.echo(f"error: {exc.format_message()}", err=True)
            sys.exit(exc.exit_code)
        except click.exceptions.Abort:
            click.echo("aborted", err=True)
            sys.exit(1)
        if not standalone_mode:
            return rv
        sys.exit(rv if isinstance(rv, int) else 0)


@click.group(cls=_OneLineErrors, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="anomalykit")
def cli():
    """Generative anomaly detection: AMA, MAE-simplex, ADGAN, CSI-AAE and plugins."""


@cli.command("list")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@_friendly
def list_cmd(as_json):
    """List the installed methods (built-in and third-party plugins)."""
    from .registry import get_registry

    reg = get_registry()
    rows = [
        {"name": m.name, "summary": m.summary, "plugin": m.plugin, "distribution": m.distribution, "version": m.version,
         "deprecations": list(m.deprecations)}
        for m in sorted(reg.methods.values(), key=lambda m: m.name)
    ]
    failed = [{"plugin": f.plugin, "distribution": f.distribution, "skipped": f.skipped, "reason": f.reason}
              for f in reg.failures]
    if as_json:
        click.echo(json.dumps({"anomalykit": __version__, "plugin_api": PLUGIN_API_VERSION, "methods": rows,
                               "failed_plugins": failed}, indent=2))
        return
    if not rows:
        click.echo("no methods installed")
    width = max((len(r["name"]) for r in rows), default=4)
    for r in rows:
        click.echo(f"{r['name']:<{width}}  {r['summary']}  [{r['distribution']} {r['version']}]")
        for note in r["deprecations"]:
            click.echo(f"{'':<{width}}  deprecated: {note}")
    for f in reg.failures:
        click.echo(f.line())
    click.echo(f"(plugin API {PLUGIN_API_VERSION}, anomalykit {__version__})")


@cli.command("show")
@click.argument("method")
@_friendly
def show_cmd(method):
    """Show a method's summary and parameters (for --set key=value)."""
    from .registry import get_registry

    info = get_registry().method(method)
    click.echo(f"{info.name}: {info.summary}")
    click.echo(f"plugin {info.plugin} from {info.distribution} {info.version}")
    click.echo("parameters (--set key=value):")
    for p in info.cls.param_schema().values():
        click.echo(f"  {p.describe()}")


@cli.command("datasets")
@_friendly
def datasets_cmd():
    """List the named datasets (paths to .npy/.npz/.csv files or image folders also work)."""
    from .data import dataset_summaries

    for name, summary in sorted(dataset_summaries().items()):
        click.echo(f"{name:<14} {summary}")


@cli.command("info")
@_friendly
def info_cmd():
    """Versions, devices and which kernel (native or reference) each op uses."""
    import numpy
    import torch

    from .registry import get_registry

    click.echo(f"anomalykit {__version__}, torch {torch.__version__}, numpy {numpy.__version__}, python {platform.python_version()}")
    click.echo(f"plugin API: {PLUGIN_API_VERSION}")
    devices = ["cpu"]
    if torch.cuda.is_available():
        devices += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
        for i in range(torch.cuda.device_count()):
            click.echo(f"cuda:{i}: {torch.cuda.get_device_name(i)}")
    else:
        click.echo("cuda: not available")
    click.echo(f"threads: {torch.get_num_threads()}")
    from . import ops

    click.echo(f"kernels: ANOMALYKIT_KERNELS={os.environ.get('ANOMALYKIT_KERNELS', 'auto')}; {ops.extension_status()}")
    for dev in devices:
        for op, path in ops.active_kernels(torch.device(dev)).items():
            click.echo(f"  {dev:<7} {op:<16} {path}")
    click.echo(f"cpu loops: {ops.cpu_isa_status()}")
    from .precision import cpu_bf16_units

    units = cpu_bf16_units()
    click.echo(f"bfloat16: {'native (' + units + ')' if units else 'emulated on this CPU (no AMX or AVX512-BF16): precision=bf16-mixed is slower here'}")
    reg = get_registry()
    click.echo(f"methods: {', '.join(sorted(reg.methods)) or 'none'}")
    for f in reg.failures:
        click.echo(f"failed plugin: {f.line()}")


@cli.command("run", context_settings={"show_default": True})
@click.argument("method", required=False)
@click.option("--data", default=None, help="dataset name (`anomalykit datasets`) or a path  [default: digits]")
@click.option("--protocol", type=click.Choice(["one-class", "ood", "tabular-topk"]), default=None, help="[default: one-class]")
@click.option("--normal-class", type=int, default=None, help="normal class for one-class  [default: 0]")
@click.option("--ood-data", default=None, help="dataset of the anomalies for --protocol ood")
@click.option("--max-train", type=int, default=None, help="subsample the training rows to at most N (seeded)")
@click.option("--eval-split", type=click.Choice(["test", "val"]), default=None,
              help="test, or val: evaluate on held-out training rows only  [default: test]")
@click.option("--epochs", type=int, default=None, help="training epochs (method default if omitted)")
@click.option("--batch-size", type=int, default=None)
@click.option("--seed", type=int, default=None)
@click.option("--device", default=None, help="cpu, cuda, cuda:N or auto")
@click.option("--precision", type=click.Choice(PRECISIONS), default=None,
              help="32, bf16-mixed (CPUs with AMX/AVX512-BF16, GPUs) or 16-mixed (CUDA)  [default: 32]")
@click.option("--set", "assignments", multiple=True, metavar="KEY=VALUE", help="method parameter (`anomalykit show METHOD`)")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None, help="TOML file (same layout as a run's config.toml)")
@click.option("--out", type=click.Path(file_okay=False), default=None, help="report folder  [default: runs/METHOD-DATA-TIME]")
@click.option("--checkpoint-every", type=int, default=None, help="checkpoint every N steps (0 = each epoch)")
@click.option("--resume", type=click.Path(file_okay=False), default=None, help="continue the unfinished run in this folder")
@click.option("--quiet", "-q", is_flag=True, help="no progress bars")
@click.option("--nproc", type=click.IntRange(min=1), default=1, help="data-parallel processes on this machine (re-launches under torchrun)")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="CPU threads for torch (default: torch's choice)")
@click.option("--log", "log", type=click.Choice(["csv", "tensorboard"]), default="csv", show_default=True,
              help="training logs in the run folder: train_log.csv and epochs.csv always; tensorboard adds TensorBoard events")
@_friendly
def run_cmd(method, data, protocol, normal_class, ood_data, max_train, eval_split, epochs, batch_size, seed, device,
            precision, assignments, config_file, out, checkpoint_every, resume, quiet, nproc, threads, log):
    """Train METHOD, score the test split, print metrics and write a report folder.

    \b
    Examples:
      anomalykit run ama
      anomalykit run ama --data fashion-mnist --normal-class 3 --epochs 5
      anomalykit run ama --data fashion-mnist --protocol ood --ood-data mnist-5k --max-train 10000
      anomalykit run mae-simplex --data breast-cancer --protocol tabular-topk
    """
    from . import distributed as D
    from .params import cli_params
    from .pipeline import RunConfig, run_experiment

    if nproc > 1 and not D.launched_by_torchrun():
        _relaunch_under_torchrun(nproc)
    _set_threads(threads)
    cfg = RunConfig.resolve(
        method=method, config_file=config_file, resume=resume,
        fields=dict(data=data, protocol=protocol, normal_class=normal_class, ood_data=ood_data, max_train=max_train,
                    eval_split=eval_split, checkpoint_every=checkpoint_every),
        params=cli_params(dict(epochs=epochs, batch_size=batch_size, seed=seed, device=device, precision=precision),
                          assignments),
    )
    if resume is not None and out is not None:
        from .errors import ConfigError

        raise ConfigError("--resume continues the run in its own folder; drop --out")
    # the backend follows the device the detector will use (gloo on CPU, nccl on CUDA): one rule, devices.resolve_device
    from .devices import resolve_device

    D.init_from_env(resolve_device(str(cfg.params.get("device", "auto"))).type)
    record = run_experiment(cfg, out=resume or out, resume=resume is not None, progress=False if quiet else True, echo=click.echo,
                            log="csv,tensorboard" if log == "tensorboard" else "csv")
    if D.is_main_process():
        shown = ["auroc", "aupr", "f1"] + (["topk_precision", "topk_recall", "topk_f1"] if cfg.protocol == "tabular-topk" else [])
        click.echo("  ".join(f"{k}={record[k]:.4f}" for k in shown)
                   + f"  train {record['train_seconds']:.1f}s  score {record['score_seconds']:.1f}s")
        click.echo(f"report: {record['out']}")
    D.shutdown()  # free the process group (joining gloo's threads) before interpreter teardown, where it can abort


def _set_threads(threads: int | None) -> None:
    """torch's intra-op threads; one per process is often fastest on a small or shared CPU."""
    if threads is not None:
        import torch

        torch.set_num_threads(threads)


def _relaunch_under_torchrun(nproc: int) -> None:
    """Replace this process by ``torchrun --standalone --nproc_per_node N -m anomalykit <same args>``."""
    args, skip = [], False
    for a in sys.argv[1:]:
        if skip:
            skip = False
            continue
        if a == "--nproc":
            skip = True
            continue
        if a.startswith("--nproc="):
            continue
        args.append(a)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", "-m", "anomalykit", *args]
    sys.stdout.flush()
    os.execv(sys.executable, cmd)


@cli.command("score")
@click.argument("model", type=click.Path(exists=True))
@click.argument("data")
@click.option("--split", type=click.Choice(["test", "train", "all"]), default="all", show_default=True,
              help="which rows of a named dataset to score (all: a file's rows in the file's order)")
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="write scores here (.npy or .csv); default: print")
@click.option("--alpha", type=float, default=None,
              help="flag rows whose conformal p-value is <= ALPHA (false-alarm rate <= ALPHA; needs a model fitted with calibration)")
@click.option("--fdr", type=float, default=None,
              help="flag the rows Benjamini-Hochberg selects at this false discovery rate (needs calibration)")
@_friendly
def score_cmd(model, data, split, out, alpha, fdr):
    """Score DATA (dataset name or path) with a saved MODEL (model.pt or a run folder, or a
    file written by `anomalykit export`: .onnx or TorchScript).

    Prints or writes one anomaly score per row (higher = more anomalous) and the prediction
    (1 = anomaly, threshold from the model's contamination). The rows are read in their own
    units (uint8 images stay uint8, rows unscaled) and scaled by the model's fitted
    preprocessor, exactly as `score_samples` scales the same array in Python. A .npy file
    (memory-mapped) or an image folder is read a batch at a time (`--split all`), so memory does
    not grow with the number of rows beyond one score each.
    """
    import numpy as np

    from . import load
    from .checkpoint import atomic_write_bytes, atomic_write_text
    from .data import load_dataset
    from .export import is_exported_scorer, load_scorer

    from .data.datasets import looks_like_path, streams
    from .lazy_rows import open_rows

    det = load_scorer(model) if is_exported_scorer(model) else load(model)
    if split == "all" and looks_like_path(data) and streams(data):
        X = open_rows(data)
    else:
        ds = load_dataset(data)
        X = {"test": ds.X_test, "train": ds.X_train, "all": ds.rows_in_source_order()}[split]
    from .calibration import benjamini_hochberg, check_level

    if alpha is not None and fdr is not None:
        raise ConfigError("give --alpha or --fdr, not both")
    calibrated = alpha is not None or fdr is not None
    level = check_level("--alpha" if alpha is not None else "--fdr", alpha if alpha is not None else fdr) if calibrated else None
    scores = det.score_samples(X)
    p = det.p_values(X) if calibrated else None
    if not calibrated:
        flags = (scores > det.threshold_).astype(int)
    else:
        flags = (p <= level).astype(int) if alpha is not None else benjamini_hochberg(p, level)
    if out is None:
        for i, (s, f) in enumerate(zip(scores, flags)):
            click.echo(f"{s:.6g}\t{f}" if p is None else f"{s:.6g}\t{p[i]:.6g}\t{f}")
    elif out.endswith(".npy"):
        import io

        buf = io.BytesIO()
        np.save(buf, scores)
        atomic_write_bytes(out, buf.getvalue())
    else:
        if p is None:
            atomic_write_text(out, "score,is_anomaly\n" + "".join(f"{s:.9g},{f}\n" for s, f in zip(scores, flags)))
        else:
            atomic_write_text(out, "score,p_value,flag\n" + "".join(f"{s:.9g},{pv:.9g},{f}\n" for s, pv, f in zip(scores, p, flags)))
    if out is not None:
        click.echo(f"{len(scores)} scores ({int(flags.sum())} flagged) written to {out}")


@cli.command("drift")
@click.argument("model", type=click.Path(exists=True))
@click.argument("data")
@click.option("--split", type=click.Choice(["test", "train", "all"]), default="all", show_default=True,
              help="which rows of a named dataset to check")
@click.option("--level", type=float, default=0.01, show_default=True, help="report drift when the test's p-value is below this")
@_friendly
def drift_cmd(model, data, split, level):
    """Whether DATA, presumed normal, still looks like the calibration rows of MODEL (a model fitted
    with calibration): a two-sample Kolmogorov-Smirnov test of the scores. Exit status 1 on drift."""
    from . import load
    from .data import load_dataset
    from .data.datasets import looks_like_path, streams
    from .export import is_exported_scorer
    from .lazy_rows import open_rows

    if is_exported_scorer(model):
        raise ConfigError(f"{model}: drift needs a saved model (model.pt or a run folder), not an exported graph")
    det = load(model)
    if split == "all" and looks_like_path(data) and streams(data):
        X = open_rows(data)
    else:
        ds = load_dataset(data)
        X = {"test": ds.X_test, "train": ds.X_train, "all": ds.rows_in_source_order()}[split]
    result = det.drift(X)
    verdict = "drift" if result.drifted(level) else "no drift"
    click.echo(f"{verdict}: KS statistic {result.statistic:.4f}, p-value {result.p_value:.3g} ({result.n} rows against "
               f"{result.n_calibration} calibration rows; mean conformal p-value {result.mean_p_value:.3f})")
    if result.drifted(level):
        sys.exit(1)


@cli.command("bench", context_settings={"show_default": True})
@click.option("--protocol", type=click.Choice(["one-class", "ood", "tabular-topk"]), default="one-class")
@click.option("--data", default="fashion-mnist")
@click.option("--ood-data", default=None, help="anomaly dataset for --protocol ood (e.g. mnist-5k)")
@click.option("--eval-split", type=click.Choice(["test", "val"]), default="test",
              help="test: the dataset's test split; val: held-out training rows only (normals of the class, anomalies "
                   "from other classes' training rows) -- choose defaults there, report on test")
@click.option("--classes", default=None, help="normal classes for one-class, e.g. 0-9 or 0,6,8  [default: 0 on an MVTec-layout "
              "folder, else 0-9]")
@click.option("--methods", default="ama", help="comma-separated method names")
@click.option("--baselines", default="", help="comma-separated PyOD baselines: iforest,ocsvm,autoencoder,deepsvdd,pca,kde-pca")
@click.option("--seeds", default="0", help="e.g. 0 or 0-2")
@click.option("--budget", type=click.Choice(["small", "paper", "default"]), default="small",
              help="small: sized for a 2-core CPU; paper: the papers' budgets (GPU); default: the methods' defaults")
@click.option("--max-train", type=int, default=None, help="subsample training rows (seeded)")
@click.option("--device", default="auto")
@click.option("--precision", type=click.Choice(PRECISIONS), default=None,
              help="32, bf16-mixed or 16-mixed (methods only; recorded with each cell's parameters)  [default: 32]")
@click.option("--set", "assignments", multiple=True, metavar="[METHOD.]KEY=VALUE", help="extra method parameter")
@click.option("--out", type=click.Path(file_okay=False), required=True, help="results folder (rerun to resume)")
@click.option("--progress/--no-progress", default=False, help="progress bars per cell")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="CPU threads for torch")
@click.option("--checkpoints/--no-checkpoints", default=True,
              help="checkpoint each method cell's training under OUT/checkpoints, so a rerun continues an interrupted cell")
@click.option("--checkpoint-every", type=click.IntRange(min=0), default=0, help="checkpoint every N steps (0 = each epoch)")
@click.option("--map-baselines/--no-map-baselines", default=True,
              help="on MVTec-layout data, also run the installed map baselines (patch-knn, patch-ae) on the same splits")
@_friendly
def bench_cmd(protocol, data, ood_data, eval_split, classes, methods, baselines, seeds, budget, max_train, device, precision,
              assignments, out, progress, threads, checkpoints, checkpoint_every, map_baselines):
    """Run methods and PyOD baselines on the same splits; write results.csv, summary.md, auroc.png."""
    from pathlib import Path

    from .bench import BenchConfig, read_results, run_bench

    _set_threads(threads)
    cfg = BenchConfig(protocol=protocol, data=data, ood_data=ood_data, eval_split=eval_split, classes=classes, methods=methods, baselines=baselines,
                      seeds=seeds, budget=budget, max_train=max_train, device=device,
                      set=tuple(assignments) + ((f"precision={precision}",) if precision else ()))
    start = time.perf_counter()
    run_bench(cfg, Path(out), echo=click.echo, progress=progress, checkpoints=checkpoints, checkpoint_every=checkpoint_every,
              map_baselines=map_baselines)
    click.echo(f"done in {time.perf_counter() - start:.0f} s; see {Path(out) / 'summary.md'}")
    click.echo((Path(out) / "summary.md").read_text() if (Path(out) / "summary.md").exists() else "no finished cells")
    failed = [r for r in read_results(Path(out) / "results.csv") if r.get("status") == "failed"]
    if failed:  # listed in summary.md with their reasons; a script must not mistake this for a full run
        click.echo(f"error: {len(failed)} cell(s) failed (listed in summary.md); rerun the same command to retry them", err=True)
        sys.exit(1)


@cli.command("export")
@click.argument("model", type=click.Path(exists=True))
@click.option("--format", "fmt", type=click.Choice(["onnx", "torchscript"]), required=True, help="graph format")
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="output file  [default: MODEL with suffix .onnx or .torchscript.pt]")
@click.option("--batch-size", default="dynamic", show_default=True, help="'dynamic' or a fixed number of rows per call")
@_friendly
def export_cmd(model, fmt, out, batch_size):
    """Export a saved MODEL (model.pt or a run folder) to one self-contained scoring graph.

    The graph maps float32 raw inputs (N, *input shape), the values the model was fitted on, to
    the N anomaly scores of `anomalykit score` (preprocessing inside; no anomalykit or plugin
    needed to run it). It is parity-checked against the checkpoint before it is written.
    `anomalykit score FILE DATA` scores with the exported file alone. See docs/exporting.md.
    """
    from pathlib import Path

    from . import load
    from .checkpoint import model_file
    from .errors import ConfigError
    from .export import SUFFIXES, export

    source = model_file(model)
    target = Path(out) if out else source.with_name(source.with_suffix("").name + SUFFIXES[fmt])
    if target.resolve() == source.resolve():
        raise ConfigError(f"--out {target} would overwrite the checkpoint; choose another file")
    result = export(load(source, device="cpu"), target, format=fmt, batch_size=batch_size)
    click.echo(f"exported {result.line()}")


def main():
    cli(prog_name="anomalykit")


if __name__ == "__main__":
    main()

"""Atomic writes and safe loads of everything anomalykit persists.

Writes go to a temporary file in the destination folder, are fsynced and then renamed over the
target, so a crash leaves either the old file or the new one, never half of one. Loads use
``torch.load(weights_only=True)``: tensors, numbers, strings, lists and dicts only; a pickle
that asks for anything else is refused.
"""
from __future__ import annotations

import io
import os
import pickle
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch

from .errors import CheckpointError, first_line

#: Bumped when the layout of saved files changes incompatibly.
FORMAT_VERSION = 1


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(path.parent)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def safe_load(path: str | os.PathLike, *, kind: str) -> dict:
    """Load an anomalykit file of ``kind`` (e.g. ``"detector"``, ``"train-state"``) safely.

    Raises :class:`CheckpointError` with one line when the file is missing, truncated, not a
    torch file, holds objects other than plain data (a foreign or tampered pickle), is of
    another kind, or was written by an incompatible format version.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "Unsupported global" in str(exc):  # the pickle asks for a class or function: foreign or tampered
            raise CheckpointError(
                f"refusing to load {path}: it contains Python objects other than tensors and plain data "
                "(not an anomalykit checkpoint, or tampered with)"
            ) from None
        raise CheckpointError(f"{path} is truncated or not a torch checkpoint (UnpicklingError); re-save it") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError, KeyError) as exc:
        raise CheckpointError(f"{path} is truncated or not a torch checkpoint ({type(exc).__name__}); re-save it") from None
    if not isinstance(obj, dict) or obj.get("format") != f"anomalykit-{kind}":
        found = obj.get("format") if isinstance(obj, dict) else type(obj).__name__
        raise CheckpointError(f"{path} is not an anomalykit {kind} checkpoint (found {found!r})")
    version = obj.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{path} was written with checkpoint format {version!r}; this anomalykit reads format {FORMAT_VERSION}"
        )
    return obj


def model_file(path: str | os.PathLike) -> Path:
    """The checkpoint a path names: the file itself, or ``model.pt`` inside a run folder."""
    path = Path(path)
    return path / "model.pt" if path.is_dir() else path


def stamp(kind: str, payload: dict) -> dict:
    """Add the format header that :func:`safe_load` checks."""
    from ._version import __version__

    return {"format": f"anomalykit-{kind}", "format_version": FORMAT_VERSION, "anomalykit_version": __version__, **payload}


# -- a fitted detector -------------------------------------------------------------------------------
def detector_payload(det) -> dict:
    """What ``Detector.save`` writes: parameters, shapes, network state, the plugin's extra state,
    the threshold, the training scores and the preprocessor (tensors and plain data only)."""
    import numpy as np
    import torch

    return stamp(
        "detector",
        {
            "method": det.name,
            "params": det.params_,
            "input_shape": list(det.input_shape_),
            "image_shape": None if det.image_shape_ is None else list(det.image_shape_),
            "fit_input": {"shape": list(det.fit_input_[0]), "dtype": det.fit_input_[1]},
            "nets": {k: v.detach().cpu() for k, v in det.nets.state_dict().items()},
            "extra": det._extra_state(),
            "threshold": det.threshold_,
            "epochs_trained": det.epochs_,
            "epoch_steps": det.epoch_steps_,
            "steps_trained": det.steps_,
            "decision_scores": torch.from_numpy(np.asarray(det.decision_scores_, dtype=np.float64)),
            "preprocess": det.preprocessor_.state(),
            **({} if det.calibration_scores_ is None else
               {"calibration_scores": torch.from_numpy(np.asarray(det.calibration_scores_, dtype=np.float64))}),
        },
    )


def restore_detector(cls, ckpt: dict, *, path, overrides: dict) -> Any:
    """A fitted ``cls`` detector from a payload of :func:`detector_payload` (read with
    :func:`safe_load`); ``overrides`` change runtime parameters (e.g. device). One-line
    :class:`CheckpointError` for a payload of another method, unknown parameters or networks that
    do not fit."""
    import numpy as np
    from torch import nn

    from .deprecation import rename_params
    from .preprocess import Preprocessor

    if ckpt.get("method") != cls.name:
        raise CheckpointError(f"{path} holds a {ckpt.get('method')!r} detector, not {cls.name!r}")
    # parameter names of earlier releases are mapped onto today's (with a deprecation warning)
    saved_params = rename_params(cls, dict(ckpt.get("params", {})), owner=cls.name)
    params = {**saved_params, **rename_params(cls, overrides, owner=cls.name)}
    unknown = sorted(set(params) - set(cls.param_schema()))
    if unknown:
        raise CheckpointError(f"{path} has parameters this version of {cls.name!r} does not know: {', '.join(unknown)}")
    det = cls(**params)
    saved = {**det.params_, **saved_params}  # the values the saved threshold was computed with
    if det.params_.get("patch_size") != saved.get("patch_size"):
        raise CheckpointError(f"{path}: patch_size is fixed when the model is trained (this one: {saved.get('patch_size')!r}); "
                              f"drop the patch_size override, or fit a new model")
    det.input_shape_ = tuple(int(s) for s in ckpt["input_shape"])
    image = ckpt.get("image_shape")  # patch mode (absent before it existed)
    det.image_shape_ = None if image is None else tuple(int(s) for s in image)
    det.threshold_params_ = {k: saved[k] for k in det.score_param_names()}
    fit_input = ckpt.get("fit_input") or {}  # checkpoints from before it was recorded: the model's shape, float32
    model = det.image_shape_ or det.input_shape_
    det.fit_input_ = (tuple(int(s) for s in fit_input.get("shape", model)), str(fit_input.get("dtype", "float32")))
    if det.fit_input_[1] not in ("uint8", "float32") or int(np.prod(det.fit_input_[0])) != int(np.prod(model)):
        raise CheckpointError(f"{path} has an invalid fit_input entry {fit_input!r}")
    det.nets = nn.ModuleDict()
    det._build(det.input_shape_)
    try:
        det.nets.load_state_dict(ckpt["nets"])
        det._load_extra_state(ckpt.get("extra", {}))
    except (RuntimeError, KeyError, ValueError, TypeError) as exc:
        raise CheckpointError(f"{path} does not match {cls.name!r} networks ({first_line(exc)})") from None
    det.preprocessor_ = Preprocessor.from_state(ckpt.get("preprocess"))
    det.epochs_ = ckpt.get("epochs_trained")  # None in models saved before it was recorded
    det.epoch_steps_, det.steps_ = ckpt.get("epoch_steps"), ckpt.get("steps_trained")  # likewise
    det.nets.to(det.device).eval()
    det.decision_scores_ = ckpt["decision_scores"].numpy()
    cal = ckpt.get("calibration_scores")
    det.calibration_scores_ = None if cal is None else cal.numpy()
    det._set_threshold()
    if "contamination" not in overrides:
        det.threshold_ = float(ckpt["threshold"])
        det.labels_ = (det.decision_scores_ > det.threshold_).astype(np.int64)
    return det

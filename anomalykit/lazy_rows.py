"""Samples read from disk a batch at a time: ``.npy`` files memory-mapped, image files decoded per
batch by DataLoader worker processes. Scoring holds one batch of inputs (plus one score per row),
whatever the number of rows; under torchrun each rank reads only its shard.

A :class:`LazyRows` looks like the validated tensor the detectors take: ``shape`` (N, C, H, W) for
images (a channel axis added to (N, H, W) files, channel-last uint8 files transposed, as the
in-memory loaders do) or (N, F) rows; slicing it, ``rows[lo:hi]``, reads those rows and returns
them validated (uint8 stays uint8; other numbers as float32, NaN/inf a one-line
:class:`~anomalykit.errors.InputError` naming the row). ``Detector.score_samples``, ``predict``,
``anomaly_map`` and ``anomalykit score`` stream through it, and so does ``fit``: the
preprocessor is fitted in one streaming pass (which also validates float rows), and the plugin
trains on a :class:`TransformedRows` view whose batches are read as the trainer draws them.
Exported scorers read all of it (:meth:`LazyRows.materialize`).

    rows = open_rows("images/")          # a folder of class sub-folders, or a flat folder
    rows = open_rows("x.npy")            # memory-mapped
    det.score_samples(rows)              # or det.score_samples(np.load("x.npy", mmap_mode="r"))
"""
from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from .errors import DatasetError, InputError, first_line
from .value_checks import check_finite, check_float32_range

#: Image files decoded per batch of scoring by this many DataLoader worker processes (0: in the
#: calling process). ``ANOMALYKIT_DATA_WORKERS`` overrides; default: half the CPU cores, at most 4.
WORKERS_ENV = "ANOMALYKIT_DATA_WORKERS"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff")


def looks_channel_last(shape: tuple[int, ...], uint8: bool) -> bool:
    """The one rule for uint8 images stored channel-last, (N, H, W, C) with C in 1, 3, 4 and H
    not: they are moved to (N, C, H, W) by every entry point (the API, the loaders, lazy rows),
    so a PIL/OpenCV-style array is never read as H channels of W x C images."""
    return uint8 and len(shape) == 4 and shape[-1] in (1, 3, 4) and shape[1] not in (1, 3, 4)


def data_workers() -> int:
    value = os.environ.get(WORKERS_ENV)
    if value is None:
        return min(4, (os.cpu_count() or 2) // 2)
    try:
        workers = int(value)
    except ValueError:
        workers = -1
    if workers < 0:
        raise InputError(f"{WORKERS_ENV}={value!r} is not a worker count; set a whole number >= 0")
    return workers


class LazyRows:
    """N samples on disk; ``rows[lo:hi]`` (or an index array) reads and validates those rows.

    ``sample_shape``: what a detector sees per row ((C, H, W) or (F,)); ``source_shape``: the
    shape a row has in the file (e.g. (H, W)); ``uint8``: whether the values are uint8.
    """

    #: Worker processes that read ahead in :func:`read_batches` (0: read in the calling process).
    #: Memory-mapped files are cheap to read; decoding image files is not.
    read_workers = 0

    def __init__(self, n: int, sample_shape: tuple[int, ...], source_shape: tuple[int, ...], uint8: bool, name: str):
        self.positions = np.arange(n)
        self.sample_shape = tuple(int(s) for s in sample_shape)
        self.source_shape = tuple(int(s) for s in source_shape)
        self.uint8 = uint8
        self.name = name

    # -- what a subclass provides ---------------------------------------------------------------
    def _read(self, rows: np.ndarray) -> np.ndarray:
        """The samples at source positions ``rows`` as stored: (len(rows), *source_shape)."""
        raise NotImplementedError

    # -- the array face -------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.positions), *self.sample_shape)

    @property
    def dtype(self) -> torch.dtype:
        """The dtype reads return: uint8 for uint8 files, float32 otherwise."""
        return torch.uint8 if self.uint8 else torch.float32

    @property
    def ndim(self) -> int:
        return 1 + len(self.sample_shape)

    def __len__(self) -> int:
        return len(self.positions)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, shape={self.shape}, {'uint8' if self.uint8 else 'float32'})"

    def subset(self, index) -> "LazyRows":
        """A view of some of the rows (positions within this view), nothing read."""
        view = copy.copy(self)
        view.positions = self.positions[np.asarray(index)]
        return view

    def __getitem__(self, key) -> torch.Tensor:
        if isinstance(key, torch.Tensor):
            key = key.numpy()
        if isinstance(key, (int, np.integer)):  # one row, as a tensor indexes: negative counts from the end
            i = int(key) + len(self) if int(key) < 0 else int(key)
            if not 0 <= i < len(self):
                raise IndexError(f"row {int(key)} is out of range for {len(self)} rows")
            return self._rows(slice(i, i + 1))[0]
        return self._rows(key)

    def _rows(self, key) -> torch.Tensor:
        """The rows ``key`` (a slice or an index array of this view) as the detectors take them."""
        rows = self.positions[key]
        return self._validated(self._read(rows), np.asarray(rows).reshape(-1))

    def iter_batches(self, start: int, stop: int, size: int) -> Iterator[torch.Tensor]:
        """Rows [start, stop) in batches of ``size``, validated, in order (:func:`row_batches`)."""
        return row_batches(self, start, stop, size)

    def read_batches(self, index_batches: list) -> Iterator[torch.Tensor]:
        """``self[idx]`` for each ``idx`` of ``index_batches``, in order; with ``read_workers``, read
        ahead by that many DataLoader worker processes (image files decode while the model trains
        or scores the batch before)."""
        workers = self.read_workers if len(index_batches) > 1 else 0
        if workers == 0:
            for idx in index_batches:
                yield self[idx]
            return
        loader = torch.utils.data.DataLoader(
            _ReadBatches(self, index_batches), batch_size=None, num_workers=workers,
            multiprocessing_context="fork" if os.name == "posix" else None,
        )
        for batch in loader:
            if isinstance(batch, Exception):  # a one-line error raised in the worker, raised here as itself
                raise batch
            yield batch

    def read_all(self) -> torch.Tensor:
        """Every row in one tensor of the source's sample shape (e.g. (N, H, W) for an (N, H, W)
        file), read and validated batch by batch; ``as_input_tensor`` takes it from here."""
        n = len(self)
        out = torch.empty(self.shape, dtype=torch.uint8 if self.uint8 else torch.float32)
        for lo in range(0, n, 4096):
            out[lo : lo + 4096] = self[lo : min(lo + 4096, n)]
        return out.reshape(n, *self.source_shape)

    def check_values(self) -> None:
        """Read every row once for its checks (NaN/inf, float32 range) where the values can fail
        them: float rows. uint8 rows cannot, and are not read."""
        if not self.uint8:
            for _ in self.iter_batches(0, len(self), 4096):
                pass

    def materialize(self) -> torch.Tensor:
        """Every row in one tensor as the detectors take it ((N, C, H, W) or (N, F))."""
        return self.read_all().reshape(self.shape)

    def _validated(self, arr: np.ndarray, rows: np.ndarray) -> torch.Tensor:
        """A batch as the detectors take it: channel axis, uint8 kept, other numbers float32 and
        finite (a NaN/inf names its row in the file, ``rows`` being the file rows read)."""
        if self.uint8:
            t = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.uint8))
        else:
            t = torch.from_numpy(np.ascontiguousarray(arr))
            if t.is_floating_point():  # the checks of in-memory arrays (as_input_tensor), on this batch
                check_finite(t, self.name, rows)
                if t.dtype == torch.float64:
                    check_float32_range(t, self.name)
            t = t.to(torch.float32)
        return t.reshape(t.shape[0], *self.sample_shape)


class TransformedRows(LazyRows):
    """``base`` rows with ``fn`` applied to every batch read (the fitted preprocessor: user space ->
    model space), still read lazily: what ``fit`` hands a plugin for lazy training rows. Reads
    return float32 model-space tensors; ``subset`` views the base."""

    def __init__(self, base: LazyRows, fn):
        self.base, self.fn = base, fn
        self.positions = np.arange(len(base))
        self.sample_shape, self.source_shape = base.sample_shape, base.sample_shape
        self.uint8, self.name = False, base.name

    @property
    def read_workers(self) -> int:  # its base's batches are read ahead, then transformed
        return self.base.read_workers

    def subset(self, index) -> "TransformedRows":
        return TransformedRows(self.base.subset(index), self.fn)

    def _rows(self, key) -> torch.Tensor:
        return self.fn(self.base[key])

    def read_batches(self, index_batches: list) -> Iterator[torch.Tensor]:
        """The base's batches, read ahead as the base reads them (uint8 images: a quarter of the
        bytes to pass back from a worker), transformed here."""
        for batch in self.base.read_batches(index_batches):
            yield self.fn(batch)


class NpyRows(LazyRows):
    """A ``.npy`` file (or an ``np.memmap``/read-only array) memory-mapped: (N, F), (N, H, W),
    (N, C, H, W), or uint8 (N, H, W, C) images, whose channels move first as the in-memory loader
    moves them."""

    def __init__(self, source, name: str | None = None):
        if isinstance(source, (str, Path)):
            name = name or str(source)
            try:
                arr = np.load(source, mmap_mode="r", allow_pickle=False)
            except (OSError, ValueError) as exc:
                raise DatasetError(f"{source} could not be read ({first_line(exc)})") from None
        else:
            arr, name = source, name or "X"
        if arr.dtype == object or arr.dtype.kind not in "fiub":
            raise InputError(f"{name} holds {arr.dtype} data; pass numbers (float or integer)")
        if arr.ndim not in (2, 3, 4):
            raise InputError(f"{name} has {arr.ndim} dimension(s) {arr.shape}; expected (N, F) rows, (N, H, W) or (N, C, H, W) images")
        if arr.shape[0] == 0 or any(s == 0 for s in arr.shape[1:]):
            raise InputError(f"{name} is empty {arr.shape}; pass at least one sample")
        uint8 = arr.dtype == np.uint8
        self._channel_last = looks_channel_last(tuple(arr.shape), uint8)
        source_shape = tuple(arr.shape[1:])
        if self._channel_last:
            sample = (arr.shape[3], arr.shape[1], arr.shape[2])
        elif arr.ndim == 3:
            sample = (1, *arr.shape[1:])
        else:
            sample = source_shape
        super().__init__(arr.shape[0], sample, sample if self._channel_last else source_shape, uint8, name)
        self._array = arr

    def _read(self, rows) -> np.ndarray:
        if isinstance(rows, np.ndarray) and len(rows) and np.all(np.diff(rows) == 1):
            rows = slice(int(rows[0]), int(rows[-1]) + 1)  # one contiguous read of the mapped pages
        batch = np.array(self._array[rows])  # a copy of one batch: mapped pages are read-only
        return np.moveaxis(batch, -1, 1) if self._channel_last else batch


class ImageFileRows(LazyRows):
    """Image files decoded per batch (PIL): grayscale files as (1, H, W), others as RGB (3, H, W),
    uint8. Every file must have the size and colour kind of the first one, as for the in-memory
    folder loader. ``labels``: one integer per file (its class sub-folder), or None."""

    def __init__(self, files: list[Path], name: str, labels: np.ndarray | None = None, classes: list[str] | None = None):
        if not files:
            raise DatasetError(f"{name}: no images found")
        self.files = [str(f) for f in files]
        self.labels = labels
        self.classes = classes or []
        first = decode_image(self.files[0])
        if isinstance(first, str):
            raise DatasetError(first)
        self._first_shape = first.shape
        sample = (1, *first.shape) if first.ndim == 2 else (first.shape[2], first.shape[0], first.shape[1])
        super().__init__(len(files), sample, sample, True, name)

    def _read(self, rows) -> np.ndarray:
        return self._stack([decode_image(self.files[i]) for i in np.asarray(rows).reshape(-1)], rows)

    def _stack(self, images: list, rows) -> np.ndarray:
        for image, i in zip(images, np.asarray(rows).reshape(-1)):
            if isinstance(image, str):
                raise DatasetError(image)
            if image.shape != self._first_shape:
                raise DatasetError(f"{self.name}: images have different sizes ({self.files[i]} is {image.shape}, "
                                   f"the first {self._first_shape}); resize them to one size")
        batch = np.stack(images) if images else np.empty((0, *self._first_shape), np.uint8)
        return batch[:, None] if batch.ndim == 3 else np.moveaxis(batch, -1, 1)

    @property
    def read_workers(self) -> int:
        return data_workers()


class TensorRows(LazyRows):
    """Rows already in memory (a validated tensor) with the lazy face, so they can be
    concatenated with rows on disk (:func:`concat_rows`)."""

    def __init__(self, t: torch.Tensor, name: str = "X"):
        super().__init__(t.shape[0], tuple(t.shape[1:]), tuple(t.shape[1:]), t.dtype == torch.uint8, name)
        self._tensor = t

    def _rows(self, key) -> torch.Tensor:  # validated when it was loaded: no second check
        return self._tensor[torch.from_numpy(np.asarray(self.positions[key]).reshape(-1))]


class ConcatRows(LazyRows):
    """``parts`` one after the other, nothing read: what :func:`concat_rows` gives when a part is
    lazy. uint8 only if every part is (else float32, as ``torch.cat`` promotes); a read routes
    each row to its part and keeps the order asked for."""

    def __init__(self, parts: list[LazyRows]):
        shapes = {p.sample_shape for p in parts}
        if len(shapes) > 1:
            raise InputError(f"cannot put together rows of sample shapes {sorted(shapes)}; use datasets of one shape")
        sources = {p.source_shape for p in parts}
        self.parts = parts
        self.offsets = np.cumsum([0] + [len(p) for p in parts])
        super().__init__(int(self.offsets[-1]), parts[0].sample_shape,
                         sources.pop() if len(sources) == 1 else parts[0].sample_shape,
                         all(p.uint8 for p in parts), " + ".join(p.name for p in parts))
        self.read_workers = max(p.read_workers for p in parts)

    def _rows(self, key) -> torch.Tensor:
        rows = np.asarray(self.positions[key]).reshape(-1)
        part_of = np.searchsorted(self.offsets, rows, side="right") - 1
        out = torch.empty((len(rows), *self.sample_shape), dtype=torch.uint8 if self.uint8 else torch.float32)
        for i in np.unique(part_of):
            at = np.flatnonzero(part_of == i)
            out[torch.from_numpy(at)] = self.parts[i][rows[at] - self.offsets[i]].to(out.dtype)
        return out


def take_rows(X, index):
    """The rows ``index`` (positions) of a tensor (a copy) or of lazy rows (a view, nothing read)."""
    index = np.asarray(index)
    return X.subset(index) if isinstance(X, LazyRows) else X[torch.from_numpy(index)]


def concat_rows(parts: list):
    """Tensors concatenated (``torch.cat``), or, where any part is lazy, a :class:`ConcatRows` view."""
    if not any(isinstance(p, LazyRows) for p in parts):
        return torch.cat(parts)
    return ConcatRows([p if isinstance(p, LazyRows) else TensorRows(p) for p in parts])


def read_batches(X, index_batches: list) -> Iterator[torch.Tensor]:
    """``X[idx]`` for each ``idx`` of ``index_batches`` (slices or index arrays), in order: a
    tensor indexed in turn, lazy rows by :meth:`LazyRows.read_batches` (read ahead where it can)."""
    if isinstance(X, LazyRows):
        return X.read_batches(index_batches)
    return (X[idx] for idx in index_batches)


def row_batches(X, start: int, stop: int, size: int) -> Iterator[torch.Tensor]:
    """Rows [start, stop) of a tensor or of lazy rows in batches of ``size``, in order."""
    return read_batches(X, [slice(lo, min(lo + size, stop)) for lo in range(start, stop, size)])


class _ReadBatches(torch.utils.data.Dataset):
    """Item i = ``rows[index_batches[i]]``, read in a DataLoader worker; an InputError/DatasetError
    comes back as a value (raised by :func:`read_batches`), not as a worker traceback."""

    def __init__(self, rows: LazyRows, index_batches: list):
        self.rows, self.index_batches = rows, index_batches

    def __len__(self) -> int:
        return len(self.index_batches)

    def __getitem__(self, i: int):
        try:
            return self.rows[self.index_batches[i]]
        except (InputError, DatasetError) as exc:
            return exc


def decode_image(path: str, mode: str | None = None):
    """One image file as (H, W) or (H, W, 3) uint8 (grayscale kinds stay one channel, the rest
    RGB; ``mode`` "L"/"RGB" forces one), or a one-line message for an unreadable file (so a
    DataLoader worker hands it back instead of raising a multi-line traceback)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert(mode or ("L" if im.mode in ("L", "1", "I", "I;16", "P") else "RGB")))
    except OSError as exc:
        return f"{path} is not a readable image ({first_line(exc)})"


def image_files(folder: Path) -> tuple[list[Path], np.ndarray | None, list[str]]:
    """The images of a folder in the in-memory loader's order: class sub-folders sorted by name,
    files sorted within each (labels = the sub-folder's index), or the folder's own files
    (no labels) when it has no sub-folders."""
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
    if not classes:
        return sorted(f for f in folder.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES), None, []
    files, labels = [], []
    for ci, cname in enumerate(classes):
        found = sorted(f for f in (folder / cname).iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        files += found
        labels += [ci] * len(found)
    return files, np.asarray(labels, dtype=np.int64), classes


def open_rows(path: str | Path) -> LazyRows:
    """Every sample of a ``.npy`` file (memory-mapped) or an image folder (decoded per batch), in
    the file's or folder's order, without reading them."""
    path = Path(path).expanduser()
    if not path.exists():
        raise DatasetError(f"dataset path {path} does not exist")
    if path.is_dir():
        files, labels, classes = image_files(path)
        return ImageFileRows(files, str(path), labels, classes)
    if path.suffix.lower() == ".npy":
        return NpyRows(path)
    raise DatasetError(f"{path}: only .npy files and image folders are read lazily; load .npz/.csv with load_dataset")


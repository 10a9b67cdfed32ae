"""Lazy rows piece by piece (anomalykit.lazy_rows), each read against the array or the PIL image it
came from: indexing, whole reads past one chunk, .npy checks, image folders of every colour kind,
concatenation, transformed views."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from anomalykit import DatasetError, InputError
from anomalykit.lazy_rows import (ConcatRows, ImageFileRows, NpyRows, TensorRows, TransformedRows, data_workers,
                                  decode_image, image_files, looks_channel_last, open_rows)


@pytest.fixture
def npy(tmp_path):
    arr = np.arange(10 * 3, dtype=np.float32).reshape(10, 3)
    np.save(tmp_path / "x.npy", arr)
    return tmp_path / "x.npy", arr


def test_indexing_like_a_tensor(npy):
    path, arr = npy
    rows = open_rows(path)
    assert isinstance(rows, NpyRows) and rows.name == str(path) and rows.shape == (10, 3) and len(rows) == 10
    assert rows[3].tolist() == arr[3].tolist() and rows[np.int64(0)].tolist() == arr[0].tolist()
    assert rows[-1].tolist() == arr[-1].tolist() and rows[-10].tolist() == arr[0].tolist()
    for bad in (10, -11):
        with pytest.raises(IndexError, match="out of range for 10 rows"):
            rows[bad]
    assert rows[2:5].tolist() == arr[2:5].tolist()
    assert rows[np.array([7, 1, 4])].tolist() == arr[[7, 1, 4]].tolist()
    assert rows[torch.tensor([9, 0])].tolist() == arr[[9, 0]].tolist()
    view = rows.subset([5, 6, 7])
    assert view[0].tolist() == arr[5].tolist() and view[-1].tolist() == arr[7].tolist() and len(view) == 3
    assert repr(rows) == f"NpyRows({str(path)!r}, shape=(10, 3), float32)"


def test_read_all_crosses_the_read_chunk(tmp_path):
    arr = np.random.default_rng(0).normal(size=(9001, 2)).astype(np.float32)
    np.save(tmp_path / "big.npy", arr)
    out = open_rows(tmp_path / "big.npy").read_all()
    assert out.shape == (9001, 2) and torch.equal(out, torch.from_numpy(arr))


def test_npy_files_are_memory_mapped_and_checked(tmp_path):
    np.save(tmp_path / "x.npy", np.ones((4, 2), np.float32))
    assert isinstance(open_rows(tmp_path / "x.npy")._array, np.memmap)
    np.save(tmp_path / "obj.npy", np.array([["a"], ["b"]], dtype=object), allow_pickle=True)
    with pytest.raises(DatasetError, match="could not be read"):  # pickled objects are never loaded
        open_rows(tmp_path / "obj.npy")
    np.save(tmp_path / "str.npy", np.array([["a"], ["b"]]))
    with pytest.raises(InputError, match=r"str\.npy holds <U1 data; pass numbers"):
        open_rows(tmp_path / "str.npy")
    with pytest.raises(InputError, match=r"X is empty \(0, 3\)"):
        NpyRows(np.zeros((0, 3), np.float32))
    with pytest.raises(InputError, match=r"X is empty \(3, 0\)"):
        NpyRows(np.zeros((3, 0), np.float32))
    with pytest.raises(InputError, match=r"X is empty \(2, 3, 0\)"):
        NpyRows(np.zeros((2, 3, 0), np.float32))
    assert NpyRows(np.ones((1, 3), np.float32)).shape == (1, 3)  # one row is enough
    bad = np.ones((3, 2))
    bad[2, 1] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    with pytest.raises(InputError, match=r"nan\.npy.*row 2"):
        open_rows(tmp_path / "nan.npy")[0:3]
    np.save(tmp_path / "huge.npy", np.full((2, 2), 1e39))
    with pytest.raises(InputError, match=r"huge\.npy.*float32"):
        open_rows(tmp_path / "huge.npy")[0:2]


def test_uint8_channel_last_files_move_their_channels_first(tmp_path):
    arr = np.random.default_rng(1).integers(0, 256, size=(3, 5, 6, 3), dtype=np.uint8)
    np.save(tmp_path / "hwc.npy", arr)
    rows = open_rows(tmp_path / "hwc.npy")
    assert rows.shape == (3, 3, 5, 6) and rows.source_shape == (3, 5, 6) and rows.dtype == torch.uint8
    assert torch.equal(rows[0:3], torch.from_numpy(arr).permute(0, 3, 1, 2))
    assert looks_channel_last((2, 5, 6, 1), True) and looks_channel_last((2, 5, 6, 4), True)
    for shape in ((2, 5, 6, 2), (2, 5, 6, 5), (2, 3, 6, 3), (2, 4, 6, 3), (2, 1, 6, 3)):
        assert not looks_channel_last(shape, True), shape
    assert not looks_channel_last((2, 5, 6, 3), False)


def _save(path, array, mode=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode=mode).save(path)


def test_image_folders_of_every_colour_kind(tmp_path):
    rng = np.random.default_rng(2)
    rgb = rng.integers(0, 256, size=(2, 4, 5, 3), dtype=np.uint8)
    for i, a in enumerate(rgb):
        _save(tmp_path / "rgb" / f"{i}.PNG", a)  # suffixes in any case
    (tmp_path / "rgb" / "notes.txt").write_text("not an image")
    rows = open_rows(tmp_path / "rgb")
    assert isinstance(rows, ImageFileRows) and rows.shape == (2, 3, 4, 5) and rows.labels is None and rows.classes == []
    assert torch.equal(rows[0:2], torch.from_numpy(rgb).permute(0, 3, 1, 2))
    assert rows[np.array([], dtype=np.int64)].shape == (0, 3, 4, 5)
    gray = rng.integers(0, 256, size=(4, 5), dtype=np.uint8)
    _save(tmp_path / "p.png", gray, mode="L")
    Image.open(tmp_path / "p.png").convert("P").save(tmp_path / "palette.png")
    assert decode_image(str(tmp_path / "palette.png")).shape == (4, 5)  # palette images read as grayscale
    sixteen = (gray.astype(np.uint16) * 3)
    Image.fromarray(sixteen).save(tmp_path / "i16.png")
    assert decode_image(str(tmp_path / "i16.png")).ndim == 2
    assert decode_image(str(tmp_path / "p.png"), mode="RGB").shape == (4, 5, 3)
    (tmp_path / "broken.png").write_bytes(b"not a png")
    assert decode_image(str(tmp_path / "broken.png")).startswith(f"{tmp_path / 'broken.png'} is not a readable image (")


def test_class_subfolders_give_labels_in_name_order(tmp_path):
    rng = np.random.default_rng(3)
    for cls, n in (("b-cat", 2), ("a-dog", 1)):
        for i in range(n):
            _save(tmp_path / "f" / cls / f"{i}.png", rng.integers(0, 256, size=(4, 4), dtype=np.uint8))
    files, labels, classes = image_files(tmp_path / "f")
    assert classes == ["a-dog", "b-cat"] and labels.dtype == np.int64 and labels.tolist() == [0, 1, 1]
    assert [f.parent.name for f in files] == ["a-dog", "b-cat", "b-cat"]
    rows = open_rows(tmp_path / "f")
    assert rows.classes == ["a-dog", "b-cat"] and rows.labels.tolist() == [0, 1, 1] and rows.shape == (3, 1, 4, 4)
    _save(tmp_path / "f" / "b-cat" / "9.png", rng.integers(0, 256, size=(5, 4), dtype=np.uint8))
    with pytest.raises(DatasetError, match=r"images have different sizes .*9\.png is \(5, 4\), the first \(4, 4\)"):
        open_rows(tmp_path / "f")[0:4]


def test_concatenation_keeps_order_names_and_shapes(npy, tmp_path):
    path, arr = npy
    a = open_rows(path)
    b = TensorRows(torch.full((2, 3), -1.0), name="mem")
    both = ConcatRows([a, b])
    assert both.name == f"{path} + mem" and both.shape == (12, 3) and both.source_shape == (3,) and not both.uint8
    assert both[np.array([11, 0, 10, 9])].tolist() == [[-1.0] * 3, arr[0].tolist(), [-1.0] * 3, arr[9].tolist()]
    assert both.read_workers == 0
    images = np.zeros((2, 4, 4), np.uint8)
    np.save(tmp_path / "img.npy", images)
    gray = open_rows(tmp_path / "img.npy")
    mixed = ConcatRows([TensorRows(torch.zeros(1, 1, 4, 4, dtype=torch.uint8), name="t"), gray])
    assert mixed.source_shape == (1, 4, 4) and mixed.sample_shape == (1, 4, 4) and mixed.uint8
    with pytest.raises(InputError, match="sample shapes"):
        ConcatRows([a, gray])


def test_transformed_rows_and_their_subsets_apply_the_function(npy):
    path, arr = npy
    t = TransformedRows(open_rows(path), lambda x: x * 2)
    assert t[1:3].tolist() == (arr[1:3] * 2).tolist()
    sub = t.subset([4, 0])
    assert isinstance(sub, TransformedRows) and sub[0:2].tolist() == (arr[[4, 0]] * 2).tolist()


def test_data_workers(monkeypatch):
    monkeypatch.delenv("ANOMALYKIT_DATA_WORKERS", raising=False)
    import os

    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    assert data_workers() == 4
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    assert data_workers() == 1
    monkeypatch.setattr(os, "cpu_count", lambda: None)
    assert data_workers() == 1
    monkeypatch.setenv("ANOMALYKIT_DATA_WORKERS", "0")
    assert data_workers() == 0
    for bad in ("-1", "two"):
        monkeypatch.setenv("ANOMALYKIT_DATA_WORKERS", bad)
        with pytest.raises(InputError, match=f"ANOMALYKIT_DATA_WORKERS={bad!r} is not a worker count"):
            data_workers()

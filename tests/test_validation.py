"""User data -> the tensors detectors work on (anomalykit.validation), case by case against values
written out here: accepted shapes and dtypes, what is kept (uint8, the source shape), what is
refused and with which one-line message."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from anomalykit import InputError
from anomalykit.lazy_rows import LazyRows
from anomalykit.validation import as_input_tensor, as_label_tensor, as_streamed_input, source_is_uint8, source_sample_shape


def test_rows_and_float_images_become_float32_with_their_values():
    rows = np.array([[1, 2, 3], [4, 5, 6]], dtype=np.int64)
    t = as_input_tensor(rows)
    assert t.dtype == torch.float32 and t.tolist() == [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]
    assert source_sample_shape(t) == (3,) and not source_is_uint8(t)
    images = np.arange(2 * 3 * 4, dtype=np.float64).reshape(2, 3, 4) / 7
    t = as_input_tensor(images)
    assert t.shape == (2, 1, 3, 4) and t.dtype == torch.float32  # a channel axis is added
    assert source_sample_shape(t) == (3, 4)
    np.testing.assert_array_equal(t[:, 0].numpy(), images.astype(np.float32))
    assert as_input_tensor(np.array([[True, False]])).tolist() == [[1.0, 0.0]]


def test_uint8_images_stay_uint8_and_channel_last_moves_first():
    hwc = np.arange(2 * 5 * 6 * 3, dtype=np.uint8).reshape(2, 5, 6, 3)
    t = as_input_tensor(hwc)
    assert t.dtype == torch.uint8 and t.shape == (2, 3, 5, 6) and t.is_contiguous()
    assert torch.equal(t, torch.from_numpy(hwc).permute(0, 3, 1, 2))
    assert source_is_uint8(t) and source_is_uint8(hwc) and source_sample_shape(t) == (3, 5, 6)  # channels first
    # a float array of the same layout is read as it is: 5 channels of 6 x 3 images
    assert as_input_tensor(hwc.astype(np.float32)).shape == (2, 5, 6, 3)
    # (N, 3, H, W) uint8 is already channels first
    assert as_input_tensor(np.zeros((2, 3, 5, 6), np.uint8)).shape == (2, 3, 5, 6)


def test_a_validated_tensor_passes_through_but_a_view_is_checked_again():
    t = as_input_tensor(np.ones((3, 2)))
    assert as_input_tensor(t) is t
    view = t[:2]
    view[0, 0] = float("nan")
    with pytest.raises(InputError, match="NaN"):
        as_input_tensor(view)


@pytest.mark.parametrize("X, match", [
    (np.zeros(3), r"has 1 dimension\(s\) \(3,\); expected \(N, F\) rows"),
    (np.zeros((1, 2, 3, 4, 5)), r"has 5 dimension\(s\)"),
    (np.zeros((0, 3)), r"is empty \(0 rows\)"),
    (np.zeros((2, 0)), r"has an empty feature axis \(2, 0\)"),
    (np.array([[1 + 2j]]), "complex dtype"),
    (torch.zeros(2, 2, dtype=torch.complex64), "complex dtype"),
    (np.array([["a", "b"]]), "has dtype <U1; pass numbers"),
    (np.array([[1, 2]], dtype="timedelta64[s]"), "has dtype timedelta64"),
    (np.array([[1, 2]], dtype="datetime64[s]"), "has dtype datetime64"),
    (np.array([[1.0, np.nan]]), "NaN"),
    (np.array([[1.0, np.inf]]), "inf"),
    (torch.tensor([[1.0, float("-inf")]], dtype=torch.float64), "inf"),
    (np.array([[1e39]]), "float32"),
    ([[1, 2], [3]], "could not be read as an array"),
])
def test_bad_data_is_one_line(X, match):
    with pytest.raises(InputError, match=match) as err:
        as_input_tensor(X)
    assert "\n" not in str(err.value) and str(err.value).startswith("X ")


def test_values_at_float32_s_edge_are_accepted():
    edge = float(np.finfo(np.float32).max)
    assert as_input_tensor(np.array([[edge, -edge]], dtype=np.float64)).tolist() == [[edge, -edge]]


def test_streamed_input_keeps_lazy_rows_and_wraps_memmaps(tmp_path):
    np.save(tmp_path / "x.npy", np.arange(12, dtype=np.float32).reshape(4, 3))
    mm = np.load(tmp_path / "x.npy", mmap_mode="r")
    rows = as_streamed_input(mm)
    assert isinstance(rows, LazyRows) and tuple(rows.shape) == (4, 3)
    assert as_streamed_input(rows) is rows
    assert isinstance(as_streamed_input(np.ones((2, 2))), torch.Tensor)


def test_labels():
    assert as_label_tensor([0, 1, 1], 3).tolist() == [0, 1, 1]
    assert as_label_tensor(torch.tensor([1.0, 0.0]), 2).dtype == torch.int64
    assert as_label_tensor(np.array([True, False]), 2).tolist() == [1, 0]
    with pytest.raises(InputError, match=r"y must be a 1-D array of 3 labels \(one per row of X\); got shape \(2,\)"):
        as_label_tensor([0, 1], 3)
    with pytest.raises(InputError, match=r"got shape \(1, 2\)"):
        as_label_tensor([[0, 1]], 2)
    with pytest.raises(InputError, match="y contains NaN or inf"):
        as_label_tensor([0.0, float("nan")], 2)
    with pytest.raises(InputError, match=r"only 0 \(normal\) and 1 \(anomaly\); found \[0, 2\]"):
        as_label_tensor([0, 2], 2)


def test_the_tensor_is_a_copy_of_the_users_array():
    arr = np.ones((2, 3), dtype=np.float32)
    t = as_input_tensor(arr)
    arr[0, 0] = 5.0
    assert t[0, 0] == 1.0
    a64 = np.ones((2, 3))
    t64 = as_input_tensor(a64)
    a64[0, 0] = 7.0
    assert t64[0, 0] == 1.0 and t64.dtype == torch.float32
    u8 = np.ones((2, 4, 4), np.uint8)
    tu = as_input_tensor(u8)
    u8[0, 0, 0] = 9
    assert tu[0, 0, 0, 0] == 1


def test_float64_tensors_beyond_float32_and_named_messages(tmp_path):
    with pytest.raises(InputError, match="^X .*float32"):
        as_input_tensor(torch.tensor([[1e39]], dtype=torch.float64))
    with pytest.raises(InputError, match="^rows .*NaN"):
        as_input_tensor(torch.tensor([[float("nan")]]), name="rows")
    np.save(tmp_path / "named.npy", np.full((2, 2), np.nan, np.float32))
    mm = np.load(tmp_path / "named.npy", mmap_mode="r")
    assert as_streamed_input(mm, name="my rows").name == "my rows" and as_streamed_input(mm).name == "X"
    with pytest.raises(InputError, match="^my rows .*NaN"):
        as_input_tensor(as_streamed_input(mm, name="my rows"))
    with pytest.raises(InputError, match="^Y has 1 dimension"):
        as_streamed_input(np.zeros(3), name="Y")


def test_lazy_rows_are_read_whole_into_a_validated_tensor(tmp_path):
    arr = np.arange(24, dtype=np.float64).reshape(4, 2, 3)
    np.save(tmp_path / "x.npy", arr)
    from anomalykit import open_rows

    t = as_input_tensor(open_rows(tmp_path / "x.npy"))
    assert t.shape == (4, 1, 2, 3) and t.dtype == torch.float32 and source_sample_shape(t) == (2, 3)
    np.testing.assert_array_equal(t[:, 0].numpy(), arr.astype(np.float32))
    plain = torch.zeros(5, 2, 7)
    assert source_sample_shape(plain) == (2, 7)  # a tensor that never went through validation


def test_integer_and_double_tensors_become_float32_and_uint8_tensors_count_as_uint8():
    t = as_input_tensor(torch.arange(6).reshape(2, 3))
    assert t.dtype == torch.float32 and t.tolist() == [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]
    assert as_input_tensor(torch.ones(2, 3, dtype=torch.float64) / 3).dtype == torch.float32
    raw = torch.tensor([[0, 255], [128, 7]], dtype=torch.uint8)
    assert source_is_uint8(raw) and source_is_uint8(as_input_tensor(raw))
    assert not source_is_uint8(torch.zeros(2, 2)) and not source_is_uint8(np.zeros((2, 2)))


def test_a_uint8_tensor_is_scaled_like_the_same_uint8_array():
    """``auto`` scaling of uint8 images: x / 127.5 - 1, whether they come as a numpy array or a tensor."""
    from anomalykit.preprocess import Preprocessor

    images = np.random.default_rng(0).integers(0, 256, size=(20, 1, 6, 6)).astype(np.uint8)
    images[0, 0, 0, :2] = [0, 255]
    for X in (images, torch.from_numpy(images)):
        t = as_input_tensor(X)
        p = Preprocessor("auto").fit(t)
        np.testing.assert_allclose(p.transform(t[:1]).numpy()[0, 0, 0, :2], [-1.0, 1.0])

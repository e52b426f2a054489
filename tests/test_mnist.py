"""Properties of dgm.data's MNIST-format loaders, on small IDX files written here (real format, real gzip).

The split sizes and the SHA-256 constants are monkeypatched to match the small files: 12 training
images (8 train, the last 4 val) and 5 test images, each pixel a known function of (image, pixel).
Nothing here touches the network: urllib's urlopen fails the test unless a test serves the files.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import re
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch

import dgm.data as D
from dgm.data import DataFileError, MissingDataError, fashion_mnist, mnist

N_TRAIN, N_VAL, N_TEST = 8, 4, 5
SIDE = D.MNIST_SIDE
NAMES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
         "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


def idx_bytes(a: np.ndarray, magic: int | None = None) -> bytes:
    """An uncompressed IDX file of the uint8 array a: magic 0x000008nn, big-endian dimensions, values."""
    magic = 0x800 + a.ndim if magic is None else magic
    header = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in a.shape)
    return header + a.astype(np.uint8).tobytes()


def images(n: int, offset: int) -> np.ndarray:
    """n images whose pixel p of image i is (offset + 37 i + 3 p) mod 256: every image differs."""
    i = np.arange(n)[:, None]
    p = np.arange(SIDE * SIDE)[None, :]
    return ((offset + 37 * i + 3 * p) % 256).astype(np.uint8).reshape(n, SIDE, SIDE)


def dataset_files(offset: int) -> dict[str, tuple[np.ndarray, bytes]]:
    """The four gzipped files of a small dataset: name -> (array, gz bytes)."""
    arrays = {
        NAMES[0]: images(N_TRAIN + N_VAL, offset),
        NAMES[1]: (np.arange(N_TRAIN + N_VAL) * 7 + offset) % 10,
        NAMES[2]: images(N_TEST, offset + 101),
        NAMES[3]: (np.arange(N_TEST) * 3 + offset + 1) % 10,
    }
    return {k: (a, gzip.compress(idx_bytes(a.astype(np.uint8)))) for k, a in arrays.items()}


FILES = {"mnist": dataset_files(0), "fashion_mnist": dataset_files(50)}
# the module's constants as written, read at collection, before any fixture patches them
REAL_SPLITS = dict(D.MNIST_SPLITS)


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


@pytest.fixture(autouse=True)
def small_world(monkeypatch, tmp_path):
    """Small split sizes and matching checksums; no DGM_DATA; HOME in tmp_path; urlopen forbidden."""
    monkeypatch.setattr(D, "MNIST_SPLITS", {"train": N_TRAIN, "val": N_VAL, "test": N_TEST})
    sums = {ds: {k: sha(gz) for k, (_, gz) in f.items()} for ds, f in FILES.items()}
    monkeypatch.setattr(D, "MNIST_SHA256", sums)
    monkeypatch.delenv("DGM_DATA", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))

    def no_network(*args, **kwargs):
        pytest.fail(f"urlopen was called ({args[:1]}) though nothing should be downloaded")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)


def write(root: Path, dataset: str = "mnist", skip: tuple[str, ...] = ()) -> Path:
    folder = root / dataset
    folder.mkdir(parents=True, exist_ok=True)
    for name, (_, gz) in FILES[dataset].items():
        if name not in skip:
            (folder / name).write_bytes(gz)
    return folder


@pytest.fixture
def root(tmp_path) -> Path:
    r = tmp_path / "cache"
    write(r, "mnist")
    write(r, "fashion_mnist")
    return r


def expected(dataset: str, name: str) -> torch.Tensor:
    """The file's values as the loaders should return them: images (n, 784), labels (n,), long."""
    a = FILES[dataset][name][0]
    return torch.from_numpy((a.reshape(len(a), -1) if a.ndim == 3 else a).astype(np.int64))


# ----------------------------------------------------------------------- parsing and splits
def test_split_constants_are_the_documented_ones():
    assert D.MNIST_LEVELS == 256 and D.MNIST_SIDE ** 2 == 784
    assert REAL_SPLITS == {"train": 50_000, "val": 10_000, "test": 10_000}
    assert list(REAL_SPLITS) == list(D.DIGITS_SPLITS)  # the same split names as the digits
    assert set(D.MNIST_SHA256) == set(D.MNIST_MIRRORS) == set(D.MNIST_DATASETS)
    for ds in D.MNIST_DATASETS:
        assert set(D.MNIST_SHA256[ds]) == set(NAMES)
        assert all(len(h) == 64 and int(h, 16) >= 0 for h in D.MNIST_SHA256[ds].values())


def test_images_are_long_rows_of_784_with_their_labels(root):
    x, y = mnist("train", root=root, labels=True)
    assert x.dtype == torch.long and x.shape == (N_TRAIN, 784)
    assert y.dtype == torch.long and y.shape == (N_TRAIN,)
    assert torch.equal(x, expected("mnist", NAMES[0])[:N_TRAIN])
    assert torch.equal(y, expected("mnist", NAMES[1])[:N_TRAIN])
    # row by row: reshaping gives the 28x28 images of the file back
    assert torch.equal(x.reshape(-1, SIDE, SIDE)[3], torch.from_numpy(FILES["mnist"][NAMES[0]][0][3]).long())
    assert int(x.min()) >= 0 and int(x.max()) < D.MNIST_LEVELS
    assert torch.equal(mnist("train", root=root), x)  # labels=False: the images alone


def test_val_is_the_last_block_of_the_training_file_and_test_the_t10k_file(root):
    train, y_train = mnist("train", root=root, labels=True)
    val, y_val = mnist("val", root=root, labels=True)
    test, y_test = mnist("test", root=root, labels=True)
    full = expected("mnist", NAMES[0])
    assert (len(train), len(val), len(test)) == (N_TRAIN, N_VAL, N_TEST)
    assert torch.equal(torch.cat([train, val]), full)  # in order, disjoint, nothing left out
    assert torch.equal(val, full[-N_VAL:])
    assert not (train[:, None, :] == val[None, :, :]).all(-1).any()  # no image in both
    assert torch.equal(torch.cat([y_train, y_val]), expected("mnist", NAMES[1]))
    assert torch.equal(test, expected("mnist", NAMES[2]))
    assert torch.equal(y_test, expected("mnist", NAMES[3]))


def test_returned_tensors_are_copies(root):
    x = mnist("train", root=root)
    x[:] = 0
    assert torch.equal(mnist("train", root=root), expected("mnist", NAMES[0])[:N_TRAIN])


def test_fashion_mnist_reads_its_own_folder(root):
    x, y = fashion_mnist("val", root=root, labels=True)
    assert x.dtype == torch.long and x.shape == (N_VAL, 784)
    assert torch.equal(x, expected("fashion_mnist", NAMES[0])[-N_VAL:])
    assert torch.equal(y, expected("fashion_mnist", NAMES[1])[-N_VAL:])
    assert not torch.equal(x, mnist("val", root=root))


def test_unknown_split_and_dataset_say_what_is_valid(root):
    with pytest.raises(ValueError, match="train, val, test"):
        mnist("validation", root=root)
    with pytest.raises(ValueError, match="mnist, fashion_mnist"):
        D.download_mnist("kmnist", root=root)


# ----------------------------------------------------------------------- cache folder
def test_cache_folder_is_root_else_dgm_data_else_home_cache(tmp_path, root, monkeypatch):
    assert D.data_home() == tmp_path / "home" / ".cache" / "dgm"
    monkeypatch.setenv("DGM_DATA", str(root))
    assert D.data_home() == root
    assert torch.equal(mnist("test", labels=True)[1], expected("mnist", NAMES[3]))
    empty = tmp_path / "empty"
    assert D.data_home(empty) == empty  # root wins over DGM_DATA
    with pytest.raises(MissingDataError, match=re.escape(str(empty / "mnist"))):
        mnist("test", root=empty)
    monkeypatch.setenv("DGM_DATA", str(empty))
    assert torch.equal(mnist("test", root=root), expected("mnist", NAMES[2]))
    with pytest.raises(MissingDataError, match=re.escape(str(empty / "mnist"))):
        mnist("test")


def test_default_cache_is_home_cache_dgm(tmp_path):
    home = write(tmp_path / "home" / ".cache" / "dgm", "mnist")
    assert home == tmp_path / "home" / ".cache" / "dgm" / "mnist"
    assert torch.equal(mnist("val"), expected("mnist", NAMES[0])[-N_VAL:])


# ----------------------------------------------------------------------- errors
def test_wrong_checksum_names_the_file_both_sums_and_the_fix(root, monkeypatch):
    monkeypatch.setitem(D.MNIST_SHA256, "mnist", {**D.MNIST_SHA256["mnist"], NAMES[2]: "0" * 64})
    with pytest.raises(DataFileError) as e:
        mnist("test", root=root)
    msg = str(e.value)
    assert NAMES[2] in msg and "0" * 64 in msg and sha(FILES["mnist"][NAMES[2]][1]) in msg
    assert "Delete it and download again" in msg


def test_a_file_replaced_after_reading_is_checked_again(root):
    mnist("train", root=root)
    (root / "mnist" / NAMES[0]).write_bytes(FILES["fashion_mnist"][NAMES[0]][1] + b"\0")
    with pytest.raises(DataFileError, match="wrong SHA-256"):
        mnist("train", root=root)


def test_missing_files_are_each_named_with_folder_urls_and_command(tmp_path):
    root = tmp_path / "partial"
    folder = write(root, "mnist", skip=(NAMES[0], NAMES[3]))
    with pytest.raises(MissingDataError) as e:
        mnist("test", root=root)
    assert isinstance(e.value, FileNotFoundError)
    msg = str(e.value)
    for name in (NAMES[0], NAMES[3]):
        assert name in msg
        for url in D.MNIST_MIRRORS["mnist"]:
            assert url + name in msg
    assert NAMES[1] not in msg and NAMES[2] not in msg  # only what is missing
    assert str(folder) in msg
    assert f"python -m dgm.data download mnist --root {root}" in msg
    assert "download=True" in msg and "DGM_DATA" in msg


def test_without_root_the_command_has_no_root_option(tmp_path, monkeypatch):
    monkeypatch.setenv("DGM_DATA", str(tmp_path / "nothing"))
    with pytest.raises(MissingDataError) as e:
        fashion_mnist("train")
    msg = str(e.value)
    assert "python -m dgm.data download fashion_mnist\n" in msg
    assert all(name in msg for name in NAMES)
    assert str(tmp_path / "nothing" / "fashion_mnist") in msg


def replace(root: Path, name: str, gz: bytes, monkeypatch) -> None:
    """Put gz into the mnist folder as name, with a matching checksum (so the parser sees it)."""
    (root / "mnist" / name).write_bytes(gz)
    monkeypatch.setitem(D.MNIST_SHA256, "mnist", {**D.MNIST_SHA256["mnist"], name: sha(gz)})


def test_truncated_idx_data_is_reported(root, monkeypatch):
    raw = idx_bytes(FILES["mnist"][NAMES[2]][0])
    replace(root, NAMES[2], gzip.compress(raw[:-100]), monkeypatch)
    with pytest.raises(DataFileError, match="truncated") as e:
        mnist("test", root=root)
    assert NAMES[2] in str(e.value) and "download again" in str(e.value)
    replace(root, NAMES[2], gzip.compress(raw[:10]), monkeypatch)  # not even a header
    with pytest.raises(DataFileError, match="truncated"):
        mnist("test", root=root)


def test_truncated_or_foreign_gzip_is_reported(root, monkeypatch):
    gz = FILES["mnist"][NAMES[2]][1]
    replace(root, NAMES[2], gz[: len(gz) // 2], monkeypatch)
    with pytest.raises(DataFileError, match="not a complete gzip file"):
        mnist("test", root=root)
    replace(root, NAMES[2], idx_bytes(FILES["mnist"][NAMES[2]][0]), monkeypatch)  # not compressed
    with pytest.raises(DataFileError, match="not a complete gzip file"):
        mnist("test", root=root)


def test_wrong_magic_is_reported(root, monkeypatch):
    a = FILES["mnist"][NAMES[2]][0]
    replace(root, NAMES[2], gzip.compress(idx_bytes(a, magic=0x00000D03)), monkeypatch)  # floats
    with pytest.raises(DataFileError, match="magic number is 0x00000d03, expected 0x00000803"):
        mnist("test", root=root)
    # a labels file where the images file should be
    replace(root, NAMES[2], FILES["mnist"][NAMES[3]][1], monkeypatch)
    with pytest.raises(DataFileError, match="0x00000801, expected 0x00000803"):
        mnist("test", root=root)
    replace(root, NAMES[3], FILES["mnist"][NAMES[2]][1], monkeypatch)
    with pytest.raises(DataFileError, match="not an IDX file of labels"):
        D._read_idx(root / "mnist" / NAMES[3], 1)


def test_wrong_image_size_and_counts_are_reported(root, monkeypatch):
    replace(root, NAMES[2], gzip.compress(idx_bytes(np.zeros((N_TEST, 8, 8), np.uint8))), monkeypatch)
    with pytest.raises(DataFileError, match="8x8 pixels, expected 28x28"):
        mnist("test", root=root)
    replace(root, NAMES[2], FILES["mnist"][NAMES[2]][1], monkeypatch)
    replace(root, NAMES[3], gzip.compress(idx_bytes(np.zeros(N_TEST + 1, np.uint8))), monkeypatch)
    with pytest.raises(DataFileError, match="6 labels but t10k-images-idx3-ubyte.gz has 5 images"):
        mnist("test", root=root, labels=True)
    monkeypatch.setitem(D.MNIST_SPLITS, "test", N_TEST + 1)
    with pytest.raises(DataFileError, match="holds 5 images, expected 6"):
        mnist("test", root=root)


# ----------------------------------------------------------------------- downloading
def serve(dataset: str, calls: list, broken_mirror: int | None = None, wrong: bool = False):
    """A stand-in for urlopen that serves FILES[dataset] from its mirrors (one of them down)."""
    def urlopen(url, timeout=None):
        calls.append(url)
        base, name = url.rsplit("/", 1)
        mirror = D.MNIST_MIRRORS[dataset].index(base + "/")
        if mirror == broken_mirror:
            raise urllib.error.URLError("mirror down")
        return io.BytesIO(b"not the file" if wrong else FILES[dataset][name][1])

    return urlopen


def test_download_false_never_touches_the_network(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(urllib.request, "urlopen", serve("mnist", calls))
    with pytest.raises(MissingDataError):
        mnist("train", root=tmp_path / "none")
    assert calls == []
    assert not (tmp_path / "none").exists()  # nor creates the folder


def test_download_true_fetches_into_the_cache_then_loads(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(urllib.request, "urlopen", serve("mnist", calls, broken_mirror=0))
    monkeypatch.setenv("DGM_DATA", str(tmp_path / "env"))
    x, y = mnist("val", download=True, labels=True)
    folder = tmp_path / "env" / "mnist"
    assert sorted(p.name for p in folder.iterdir()) == sorted(NAMES)  # no .part left behind
    assert all((folder / n).read_bytes() == FILES["mnist"][n][1] for n in NAMES)
    assert len(calls) == 2 * len(NAMES)  # each file: the broken mirror, then the next
    assert torch.equal(x, expected("mnist", NAMES[0])[-N_VAL:])
    assert torch.equal(y, expected("mnist", NAMES[1])[-N_VAL:])
    calls.clear()
    assert torch.equal(mnist("test", download=True), expected("mnist", NAMES[2]))
    assert calls == []  # present files are not fetched again


def test_download_only_fetches_missing_files(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(urllib.request, "urlopen", serve("fashion_mnist", calls))
    write(tmp_path, "fashion_mnist", skip=(NAMES[2],))
    assert D.download_mnist("fashion_mnist", root=tmp_path) == tmp_path / "fashion_mnist"
    assert calls == [D.MNIST_MIRRORS["fashion_mnist"][0] + NAMES[2]]


def test_a_wrong_download_is_never_kept(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(urllib.request, "urlopen", serve("mnist", calls, wrong=True))
    with pytest.raises(MissingDataError) as e:
        mnist("train", root=tmp_path, download=True)
    assert "wrong SHA-256" in str(e.value)
    assert all(url + NAMES[0] in str(e.value) for url in D.MNIST_MIRRORS["mnist"])
    assert list((tmp_path / "mnist").iterdir()) == []


def offline(url, timeout=None):
    raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")


def test_no_network_says_how_to_get_the_files(tmp_path, monkeypatch):
    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(MissingDataError) as e:
        mnist("train", root=tmp_path, download=True)
    msg = str(e.value)
    assert "could not download" in msg and "name resolution" in msg
    for name in NAMES:  # every file was tried, and each is named with its URLs
        assert all(url + name in msg for url in D.MNIST_MIRRORS["mnist"])
    assert list((tmp_path / "mnist").iterdir()) == []  # nothing partial left
    assert str(tmp_path / "mnist") in msg and f"python -m dgm.data download mnist --root {tmp_path}" in msg


def test_command_line_download(tmp_path, monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(urllib.request, "urlopen", serve("mnist", calls))
    assert D.main(["download", "mnist", "--root", str(tmp_path)]) == 0
    assert str(tmp_path / "mnist") in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "mnist").iterdir()) == sorted(NAMES)
    assert torch.equal(mnist("test", root=tmp_path), expected("mnist", NAMES[2]))
    # offline: the command fails with the manual steps and exit status 1
    monkeypatch.setattr(urllib.request, "urlopen", offline)
    assert D.main(["download", "fashion_mnist", "--root", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "could not download" in err and str(tmp_path / "fashion_mnist") in err
    with pytest.raises(SystemExit):
        D.main(["download", "kmnist"])

"""flowpost.data: registry, checksums, conversions. Never downloads."""

import hashlib
import os
import pathlib
import shutil

import numpy as np
import pytest

from flowpost import data

DATA = pathlib.Path(os.environ.get("FLOWPOST_DATA", "")).expanduser()
needs_data = pytest.mark.skipif(
    not (DATA / "README.md").is_file(),
    reason=f"data folder not found at FLOWPOST_DATA={DATA!s} (set it to the project's shared/data)",
)


@pytest.fixture
def no_download(monkeypatch):
    def fail(url, dest):
        raise AssertionError(f"a test tried to download {url}")

    monkeypatch.setattr(data, "_download", fail)


def test_fp_data_is_this_module():
    # a fresh interpreter: nothing else has imported flowpost.data before fp.data is read
    import subprocess
    import sys

    code = "import flowpost as fp; print(fp.data.__name__, fp.data.path.__name__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["flowpost.data", "path"]


def test_data_dir_follows_env(monkeypatch, tmp_path):
    monkeypatch.setenv("FLOWPOST_DATA", str(tmp_path))
    assert data.data_dir() == tmp_path
    monkeypatch.delenv("FLOWPOST_DATA")
    assert data.data_dir() == pathlib.Path.home() / ".cache" / "flowpost"


@needs_data
def test_registry_is_the_readme_checksum_list():
    lines = (DATA / "README.md").read_text().split("## Checksums (sha256)")[1].strip().splitlines()
    listed = {ln.split()[1].removeprefix("./"): ln.split()[0] for ln in lines if ln.strip()}
    assert len(listed) == 68
    assert {f: data._REGISTRY[f].sha256 for f in data.files()} == listed


def test_every_file_has_a_source():
    for f in data.files():
        e = data._REGISTRY[f]
        if f == "posteriordb/MODELS.md":
            assert e.urls == ()
            continue
        assert e.urls and all(u.startswith(("https://", "http://")) for u in e.urls), f
    mnist = data._REGISTRY["mnist/binarized_mnist.npz"]
    assert [u.rsplit("_", 1)[1] for u in mnist.urls] == ["train.amat", "valid.amat", "test.amat"]
    assert mnist.convert is data.amat_to_npz
    assert data._REGISTRY["freyfaces/freyfaces.npz"].urls == ("https://cs.nyu.edu/~roweis/data/frey_rawface.mat",)
    assert data._REGISTRY["posteriordb/draws/arK-arK.json.zip"].urls[0].endswith(
        "stan-dev/posteriordb/master/posterior_database/reference_posteriors/draws/draws/arK-arK.json.zip"
    )
    assert data._REGISTRY["uci/yacht/data.txt"].urls[0].endswith("UCI_Datasets/yacht/data/data.txt")


@needs_data
def test_all_shared_files_verify(no_download):
    for f in data.files():
        p = data.path(f)
        assert p == DATA / f and p.is_file()


def _copy(rel, root):
    dest = root / rel
    dest.parent.mkdir(parents=True)
    shutil.copyfile(DATA / rel, dest)
    os.chmod(dest, 0o644)
    return dest


@needs_data
def test_corrupted_file_is_rejected(monkeypatch, tmp_path, no_download):
    rel = "uci/yacht/index_target.txt"
    dest = _copy(rel, tmp_path)
    monkeypatch.setenv("FLOWPOST_DATA", str(tmp_path))
    assert data.path(rel) == dest  # the good copy passes
    dest.write_bytes(b"5\n")  # same size, other content
    actual = hashlib.sha256(b"5\n").hexdigest()
    with pytest.raises(ValueError) as e:
        data.path(rel)
    msg = str(e.value)
    assert rel in msg and data._REGISTRY[rel].sha256 in msg and actual in msg
    assert "Delete it" in msg and "FLOWPOST_DATA" in msg


@needs_data
def test_truncated_file_is_rejected(monkeypatch, tmp_path, no_download):
    rel = "posteriordb/draws/arK-arK.json.zip"
    dest = _copy(rel, tmp_path)
    blob = dest.read_bytes()
    dest.write_bytes(blob[: len(blob) // 2])
    monkeypatch.setenv("FLOWPOST_DATA", str(tmp_path))
    with pytest.raises(ValueError, match="checksum mismatch"):
        data.path(rel)


def test_missing_file_without_download(monkeypatch, tmp_path):
    monkeypatch.setenv("FLOWPOST_DATA", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="download=False"):
        data.path("uci/yacht/data.txt", download=False)
    with pytest.raises(FileNotFoundError, match="no public copy"):
        data.path("posteriordb/MODELS.md")


def test_unknown_file():
    with pytest.raises(ValueError, match="did you mean"):
        data.path("uci/yachts/data.txt")


def test_download_path_verifies_before_installing(monkeypatch, tmp_path):
    """A fetched file is checked before it is put in place (the fetch is simulated)."""
    monkeypatch.setenv("FLOWPOST_DATA", str(tmp_path))
    monkeypatch.setattr(data, "_download", lambda url, dest: pathlib.Path(dest).write_text("20\n"))
    assert data.path("uci/yacht/n_splits.txt").read_text() == "20\n"  # README's sha256 of "20\n"
    monkeypatch.setattr(data, "_download", lambda url, dest: pathlib.Path(dest).write_text("19\n"))
    with pytest.raises(ValueError, match="checksum mismatch"):
        data.path("uci/concrete/n_splits.txt")
    assert not (tmp_path / "uci/concrete/n_splits.txt").exists()


def test_amat_conversion(tmp_path):
    rng = np.random.default_rng(0)
    parts = [rng.integers(0, 2, (n, 784), dtype=np.uint8) for n in (3, 2, 1)]
    srcs = []
    for i, a in enumerate(parts):
        srcs.append(tmp_path / f"{i}.amat")
        np.savetxt(srcs[-1], a, fmt="%d")
    with open(tmp_path / "out.npz", "wb") as f:
        data.amat_to_npz(srcs, f)
    d = np.load(tmp_path / "out.npz")
    for k, a in zip(("train", "valid", "test"), parts):
        assert d[k].dtype == np.uint8 and np.array_equal(d[k], a)


@needs_data
def test_conversion_reproduces_published_npz(tmp_path):
    """Writing the published arrays the way the converters do gives the published bytes."""
    src = np.load(DATA / "freyfaces/freyfaces.npz")["faces"]
    import scipy.io

    scipy.io.savemat(tmp_path / "frey_rawface.mat", {"ff": np.ascontiguousarray(src.T)})
    with open(tmp_path / "freyfaces.npz", "wb") as f:
        data.frey_mat_to_npz([tmp_path / "frey_rawface.mat"], f)
    assert data.sha256(tmp_path / "freyfaces.npz") == data._REGISTRY["freyfaces/freyfaces.npz"].sha256
    assert data.array_sha256(DATA / "mnist/binarized_mnist.npz") == data._ARRAY_SHA256["mnist/binarized_mnist.npz"]

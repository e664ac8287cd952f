"""save_model(format="skops") / load_model(safe=True): loading runs no code from the
files, refuses untrusted types and pickles, and predicts as the model saved."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import skops.io as sio
import torch
from sklearn.datasets import make_classification
from sklearn.frozen import FrozenEstimator
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from skops.io.exceptions import UntrustedTypesFoundException
from torch import nn

from skdknn import DeepKNNClassifier, load_model, save_model
from skdknn.neighbors import (
    AnnoyBackend,
    FaissBackend,
    LSHBackend,
    ProjectedBackend,
    PyNNDescentBackend,
)
from skdknn.persistence import MANIFEST, file_sha256


class UserNet(nn.Module):
    """A user's own network: loaded only when the user trusts its class."""

    def __init__(self, n_features=12, n_classes=3):
        super().__init__()
        self.hidden = nn.Sequential(nn.Linear(n_features, 16), nn.ReLU())
        self.out = nn.Linear(16, n_classes)
        self.register_buffer("scale", torch.tensor(2.0))

    def forward(self, x):
        return self.out(self.hidden(x * self.scale))


@pytest.fixture(scope="module")
def data():
    X, y = make_classification(
        n_samples=300, n_features=12, n_informative=6, n_classes=3, random_state=0
    )
    return X.astype(np.float32), y


def _fit(data, **params):
    X, y = data
    settings = dict(n_neighbors=5, calibration_size=40, max_epochs=2, random_state=0)
    return DeepKNNClassifier(**{**settings, **params}).fit(X[:250], y[:250])


def _same_outputs(a, b, X):
    np.testing.assert_array_equal(a.predict(X), b.predict(X))
    np.testing.assert_array_equal(a.p_values(X), b.p_values(X))
    (d1, i1), (d2, i2) = a.kneighbors(X), b.kneighbors(X)
    np.testing.assert_array_equal(i1, i2)
    np.testing.assert_array_equal(d1, d2)


def _rewrite_model_file(directory: Path, obj) -> None:
    """Replace model.skops by ``obj`` and record its checksum, as a consistent
    attacker would (the checksums guard against damage, not against attacks)."""
    sio.dump(obj, directory / "model.skops")
    manifest = json.loads((directory / MANIFEST).read_text())
    manifest["model_sha256"] = file_sha256(directory / "model.skops")
    (directory / MANIFEST).write_text(json.dumps(manifest))


@pytest.mark.parametrize(
    "backend",
    [
        "exact",
        AnnoyBackend(n_trees=5, random_state=0),
        FaissBackend(index="ivf", random_state=0),
        LSHBackend(random_state=0),
        ProjectedBackend("annoy", n_components=8, random_state=0),
    ],
    ids=["exact", "annoy", "faiss-ivf", "lsh", "projected"],
)
def test_safe_round_trip(data, tmp_path, backend):
    clf = _fit(data, backend=backend)
    directory = save_model(clf, tmp_path / "m", format="skops")
    assert (directory / "model.skops").is_file()
    assert not (directory / "model.pkl").exists()
    loaded = load_model(directory, safe=True)
    _same_outputs(clf, loaded, data[0][250:])
    assert type(loaded.net_) is type(clf.net_)


def test_safe_round_trip_of_a_pipeline_with_a_prefit_net(data, tmp_path):
    X, y = data
    base = _fit(data)
    pipe = make_pipeline(
        StandardScaler(),
        DeepKNNClassifier(
            net=FrozenEstimator(base.net_),
            **{"n_neighbors": 5, "calibration_size": 40, "random_state": 0},
        ),
    ).fit(X[:250], y[:250])
    loaded = load_model(save_model(pipe, tmp_path / "p", format="skops"), safe=True)
    np.testing.assert_array_equal(loaded.predict_proba(X), pipe.predict_proba(X))


def test_user_module_class_must_be_trusted(data, tmp_path):
    clf = _fit(data, net=UserNet)
    directory = save_model(clf, tmp_path / "m", format="skops")
    name = f"{UserNet.__module__}.UserNet"
    with pytest.raises(UntrustedTypesFoundException, match=name):
        load_model(directory)
    for trusted in ([UserNet], [name]):
        loaded = load_model(directory, trusted=trusted)
        _same_outputs(clf, loaded, data[0][250:])
        assert isinstance(loaded.module_, UserNet)
        assert loaded.module_.scale.item() == 2.0


def test_untrusted_type_in_the_file_is_refused(data, tmp_path):
    # the model file replaced by one naming a function that would run code
    directory = save_model(_fit(data), tmp_path / "m", format="skops")
    _rewrite_model_file(directory, {"payload": Path.touch})
    with pytest.raises(UntrustedTypesFoundException, match=r"pathlib\.touch"):
        load_model(directory)


def test_skorch_net_state_is_never_unpickled(data, tmp_path):
    # a skorch net unpickles its modules in __setstate__; even though skorch's
    # classes are trusted for the nets skdknn rebuilds, skops may not build one
    clf = _fit(data)
    directory = save_model(clf, tmp_path / "m", format="skops")
    _rewrite_model_file(directory, {"net": clf.net_})
    with pytest.raises(UntrustedTypesFoundException, match="NeuralNetClassifier"):
        load_model(directory)


def test_pickle_is_refused_by_a_safe_load(data, tmp_path):
    # a model.pkl whose loading would create a file: refused, never unpickled
    directory = save_model(_fit(data), tmp_path / "m")
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    (directory / "model.pkl").write_bytes(pickle.dumps(Payload()))
    with pytest.raises(ValueError, match="stores its model as a pickle"):
        load_model(directory, safe=True, verify=False)
    assert not marker.exists()


def test_pickled_index_is_refused(data, tmp_path):
    with pytest.raises(ValueError, match="PyNNDescentBackend stores its index"):
        save_model(
            PyNNDescentBackend(n_neighbors=3, random_state=0).fit(np.eye(2)),
            tmp_path / "m",
            format="skops",
        )
    # a crafted file pointing a PyNNDescentBackend at a (pickled) index
    directory = save_model(_fit(data), tmp_path / "e", format="skops")
    manifest = json.loads((directory / MANIFEST).read_text())
    placeholder = {
        "__skdknn__": "index",
        "name": "index-0",
        "class": "skdknn.neighbors._pynndescent.PyNNDescentBackend",
        "state": {},
        "files": manifest["indexes"]["index-0"],
    }
    _rewrite_model_file(directory, [placeholder])
    with pytest.raises(ValueError, match="which a safe load refuses"):
        load_model(directory)


def test_unknown_format_is_refused(data, tmp_path):
    with pytest.raises(ValueError, match='"pickle" or "skops"'):
        save_model(_fit(data), tmp_path / "m", format="json")


@pytest.mark.parametrize("damage", ["bytes_changed", "pickle_renamed"])
def test_damaged_skops_file_is_named(data, tmp_path, damage):
    directory = save_model(_fit(data), tmp_path / "m", format="skops")
    path = directory / "model.skops"
    if damage == "bytes_changed":
        content = bytearray(path.read_bytes())
        content[len(content) // 3 : len(content) // 3 + 64] = bytes(64)
        path.write_bytes(bytes(content))
    else:
        path.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(ValueError, match=r"model.skops.*not a model in skops' format"):
        load_model(directory, verify=False)

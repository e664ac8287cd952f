"""Saving and loading fitted models, their neighbour indexes and adversarial sets.

``python docs/_examples/persistence.py`` (about 30 s on 2 CPU cores; it writes a
few hundred MB to a temporary directory and deletes them at the end).
"""

# ruff: noqa: E402  (each part imports what it needs where it starts, as on the page)

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from sklearn.model_selection import train_test_split

from skdknn import DeepKNNClassifier
from skdknn.datasets import load_mnist

X, y = load_mnist(return_X_y=True)
X_train, X_test, y_train, y_test = train_test_split(
    X, y, train_size=1200, test_size=500, stratify=y, random_state=0
)
clf = DeepKNNClassifier(
    n_neighbors=25, calibration_size=200, max_epochs=2, random_state=0
).fit(X_train, y_train)
os.chdir(tempfile.mkdtemp())  # the files below go to a temporary directory

# -- joblib ------------------------------------------------------------------------
import joblib

joblib.dump(clf, "dknn.joblib")
loaded = joblib.load("dknn.joblib")
print(f"{os.path.getsize('dknn.joblib') / 1e6:.1f} MB")
print(np.array_equal(loaded.p_values(X_test), clf.p_values(X_test)))

# -- save_model / load_model ---------------------------------------------------------
from skdknn import load_model, save_model

path = save_model(clf, "dknn")  # a new directory
for file in sorted(path.iterdir()):
    size = file.stat().st_size
    print(f"{file.name:<22}{size / 1e6:>6.1f} MB" if size > 1e5 else file.name)
mapped = load_model("dknn", mmap=True)
print(np.array_equal(mapped.p_values(X_test), clf.p_values(X_test)))

# -- the manifest and its checks -----------------------------------------------------
import json

manifest = json.loads(Path("dknn/skdknn-model.json").read_text())
print(manifest["format"], manifest["model"], manifest["skdknn_version"])
index = manifest["indexes"]["index-0"]
print(index["backend"], index["metric"], index["n_samples"], index["n_features"])

try:
    save_model(clf, "dknn")  # the directory is not empty
except FileExistsError as error:
    print(error)
save_model(clf, "dknn", overwrite=True)  # replaces the saved model

# -- checksums -----------------------------------------------------------------------
damaged = Path("dknn/index-3.fit_X.npy")  # same size, second half overwritten
content = damaged.read_bytes()
half = len(content) // 2
damaged.write_bytes(content[:half] + b"\xff" * (len(content) - half))
try:
    load_model("dknn")
except ValueError as error:
    print(str(error).split(":")[0])
save_model(clf, "dknn", overwrite=True)

# -- loading without running code from the files -------------------------------------
import skops.io as sio

safe_path = save_model(clf, "dknn-safe", format="skops")
print(sio.get_untrusted_types(file=safe_path / "model.skops"))
safe = load_model("dknn-safe", safe=True)  # the types above are trusted by default
print(np.array_equal(safe.p_values(X_test), clf.p_values(X_test)))
try:
    load_model("dknn", safe=True)  # model.pkl is a pickle: refused
except ValueError as error:
    print(error)

# -- version warning -----------------------------------------------------------------
import copy
import warnings

from skdknn.exceptions import InconsistentVersionWarning

old = copy.copy(clf)
old.skdknn_version_ = "0.0.1"  # as if an older skdknn had fitted it
joblib.dump(old, "old.joblib")
with warnings.catch_warnings():
    warnings.simplefilter("error", InconsistentVersionWarning)  # warning -> error
    try:
        joblib.load("old.joblib")
    except InconsistentVersionWarning as warning:
        print(warning.original_version, "->", warning.current_version)
        print(warning)

# -- adversarial sets ----------------------------------------------------------------
from sklearn.frozen import FrozenEstimator

from skdknn.attacks import FGSMAttack, load_adversarial, save_adversarial

attack = FGSMAttack(FrozenEstimator(clf), eps=0.25).fit(X_train)
X_adv = attack.transform(X_test)
file = save_adversarial(
    "fgsm_eps0.25",
    X_adv,
    attack=attack,
    y=y_test,
    metrics={"accuracy": clf.score(X_adv, y_test)},
)
saved = load_adversarial(file)
print(file.name, saved.attack, saved.params["eps"], saved.skdknn_version)
print(np.array_equal(saved.X_adv, X_adv), saved.X_adv.dtype, saved.y.shape)
print(saved.metrics)

tmp = os.getcwd()
os.chdir(Path(__file__).parent)
shutil.rmtree(tmp)

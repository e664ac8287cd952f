"""Scaling out with Dask: the code of docs/scaling-out.md, one session.

``python docs/_examples/scaling_out.py``: a LocalCluster of 2 in-process workers
(or the scheduler named by SKDKNN_SCHEDULER), a DkNN whose indexes are sharded on
them, fitted and queried on dask arrays, a grid search on the cluster, saving and
re-scattering. About two minutes on 2 CPU cores.
"""

import os
import tempfile

import dask
import dask.array as da
import joblib
import numpy as np
from distributed import Client, LocalCluster
from sklearn.base import clone
from sklearn.frozen import FrozenEstimator
from sklearn.model_selection import GridSearchCV, train_test_split

from skdknn import DeepKNNClassifier, load_model, save_model
from skdknn.datasets import load_mnist
from skdknn.neighbors import ShardedBackend
from skdknn.parallel import blockwise

address = os.environ.get("SKDKNN_SCHEDULER")  # e.g. "tcp://10.0.0.5:8786"
if address:
    client = Client(address)  # a real cluster, started by `dask scheduler` etc.
else:
    # two workers in this process; a script may use processes=True (one process
    # per worker, as on a cluster) under `if __name__ == "__main__":`
    cluster = LocalCluster(
        n_workers=2, threads_per_worker=1, processes=False, dashboard_address=":0"
    )
    client = Client(cluster)
print(f"{len(client.nthreads())} workers")


X, y = load_mnist(return_X_y=True)
X_train, X_test, y_train, y_test = train_test_split(
    X, y, train_size=1200, test_size=300, stratify=y, random_state=0
)
params = dict(n_neighbors=25, calibration_size=200, max_epochs=2, random_state=0)
local = DeepKNNClassifier(**params).fit(X_train, y_train)

# the same network, its indexes in one shard per worker
sharded = clone(local).set_params(
    net=FrozenEstimator(local.net_), backend=ShardedBackend(timeout=120)
)
sharded.fit(X_train, y_train)
first = sharded.backends_[0]
print(f"{first.n_shards_} shards per layer, of rows {first.shard_bounds_}")
dist, ind = sharded.kneighbors(X_test)
local_dist, local_ind = local.kneighbors(X_test)
print(f"same neighbours as one process: {np.array_equal(ind, local_ind)}")
close = np.allclose(dist, local_dist, rtol=1e-6, atol=0)
print(f"same distances, to float32 rounding: {close}")
print(f"accuracy {sharded.score(X_test, y_test):.3f}")


# images on the workers (here sent from memory; usually read there, e.g. from
# zarr or HDF5 files with da.from_zarr / da.from_array on an h5py dataset)
X_train_dask = da.from_array(X_train, chunks=(250, -1, -1, -1)).persist()
X_dask = da.from_array(X_test, chunks=(100, -1, -1, -1)).persist()  # 3 blocks
# the same model (prefit network, sharded indexes), fitted on the dask array
on_dask = clone(sharded).fit(X_train_dask, y_train)  # shards built on the workers
result = on_dask.predict_with_credibility(X_dask)  # lazy dask arrays
print(result.credibility)
prediction, credibility = dask.compute(result.prediction, result.credibility)
print(np.array_equal(prediction, sharded.predict(X_test)))
print(np.array_equal(credibility, sharded.credibility(X_test)))


credibility = blockwise(local, "credibility", X_dask)  # lazy, one task per block
print(credibility)
print(np.array_equal(credibility.compute(), local.credibility(X_test)))


prefit = clone(local).set_params(net=FrozenEstimator(local.net_))
grid = {"n_neighbors": [5, 25], "metric": ["euclidean", "cosine"]}
# every fit and score on the cluster; the data sent to the workers once
with joblib.parallel_backend("dask", scatter=[X_train, y_train]):
    search = GridSearchCV(prefit, grid, cv=2, n_jobs=-1).fit(X_train, y_train)
print(search.best_params_, f"{search.best_score_:.3f}")


with tempfile.TemporaryDirectory() as tmp:
    save_model(sharded, f"{tmp}/model")  # gathers each shard into files of its own
    loaded = load_model(f"{tmp}/model")  # searched in local threads
    print(np.array_equal(loaded.predict(X_test), sharded.predict(X_test)))
    for backend in loaded.backends_:
        backend.scatter(client)  # back onto the workers (this or another cluster)
    print(np.array_equal(loaded.predict(X_test), sharded.predict(X_test)))

client.close()

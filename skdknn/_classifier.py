"""DeepKNNClassifier: the Deep k-Nearest Neighbours as a scikit-learn classifier."""

from __future__ import annotations

import warnings
from numbers import Integral, Real
from typing import Any

import numpy as np
import torch
from joblib import Parallel, delayed
from numpy.typing import NDArray
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import (
    HasMethods,
    Interval,
    RealNotInt,
    StrOptions,
)
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data
from torch import nn

from . import conformal
from ._activations import LayerActivations
from ._calibration import balanced_calibration_split
from ._network import (
    build_network,
    initialize_network,
    torch_module,
    train_network,
)
from ._validation import (
    as_flat_rows,
    check_fitted_shape,
    check_input_shape,
    check_neighbors_per_class,
    check_value_range,
    value_range,
)
from ._version import __version__
from .exceptions import InconsistentVersionWarning
from .neighbors import make_backend
from .neighbors._base import METRICS, NeighborsBackend
from .nets import default_layers, resolve_layer

__all__ = ["DeepKNNClassifier"]


def _fit_backend(backend: Any, rows: NDArray[np.float32]) -> Any:
    """Fit a layer's backend on rows nobody else holds (a fancy-indexed copy of the
    activations): skdknn's backends index them without copying them again."""
    if isinstance(backend, NeighborsBackend):
        return backend._fit_rows(rows, copy=False)
    return backend.fit(rows)


class DeepKNNClassifier(ClassifierMixin, BaseEstimator):
    """Deep k-Nearest Neighbours classifier with conformal credibility.

    The DkNN of Papernot & McDaniel (2018): a k-nearest-neighbour search on the
    activations of several hidden layers of a network, whose neighbours' labels are
    calibrated on held-out data (conformal prediction). For an input ``x`` and every
    candidate label ``j``, the nonconformity ``alpha_j(x) = sum_l (k - n_{l,j}(x))``
    counts the neighbours that disagree with ``j`` over the layers ``l``; its
    p-value is the fraction of calibration scores at least as large. The prediction is
    the label with the largest p-value, its **credibility** that p-value and its
    **confidence** one minus the second largest.

    ``fit`` holds out a class-balanced calibration set, trains the network on the
    remaining rows (unless it is prefit), indexes their activations in one neighbour
    backend per layer and computes the calibration nonconformity scores.

    Parameters
    ----------
    net : None, torch module class or instance, skorch net or FrozenEstimator, \
            default=None
        The network. ``None`` trains the DkNN paper's CNN
        (:class:`skdknn.nets.DkNNPaperCNN`) on images and an MLP
        (:class:`skdknn.nets.MLP`) on flat rows. A torch module class or instance is
        trained with ``max_epochs``, ``lr`` and ``batch_size`` (an instance is copied
        first; a class receives ``n_classes``, ``n_features`` and ``input_shape``
        when its constructor takes them, as the classes of :mod:`skdknn.nets` do);
        a skorch ``NeuralNet`` is cloned and trained with its own settings. A
        prefit skorch net or torch module wrapped in
        :class:`sklearn.frozen.FrozenEstimator` is used as is and never retrained.
        A trained network passed without ``FrozenEstimator`` is retrained (a
        skorch net from scratch, a module copy fine-tuned): that warns
        (:class:`~skdknn.exceptions.RetrainingWarning`) when it is detectable, for an
        initialized skorch net and for a module in eval mode or holding gradients.
        The module must return logits.
    layers : list of str, default=None
        Names of the modules whose outputs are searched (dotted paths or unique
        short names, see :func:`skdknn.nets.layer_names`). ``None`` uses the
        module's ``dknn_layers`` attribute, else every activation module and the last
        module.
    n_neighbors : int, default=75
        Number of neighbours ``k`` per layer (75 in the DkNN paper).
    backend : str or NeighborsBackend, default="exact"
        Neighbour search engine: a name from :data:`skdknn.neighbors.BACKENDS`, a
        recipe such as ``"pca128+faiss-ivf"`` (see
        :func:`skdknn.neighbors.make_backend`) or an instance of a backend (any
        object with ``fit`` and ``kneighbors``), cloned once per layer;
        ``n_neighbors`` and ``metric`` are set on the clones.
    metric : {"euclidean", "cosine"}, default="euclidean"
        Distance between activations; ``cosine`` is the euclidean distance between
        L2-normalised activations.
    calibration_size : int or float, default=750
        Size of the class-balanced calibration set (int) or its fraction of the
        training rows (float in (0, 1)). The paper uses 750 (75 per class).
    input_shape : tuple of int, default=None
        Shape ``(channels, height, width)`` to which flat rows are reshaped before
        the network. Inferred from ``X`` when it is a stack of images.
    max_epochs : int, default=10
        Training epochs of a network built here (not of a given skorch net).
    lr : float, default=1e-3
        Adam learning rate of a network built here.
    batch_size : int, default=500
        Rows per training batch of a network built here, and per forward pass when
        extracting activations.
    device : str, default="cpu"
        Torch device of a network built here.
    memory : None, str or joblib.Memory, default=None
        Caches each layer's activations by network weights, rows and layer (like
        ``Pipeline(memory=...)``), so that refitting on the same rows, e.g. a grid
        search over ``n_neighbors`` or ``layers`` with a prefit net, never recomputes
        them. A string is a cache directory.
    n_jobs : int, default=None
        Layers queried in parallel (threads). ``None`` means 1.
    random_state : int, RandomState instance or None, default=None
        Seeds the calibration split and the network's initialisation and shuffling.
        The same integer gives identical predictions and credibilities.
    verbose : int, default=0
        Training log and progress bars when positive.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        Class labels, as given to ``fit``.
    n_features_in_ : int
        Number of values per input row (``C * H * W`` for images).
    input_shape_ : tuple of int or None
        Shape of one network input, or None for flat rows.
    input_range_ : ndarray of shape (2,)
        Smallest and largest value of the training ``X``. Every method that takes
        ``X`` warns (:class:`~skdknn.exceptions.InputRangeWarning`) when its values
        lie more than the width of this range (at least 1) outside it, e.g. pixels
        in [0, 255] given to a model fitted on [0, 1].
    net_ : skorch net or FrozenEstimator
        The trained (or prefit) network. Its own ``predict`` returns class indices
        into ``classes_``, not the labels.
    layers_ : list of str
        The layers searched.
    backends_ : list of NeighborsBackend
        One fitted neighbour index per layer.
    train_indices_ : ndarray of int
        Rows of the training ``X`` held in the neighbour indexes (and used to train a
        network built here); :meth:`kneighbors` returns indices into ``X``.
    calibration_indices_ : ndarray of int
        Rows of the training ``X`` held out for calibration.
    calibration_nonconformity_ : ndarray of shape (n_calibration,)
        Sorted nonconformity ``alpha_y(x)`` of the calibration points' true labels.
    skdknn_version_ : str
        Version of skdknn that fitted the model.

    See Also
    --------
    skdknn.conformal : The conformal maths as pure functions.
    sklearn.neighbors.KNeighborsClassifier : kNN on the raw input.

    Notes
    -----
    The prediction is the class with the most neighbours over all layers, which
    always has the largest p-value. Several classes can share the largest p-value
    (p-values are coarser than counts): the one with more neighbours wins, and
    equal counts go to the first class in ``classes_``. So ``predict`` agrees with
    ``predict_proba(X).argmax(axis=1)`` always, and with ``p_values(X).argmax(axis=1)``
    except on such p-value ties.

    A prefit network must not have seen the calibration points: refitting with
    ``FrozenEstimator(clf.net_)`` keeps them unseen only with the same ``X``,
    ``calibration_size`` and ``random_state`` as the fit that trained it.

    References
    ----------
    N. Papernot and P. McDaniel, "Deep k-Nearest Neighbors: Towards Confident,
    Interpretable and Robust Deep Learning", arXiv:1803.04765, 2018.

    Examples
    --------
    >>> from sklearn.datasets import make_classification
    >>> from skdknn import DeepKNNClassifier
    >>> X, y = make_classification(n_samples=300, n_features=8, random_state=0)
    >>> clf = DeepKNNClassifier(n_neighbors=10, calibration_size=60, max_epochs=20,
    ...                         batch_size=64, random_state=0).fit(X, y)
    >>> clf.layers_
    ['relu1', 'relu2', 'logits']
    >>> clf.predict(X[:4]).shape
    (4,)
    >>> clf.predict_proba(X[:2]).sum(axis=1)
    array([1., 1.])
    >>> bool(((clf.credibility(X) >= 0) & (clf.credibility(X) <= 1)).all())
    True
    """

    _parameter_constraints: dict[str, Any] = {
        "net": "no_validation",
        "layers": [list, tuple, None],
        "n_neighbors": [Interval(Integral, 1, None, closed="left")],
        "backend": [str, HasMethods(["fit", "kneighbors"])],
        "metric": [StrOptions(set(METRICS))],
        "calibration_size": [
            Interval(Integral, 1, None, closed="left"),
            Interval(RealNotInt, 0, 1, closed="neither"),
        ],
        "input_shape": [list, tuple, None],
        "max_epochs": [Interval(Integral, 0, None, closed="left")],
        "lr": [Interval(Real, 0, None, closed="neither")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "device": [str],
        "memory": [None, str, HasMethods(["cache"])],
        "n_jobs": [Integral, None],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

    def __init__(
        self,
        net: Any = None,
        layers: list[str] | None = None,
        n_neighbors: int = 75,
        backend: Any = "exact",
        metric: str = "euclidean",
        calibration_size: float = 750,
        input_shape: tuple[int, ...] | None = None,
        max_epochs: int = 10,
        lr: float = 1e-3,
        batch_size: int = 500,
        device: str = "cpu",
        memory: Any = None,
        n_jobs: int | None = None,
        random_state: Any = None,
        verbose: int = 0,
    ) -> None:
        self.net = net
        self.layers = layers
        self.n_neighbors = n_neighbors
        self.backend = backend
        self.metric = metric
        self.calibration_size = calibration_size
        self.input_shape = input_shape
        self.max_epochs = max_epochs
        self.lr = lr
        self.batch_size = batch_size
        self.device = device
        self.memory = memory
        self.n_jobs = n_jobs
        self.random_state = random_state
        self.verbose = verbose

    # -- fitting --------------------------------------------------------------------
    def fit(self, X: Any, y: Any) -> DeepKNNClassifier:
        """Train (or take) the network, index the layers and calibrate.

        Parameters
        ----------
        X : array-like of shape (n_samples, channels, height, width) or \
                (n_samples, n_features)
            Training images or rows. ``(n_samples, height, width)`` is read as
            single-channel images.
        y : array-like of shape (n_samples,)
            Class labels (any type scikit-learn accepts, strings included).

        Returns
        -------
        self : DeepKNNClassifier
            The fitted classifier.

        Raises
        ------
        ValueError
            Among others, for channels-last images ``(n, H, W, C)`` (the message
            names the channel order; pass ``input_shape`` if the network really
            takes them) and for an empty ``X``.

        Warns
        -----
        RetrainingWarning
            When ``net`` looks trained but is not wrapped in ``FrozenEstimator``.
        UserWarning
            When a class has fewer indexed points than ``n_neighbors``.
        """
        self._validate_params()
        X_flat, image_shape = as_flat_rows(X)
        X_flat, y = validate_data(self, X_flat, y, dtype=np.float32)
        check_classification_targets(y)
        self.input_range_ = value_range(X_flat)
        self.input_shape_ = check_input_shape(
            self.input_shape, image_shape, X_flat.shape[1]
        )
        self.classes_, y_encoded = np.unique(y, return_inverse=True)
        if self.classes_.size < 2:
            raise ValueError(
                "DeepKNNClassifier needs samples of at least 2 classes; got 1 class "
                f"({self.classes_[0]!r})."
            )
        rng = check_random_state(self.random_state)
        train_rows, calibration_rows = balanced_calibration_split(
            y_encoded, self.calibration_size, rng, classes=self.classes_
        )
        if train_rows.size < self.n_neighbors:
            raise ValueError(
                f"n_neighbors={self.n_neighbors} exceeds the {train_rows.size} samples "
                f"left for the neighbour indexes after holding out "
                f"{calibration_rows.size} calibration points; lower n_neighbors or "
                "calibration_size, or add samples."
            )
        check_neighbors_per_class(
            y_encoded[train_rows], self.n_neighbors, self.classes_
        )
        backend = self._make_layer_backend()
        X_net = self._network_input(X_flat)
        self.net_ = self._fit_net(X_net[train_rows], y_encoded[train_rows], rng)
        activations = self._activations(X_net, self.layers_)
        self.backends_ = [
            _fit_backend(clone(backend), acts[train_rows]) for acts in activations
        ]
        self.train_indices_ = train_rows
        self.calibration_indices_ = calibration_rows
        self._y_index = y_encoded[train_rows]
        counts = self._counts([acts[calibration_rows] for acts in activations])
        self.calibration_nonconformity_ = conformal.calibration_scores(
            counts, y_encoded[calibration_rows], self.n_neighbors
        )
        self.skdknn_version_ = __version__
        return self

    def _fit_net(self, X: NDArray, y: NDArray, rng: np.random.RandomState) -> Any:
        """Build the network, check the layer names, then train it (unless prefit).

        Torch's global RNG is seeded for initialisation and shuffling, then restored.
        """
        net = build_network(
            self.net,
            input_shape=self.input_shape_,
            n_features=self.n_features_in_,
            n_classes=self.classes_.size,
            max_epochs=self.max_epochs,
            lr=self.lr,
            batch_size=self.batch_size,
            device=self.device,
            verbose=self.verbose,
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(rng.randint(np.iinfo(np.int32).max)))
            self.layers_ = self._resolve_layers(initialize_network(net))
            return train_network(net, X, y)

    def _resolve_layers(self, module: nn.Module) -> list[str]:
        layers = default_layers(module) if self.layers is None else list(self.layers)
        if not layers:
            raise ValueError("layers must name at least one layer.")
        for name in layers:
            resolve_layer(module, name)  # raises with the list of available layers
        return layers

    def _make_layer_backend(self) -> Any:
        backend = make_backend(self.backend)
        params = backend.get_params()
        if "n_neighbors" in params:
            backend.set_params(n_neighbors=self.n_neighbors)
        if "metric" in params:
            backend.set_params(metric=self.metric)
        return backend

    # -- the data flow: input -> network -> activations -> neighbours -> counts ------
    @property
    def module_(self) -> nn.Module:
        """The torch module of the fitted network."""
        check_is_fitted(self, "net_")
        return torch_module(self.net_)

    def _network_input(self, X_flat: NDArray[np.float32]) -> NDArray[np.float32]:
        if self.input_shape_ is None:
            return X_flat
        return X_flat.reshape(X_flat.shape[0], *self.input_shape_)

    def _validate_input(self, X: Any) -> NDArray[np.float32]:
        """Validated network input for a fitted model."""
        check_is_fitted(self)
        X_flat, image_shape = as_flat_rows(X)
        name = type(self).__name__
        check_fitted_shape(X, image_shape, self.input_shape_, self.n_features_in_, name)
        X_flat = validate_data(self, X_flat, dtype=np.float32, reset=False)
        # models pickled before input_range_ existed skip the check
        check_value_range(X_flat, getattr(self, "input_range_", None), name)
        return self._network_input(X_flat)

    def _activations(
        self, X_net: NDArray[np.float32], layers: list[str]
    ) -> list[NDArray[np.float32]]:
        extract = LayerActivations(
            self.module_,
            layers,
            batch_size=self.batch_size,
            memory=self.memory,
            verbose=self.verbose,
        )
        return extract(X_net)

    def _query(self, activations: list[NDArray[np.float32]]) -> list[NDArray[np.intp]]:
        """Indices into the indexed rows of each layer's k nearest neighbours."""
        return Parallel(n_jobs=self.n_jobs, prefer="threads")(
            delayed(backend.kneighbors)(acts, self.n_neighbors, return_distance=False)
            for backend, acts in zip(self.backends_, activations, strict=True)
        )

    def _counts(self, activations: list[NDArray[np.float32]]) -> NDArray[np.int64]:
        neighbors = np.stack(self._query(activations), axis=1)
        return conformal.neighbor_label_counts(
            self._y_index[neighbors], self.classes_.size
        )

    def neighbor_counts(self, X: Any) -> NDArray[np.int64]:
        """Number of neighbours of each class in each layer: n_{l,j}(x).

        Parameters
        ----------
        X : array-like of shape (n_samples, ...) as in ``fit``

        Returns
        -------
        counts : ndarray of shape (n_samples, n_layers, n_classes)
            ``counts[i, l, j]`` neighbours of ``X[i]`` in ``layers_[l]`` have label
            ``classes_[j]``.
        """
        X_net = self._validate_input(X)
        return self._counts(self._activations(X_net, self.layers_))

    # -- predictions ----------------------------------------------------------------
    def predict(self, X: Any) -> NDArray:
        """Class with the largest p-value (most neighbours over all layers).

        Parameters
        ----------
        X : array-like of shape (n_samples, ...) as in ``fit``

        Returns
        -------
        y_pred : ndarray of shape (n_samples,)
            Labels from ``classes_``.
        """
        counts = self.neighbor_counts(X)
        return self.classes_[conformal.predict_from_counts(counts)]

    def predict_proba(self, X: Any) -> NDArray[np.float64]:
        """Layer-averaged neighbour label distribution (1 / (L k)) sum_l n_{l,j}(x).

        Parameters
        ----------
        X : array-like of shape (n_samples, ...) as in ``fit``

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes)
            Rows sum to one; columns follow ``classes_``.
        """
        return conformal.neighbor_proba(self.neighbor_counts(X))

    def p_values(self, X: Any) -> NDArray[np.float64]:
        """Conformal p-value of every class: share of calibration scores >= alpha_j.

        Parameters
        ----------
        X : array-like of shape (n_samples, ...) as in ``fit``

        Returns
        -------
        p : ndarray of shape (n_samples, n_classes)
            Columns follow ``classes_``.
        """
        alpha = conformal.nonconformity(self.neighbor_counts(X), self.n_neighbors)
        return conformal.p_values(alpha, self.calibration_nonconformity_)

    def credibility(self, X: Any) -> NDArray[np.float64]:
        """Credibility of the prediction: the largest p-value.

        Low credibility flags inputs unlike the training data of their predicted
        class (e.g. adversarial or out-of-distribution inputs).

        Parameters
        ----------
        X : array-like of shape (n_samples, ...) as in ``fit``

        Returns
        -------
        credibility : ndarray of shape (n_samples,)
        """
        return conformal.credibility(self.p_values(X))

    def confidence(self, X: Any) -> NDArray[np.float64]:
        """Confidence of the prediction: one minus the second largest p-value.

        Parameters
        ----------
        X : array-like of shape (n_samples, ...) as in ``fit``

        Returns
        -------
        confidence : ndarray of shape (n_samples,)
        """
        return conformal.confidence(self.p_values(X))

    def predict_set(self, X: Any, significance: float = 0.1) -> NDArray[np.bool_]:
        """Conformal prediction sets {j : p_j(x) > significance}.

        On data exchangeable with the calibration set, a set holds the true label
        with probability at least ``1 - significance - 1 / (n_calibration + 1)``.

        Parameters
        ----------
        X : array-like of shape (n_samples, ...) as in ``fit``
        significance : float in [0, 1], default=0.1
            Significance level epsilon.

        Returns
        -------
        sets : ndarray of bool, shape (n_samples, n_classes)
            ``sets[i, j]`` is True when ``classes_[j]`` is in the set of ``X[i]``.
        """
        return conformal.prediction_sets(self.p_values(X), significance)

    def kneighbors(
        self, X: Any, layer: str | None = None
    ) -> tuple[NDArray[np.float32], NDArray[np.intp]]:
        """Nearest training points of X in the activation space of the layers.

        Parameters
        ----------
        X : array-like of shape (n_samples, ...) as in ``fit``
        layer : str, default=None
            One layer of ``layers_``; ``None`` returns every layer.

        Returns
        -------
        distances : ndarray
            Shape (n_samples, n_neighbors) for one layer, else
            (n_samples, n_layers, n_neighbors); nearest first.
        indices : ndarray
            Same shape; row indices into the ``X`` passed to ``fit``.
        """
        X_net = self._validate_input(X)
        if layer is None:
            positions = list(range(len(self.layers_)))
        elif layer in self.layers_:
            positions = [self.layers_.index(layer)]
        else:
            raise ValueError(
                f"Unknown layer {layer!r}; this model searches layers {self.layers_}."
            )
        activations = self._activations(X_net, [self.layers_[p] for p in positions])
        results = [
            self.backends_[p].kneighbors(acts, self.n_neighbors)
            for p, acts in zip(positions, activations, strict=True)
        ]
        distances = np.stack([d for d, _ in results], axis=1)
        indices = self.train_indices_[np.stack([i for _, i in results], axis=1)]
        if layer is not None:
            return distances[:, 0], indices[:, 0]
        return distances, indices

    # -- persistence ----------------------------------------------------------------
    def __setstate__(self, state: dict[str, Any]) -> None:
        version = state.get("skdknn_version_")
        if version is not None and version != __version__:
            warnings.warn(
                InconsistentVersionWarning(
                    estimator_name=type(self).__name__,
                    original_version=version,
                    current_version=__version__,
                ),
                stacklevel=2,
            )
        super().__setstate__(state)

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        return tags

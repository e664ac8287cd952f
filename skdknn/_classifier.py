"""DeepKNNClassifier: the Deep k-Nearest Neighbours as a scikit-learn classifier."""

from __future__ import annotations

import copy
from math import prod
from numbers import Integral, Real
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils import Bunch, assert_all_finite, check_random_state
from sklearn.utils._param_validation import (
    HasMethods,
    Interval,
    RealNotInt,
    StrOptions,
)
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import (
    check_consistent_length,
    check_is_fitted,
    column_or_1d,
    validate_data,
)
from torch import nn

from . import conformal
from ._activations import cached_activations
from ._calibration import (
    CALIBRATION_SPLITS,
    IMBALANCE_THRESHOLD,
    balanced_calibration_split,
    class_imbalance,
    stratified_calibration_split,
)
from ._dask import check_dask_rows, is_dask_array, share
from ._graph import default_layers, match_layer, resolve_layer
from ._indexing import (
    ActivationSource,
    fit_indexes,
    query_indexes,
    query_indexes_lazy,
)
from ._network import (
    build_network,
    initialize_network,
    is_prefit,
    torch_module,
    train_network,
)
from ._validation import (
    as_flat_rows,
    check_fitted_shape,
    check_input_shape,
    check_n_neighbors,
    check_neighbors_per_class,
    check_value_range,
    value_range,
)
from ._version import __version__
from ._warnings import warn
from .exceptions import InconsistentVersionWarning
from .neighbors import make_backend, seed_backend
from .neighbors._base import METRICS

__all__ = ["DeepKNNClassifier"]


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

    ``fit`` holds out a calibration set (class-balanced, as in the paper, or
    stratified), trains the network on the remaining rows (unless it is prefit),
    indexes their activations in one neighbour backend per layer and computes the
    calibration nonconformity scores.

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
        Names of the tensors of the forward pass that are searched, as
        :func:`skdknn.nets.layer_names` lists them: module outputs (``layer1``,
        ``features.relu1``, or the unique short name ``relu1``), each call of a
        reused module (``layer1.0.relu_1``), functional activations and residual
        sums (``layer1.0.add``). ``None`` uses :func:`skdknn.nets.default_layers`:
        the module's ``dknn_layers`` attribute, the stage outputs and logits of a
        ResNet, the pooling outputs and logits of a VGG-style network, else every
        activation and the logits.
    n_neighbors : int, default=75
        Number of neighbours ``k`` per layer (75 in the DkNN paper).
    backend : str or NeighborsBackend, default="exact"
        Neighbour search engine: a name from :data:`skdknn.neighbors.BACKENDS`, a
        recipe such as ``"pca128+faiss-ivf"`` (see
        :func:`skdknn.neighbors.make_backend`) or an instance of a backend (any
        object with ``fit`` and ``kneighbors``), cloned once per layer;
        ``n_neighbors`` and ``metric`` are set on the clones, and a seed from
        ``random_state`` when the backend has an unset ``random_state``.
    metric : {"euclidean", "cosine"}, default="euclidean"
        Distance between activations; ``cosine`` is the euclidean distance between
        L2-normalised activations.
    calibration_size : int or float, default=750
        Size of the calibration set (int) or its fraction of the training rows
        (float in (0, 1)). The paper uses 750 (75 per class).
    calibration_split : {"balanced", "stratified"}, default="balanced"
        How the calibration rows are drawn. ``"balanced"`` (the paper): the same
        count per class, whatever the class frequencies. ``"stratified"``: counts
        proportional to the class frequencies of ``y``, so that the calibration set
        is distributed like the training data; the marginal coverage guarantee of
        :meth:`predict_set` then holds on test data distributed like it too. On
        imbalanced classes (see Warns) a balanced calibration set does not.
    mondrian : bool, default=False
        Label-conditional (Mondrian) p-values: the p-value of class ``j`` is
        computed against the calibration scores of the calibration points of
        class ``j`` only, so that the coverage of :meth:`predict_set` holds within
        every class (at least ``1 - significance - 1 / (n_j + 1)`` for a class with
        ``n_j`` calibration points), whatever the split.
    p_value : {"dknn", "conformal", "smoothed"}, default="dknn"
        The p-value form, with ``ge``, ``gt`` and ``eq`` the calibration scores
        ``>=``, ``>`` and ``==`` alpha_j(x) among ``n``: ``"dknn"`` (the paper)
        ``ge / n``; ``"conformal"`` ``(ge + 1) / (n + 1)``, whose sets cover with
        probability at least ``1 - significance``; ``"smoothed"``
        ``(gt + U (eq + 1)) / (n + 1)`` with ``U`` uniform, whose sets cover with
        probability exactly ``1 - significance``. ``U`` is drawn afresh for
        every call from a seed drawn at ``fit`` (from ``random_state``), so a
        fitted model gives the same p-values for the same ``X``; a row's ``U``
        depends on its position in ``X``. See :func:`skdknn.conformal.p_values`.
    input_shape : tuple of int, default=None
        Shape ``(channels, height, width)`` to which flat rows are reshaped before
        the network (or any other sample shape, such as a Conv1d's
        ``(channels, length)``: a 3-D ``X`` of shape ``(n, channels, length)`` is
        then read as such samples, not as one-channel images). Inferred from
        ``X`` when it is a stack of images.
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
        Caches the activations of the fit rows, like ``Pipeline(memory=...)``
        caches fitted transformers: one cache entry per (network, layer list,
        rows), holding every layer from one forward pass, so that refitting on
        the same rows with the same network (e.g. a grid search over
        ``n_neighbors`` with a prefit net) loads them instead of running the
        network. Used by ``fit`` only. A string is a cache directory.

        The network is keyed by what it computes, never by pickling it (modules
        with hooks or other unpicklable attributes work): its ``state_dict``,
        the requested layers' outputs bit for bit on 4 of the fit rows (one
        small forward pass per fit, evenly spaced rows, the first and last
        included), its traced graph, and per submodule the class's qualified
        name, the code of ``forward`` and of its hooks and its plain (bool,
        number, string) attributes. Another activation function with the same
        weights, a class re-defined with another ``forward``, a hook or an
        attribute that changes the outputs therefore miss the cache. Not seen: a
        change that alters the outputs only on rows other than the probed ones
        and shows in none of the above, e.g. an edited helper function or global
        variable used by a data-dependent branch of a network torch.fx cannot
        trace; clear the cache after such an edit. The entry holds
        full-width activations: with very wide layers, prefer no cache (``fit``
        then streams, see the guide "DkNN on large networks").
    n_jobs : int, default=None
        Layers queried in parallel (threads). ``None`` means 1.
    random_state : int, RandomState instance or None, default=None
        Seeds the calibration split, the network's initialisation and shuffling,
        the draws of ``p_value="smoothed"``, and a randomised backend whose own
        ``random_state`` is None (Annoy's trees, LSH's hyperplanes, a random
        projection; every layer's clone gets the same seed, see
        :func:`skdknn.neighbors.seed_backend`). The same integer gives identical
        predictions and credibilities (with the same torch thread count).
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
    y_index_ : ndarray of int, shape (n_indexed,)
        Encoded label (a position in ``classes_``) of each indexed row, in the
        order of ``train_indices_`` and of the backends' rows:
        ``classes_[y_index_]`` are the labels of ``X[train_indices_]``.
    calibration_nonconformity_ : ndarray of shape (n_calibration,)
        Sorted nonconformity ``alpha_y(x)`` of the calibration points' true labels.
    calibration_labels_ : ndarray of shape (n_calibration,)
        Labels (from ``classes_``) of the calibration points, aligned with
        ``calibration_nonconformity_`` (what Mondrian p-values need).
    skdknn_version_ : str
        Version of skdknn that fitted the model.

    Warns
    -----
    UserWarning
        At ``fit``, when ``calibration_split="balanced"`` and ``mondrian=False``
        on imbalanced classes: the class frequencies of ``y`` differ from equal
        frequencies (those of the balanced calibration set) by more than 0.05 in
        total variation distance (half the sum of the absolute differences; e.g.
        a 60/40 training set is at 0.1). That distance is the most by which the
        prediction sets' coverage, on data distributed like ``y``, can miss its
        guarantee; the message names ``calibration_split="stratified"`` and
        ``mondrian=True``.
        At ``fit``, when ``calibration_split="stratified"`` (and
        ``mondrian=False``) gives a class no calibration point (its share of
        ``calibration_size`` rounds to zero); the message names the classes.

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
    except on such p-value ties. With ``mondrian=True`` each class's p-value has its
    own calibration scores, so the class with the most neighbours need not have the
    largest p-value: ``predict`` still returns it, and ``credibility`` is still the
    largest p-value.

    A prefit network must not have seen the calibration points: refitting with
    ``FrozenEstimator(clf.net_)`` keeps them unseen only with the same ``X``,
    ``calibration_size``, ``calibration_split`` and ``random_state`` as the fit that
    trained it.

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
        "calibration_split": [StrOptions(set(CALIBRATION_SPLITS))],
        "mondrian": ["boolean"],
        "p_value": [StrOptions(set(conformal.P_VALUE_FORMS))],
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
        calibration_split: str = "balanced",
        mondrian: bool = False,
        p_value: str = "dknn",
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
        self.calibration_split = calibration_split
        self.mondrian = mondrian
        self.p_value = p_value
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
        if is_dask_array(X):
            X_flat, image_shape, y = self._validate_dask_fit_input(X, y)
        else:
            X_flat, image_shape = as_flat_rows(X)
            X_flat, y = validate_data(self, X_flat, y, dtype=np.float32)
            self.input_range_ = value_range(X_flat)
        check_classification_targets(y)
        self.input_shape_ = check_input_shape(
            self.input_shape, image_shape, self.n_features_in_
        )
        self.classes_, y_encoded = np.unique(y, return_inverse=True)
        if self.classes_.size < 2:
            raise ValueError(
                "DeepKNNClassifier needs samples of at least 2 classes; got 1 class "
                f"({self.classes_.tolist()[0]!r})."
            )
        rng = check_random_state(self.random_state)
        train_rows, calibration_rows = self._calibration_split(y_encoded, rng)
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
        backend = self._make_layer_backend()  # a bad backend fails before training
        X_net = self._network_input(X_flat)
        self.net_ = self._fit_net(X_net, train_rows, y_encoded[train_rows], rng)
        self.train_indices_ = train_rows
        self.calibration_indices_ = calibration_rows
        self.y_index_ = y_encoded[train_rows]
        # drawn after the split and the network, so that they are those of
        # earlier versions; then the seed of a randomised backend left unseeded
        self._smoothing_seed = int(rng.randint(np.iinfo(np.int32).max))
        seed_backend(backend, rng)
        train, calibration = self._fit_sources(X_net, train_rows, calibration_rows)
        self.backends_ = fit_indexes(backend, train)
        counts, _, _ = self._search(calibration)
        y_calibration = y_encoded[calibration_rows]
        scores = conformal.calibration_scores(
            counts, y_calibration, self.n_neighbors, sort=False
        )
        order = np.argsort(scores, kind="stable")
        self.calibration_nonconformity_ = scores[order]
        self.calibration_labels_ = self.classes_[y_calibration[order]]
        self.skdknn_version_ = __version__
        return self

    def _validate_dask_fit_input(self, X: Any, y: Any) -> tuple[Any, Any, Any]:
        """``fit``'s checks of a dask array ``X`` (and labels, numpy or dask):
        shapes at once, values in one pass over the blocks (``input_range_``, and
        non-finite values refused). Returns the lazy float32 images (or rows),
        the image shape and the labels, gathered (one value per row)."""
        name = type(self).__name__
        X, image_shape = _dask_images(X, name)
        # the shape checks and messages of an array in memory, on one row of it
        n, d = X.shape[0], prod(X.shape[1:])
        validate_data(self, np.zeros((min(n, 1), d), np.float32), dtype=np.float32)
        y = column_or_1d(y.compute() if is_dask_array(y) else y, warn=True)
        check_consistent_length(X, y)
        X = X.astype(np.float32)
        import dask

        low, high = dask.compute(X.min(), X.max())
        if not (np.isfinite(low) and np.isfinite(high)):
            kind = "NaN" if np.isnan(low) or np.isnan(high) else "infinity"
            raise ValueError(
                f"Input X contains {kind} (once converted to float32); {name} "
                "needs finite values."
            )
        self.input_range_ = np.array([low, high], dtype=np.float64)
        return X, image_shape, y

    def _calibration_split(
        self, y: NDArray[np.intp], rng: np.random.RandomState
    ) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
        """Index and calibration rows; warn or raise when coverage would suffer."""
        split = (
            balanced_calibration_split
            if self.calibration_split == "balanced"
            else stratified_calibration_split
        )
        train_rows, calibration_rows = split(
            y, self.calibration_size, rng, classes=self.classes_
        )
        missing = np.setdiff1d(np.arange(self.classes_.size), y[calibration_rows])
        if self.mondrian and missing.size:
            raise ValueError(
                f"mondrian=True needs calibration points of every class, but class "
                f"{self.classes_[missing[:1]].tolist()[0]!r} has none: its share of "
                f"calibration_size={self.calibration_size!r} rounds to zero with "
                f"calibration_split={self.calibration_split!r}. Raise "
                "calibration_size or use calibration_split='balanced'."
            )
        if missing.size:
            names = self.classes_[missing[:5]].tolist()
            warn(
                f"calibration_split={self.calibration_split!r} gave no calibration "
                f"point to {len(missing)} class(es) {names}: their share of "
                f"calibration_size={self.calibration_size!r} rounds to zero. The "
                "prediction sets' coverage still holds over all data, but nothing "
                "calibrates inputs of these classes. Raise calibration_size or use "
                "calibration_split='balanced'.",
                UserWarning,
            )
        shift = class_imbalance(y)
        balanced = self.calibration_split == "balanced" and not self.mondrian
        if balanced and shift > IMBALANCE_THRESHOLD:
            frequencies = np.bincount(y) / y.size
            warn(
                f"The classes are imbalanced (frequencies from "
                f"{frequencies.min():.1%} to {frequencies.max():.1%}) but "
                "calibration_split='balanced' calibrates on equal counts per "
                "class: on data distributed like y, the coverage of the "
                f"prediction sets can miss its guarantee by up to {shift:.2f}. "
                "Use calibration_split='stratified' (coverage over all data) "
                "or mondrian=True (coverage within each class).",
                UserWarning,
            )
        return train_rows, calibration_rows

    def _fit_sources(
        self,
        X_net: NDArray[np.float32],
        train_rows: NDArray[np.intp],
        calibration_rows: NDArray[np.intp],
    ) -> tuple[ActivationSource, ActivationSource]:
        """The activations of the indexed rows and of the calibration rows.

        Streamed from the network (each forward batch gathers its own rows: the
        input is never copied or reordered as a whole), or, with ``memory``, one
        cache entry holding every layer of both row sets from one forward pass.
        """
        layers, batch_size = self.layers_, self.batch_size
        if is_dask_array(X_net):
            if self.memory is not None:
                warn(
                    "memory= caches activations of arrays in memory; it is not "
                    "used for a dask array X.",
                    UserWarning,
                )
            # computed by Dask where the blocks are (the rows are sorted)
            module = self.module_
            return (
                ActivationSource(
                    layers, batch_size, module, X_net[train_rows], verbose=self.verbose
                ),
                ActivationSource(layers, batch_size, module, X_net[calibration_rows]),
            )
        if self.memory is None:
            module = self.module_
            return (
                ActivationSource(
                    layers, batch_size, module, X_net, train_rows, verbose=self.verbose
                ),
                ActivationSource(layers, batch_size, module, X_net, calibration_rows),
            )
        rows = np.concatenate([train_rows, calibration_rows])
        acts = cached_activations(
            self.memory, self.module_, X_net, rows, layers, batch_size=batch_size
        )
        n = train_rows.size
        return (
            ActivationSource(layers, batch_size, arrays=[a[:n] for a in acts]),
            ActivationSource(layers, batch_size, arrays=[a[n:] for a in acts]),
        )

    def _fit_net(
        self,
        X_net: NDArray[np.float32],
        train_rows: NDArray[np.intp],
        y: NDArray,
        rng: np.random.RandomState,
    ) -> Any:
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
            if is_prefit(net):  # never copy the training rows for a prefit net
                return net
            X_train: Any = X_net[train_rows]
            if is_dask_array(X_train):
                # skorch trains on arrays in memory: the training inputs (not
                # their activations) are gathered here
                X_train = np.asarray(X_train.compute())
            return train_network(net, X_train, y)

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
        if self.input_shape_ is None or X_flat.shape[1:] == self.input_shape_:
            return X_flat  # rows, or (dask) images already
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

    def _search(
        self, source: ActivationSource, *, return_neighbors: bool = False
    ) -> tuple[NDArray[np.int64], NDArray[np.intp] | None, NDArray | None]:
        """Neighbour counts of the queries of ``source``: one search per layer.

        Queries are streamed in chunks (see :func:`skdknn._indexing.query_indexes`).
        Returns the counts ``(n, n_layers, n_classes)`` and, with
        ``return_neighbors``, the neighbours' rows of the fit ``X`` and distances,
        each ``(n, n_layers, n_neighbors)``.
        """
        n, n_layers, k = source.n_rows, len(self.backends_), self.n_neighbors
        counts = np.zeros((n, n_layers, self.classes_.size), dtype=np.int64)
        neighbors = np.empty((n, n_layers, k), np.intp) if return_neighbors else None
        distances = np.empty((n, n_layers, k), np.float32) if return_neighbors else None
        chunks = query_indexes(
            self.backends_,
            source,
            k,
            return_distance=return_neighbors,
            n_jobs=self.n_jobs,
        )
        for start, stop, results in chunks:
            found, rows, dist = self._counts_from_neighbors(results, return_neighbors)
            counts[start:stop] = found
            if return_neighbors:
                assert neighbors is not None and distances is not None
                assert rows is not None and dist is not None
                neighbors[start:stop], distances[start:stop] = rows, dist
        return counts, neighbors, distances

    def _counts_from_neighbors(
        self, results: list[Any], return_neighbors: bool
    ) -> tuple[NDArray[np.int64], NDArray[np.intp] | None, NDArray | None]:
        """Counts (and neighbours' rows of the fit ``X``, distances) of one chunk of
        queries from each layer's ``kneighbors`` answer."""
        neighbors = distances = None
        if return_neighbors:
            distances = np.stack([d for d, _ in results], axis=1)
            results = [ind for _, ind in results]
            neighbors = self.train_indices_[np.stack(results, axis=1)]
        labels = self.y_index_[np.stack(results, axis=1)]
        counts = conformal.neighbor_label_counts(labels, self.classes_.size)
        return counts, neighbors, distances

    def _query_source(
        self, X: Any, layers: list[str] | None = None
    ) -> ActivationSource:
        X_net = self._validate_input(X)  # checks that the model is fitted first
        layers = self.layers_ if layers is None else layers
        return ActivationSource(layers, self.batch_size, module=self.module_, X=X_net)

    def predict_with_credibility(self, X: Any, return_neighbors: bool = False) -> Bunch:
        """Every DkNN output from one forward pass and one search per layer.

        :meth:`predict`, :meth:`p_values`, :meth:`credibility`,
        :meth:`confidence`, :meth:`predict_set` and :meth:`neighbor_counts` each
        return one field of this result; asking for several of them, call this
        method once instead (each of those runs the network and every search
        again). Queries are processed in chunks whose activations fit
        scikit-learn's ``working_memory`` budget (:func:`sklearn.set_config`), so
        memory does not grow with the number of queries.

        Parameters
        ----------
        X : array-like of shape (n_samples, ...) as in ``fit``
        return_neighbors : bool, default=False
            Also return each layer's neighbours and their distances.

        Returns
        -------
        result : sklearn.utils.Bunch
            With the fields

            prediction : ndarray of shape (n_samples,)
                Labels from ``classes_`` (as :meth:`predict`).
            p_values : ndarray of shape (n_samples, n_classes)
                Conformal p-value of every class (as :meth:`p_values`).
            credibility : ndarray of shape (n_samples,)
                The largest p-value (as :meth:`credibility`).
            confidence : ndarray of shape (n_samples,)
                One minus the second largest p-value (as :meth:`confidence`).
            counts : ndarray of int64, shape (n_samples, n_layers, n_classes)
                Neighbours of each class in each layer (as :meth:`neighbor_counts`).
            neighbors : ndarray of int, shape (n_samples, n_layers, n_neighbors)
                Only with ``return_neighbors``: rows of the ``X`` passed to ``fit``,
                nearest first (as :meth:`kneighbors`).
            distances : ndarray of float32, shape (n_samples, n_layers, n_neighbors)
                Only with ``return_neighbors``: their distances.

        Examples
        --------
        >>> from sklearn.datasets import make_classification
        >>> from skdknn import DeepKNNClassifier
        >>> X, y = make_classification(n_samples=200, n_features=6, random_state=0)
        >>> clf = DeepKNNClassifier(n_neighbors=5, calibration_size=40, max_epochs=5,
        ...                         batch_size=64, random_state=0).fit(X, y)
        >>> result = clf.predict_with_credibility(X[:3])
        >>> sorted(result)
        ['confidence', 'counts', 'credibility', 'p_values', 'prediction']
        >>> bool((result.prediction == clf.predict(X[:3])).all())
        True
        """
        if is_dask_array(X):
            return self._lazy_outputs(X, return_neighbors)
        counts, neighbors, distances = self._search(
            self._query_source(X), return_neighbors=return_neighbors
        )
        return self._outputs(counts, neighbors, distances)

    def _outputs(
        self,
        counts: NDArray[np.int64],
        neighbors: NDArray[np.intp] | None = None,
        distances: NDArray | None = None,
        offset: int = 0,
    ) -> Bunch:
        """Every output of queries from their counts (see
        :meth:`predict_with_credibility`); ``offset``: position of the first
        query in ``X``."""
        p = self._p_values_from_counts(counts, offset)
        result = Bunch(
            prediction=self.classes_[conformal.predict_from_counts(counts)],
            p_values=p,
            credibility=conformal.credibility(p),
            confidence=conformal.confidence(p),
            counts=counts,
        )
        if neighbors is not None:
            result.update(neighbors=neighbors, distances=distances)
        return result

    # -- dask arrays of queries ----------
    def _validate_dask_input(self, X: Any) -> Any:
        """Network input of a dask array of queries: its shapes checked at once,
        its values (finite, in range) when each block is computed."""
        check_is_fitted(self)
        name = type(self).__name__
        X_images, image_shape = _dask_images(X, name)
        check_fitted_shape(X, image_shape, self.input_shape_, self.n_features_in_, name)
        n, d = X_images.shape[0], prod(X_images.shape[1:])
        validate_data(self, np.zeros((min(n, 1), d), np.float32), reset=False)
        X_images = X_images.astype(np.float32).map_blocks(
            _checked_block, getattr(self, "input_range_", None), name, dtype=np.float32
        )
        return self._network_input(X_images)

    def _lazy_outputs(self, X: Any, return_neighbors: bool) -> Bunch:
        """:meth:`predict_with_credibility` of a dask array: a Bunch of dask arrays
        chunked along rows like ``X``.

        The queries are cut into the chunks an array in memory is processed in
        (so the answers are the same bit for bit); for each, a Dask task runs the
        network, one per layer searches the index (an in-process index is sent to
        every worker once; a sharded index is searched on its shards' workers)
        and one computes the outputs from the counts.
        """
        import dask.array as da
        from dask import delayed

        X_net = self._validate_dask_input(X)
        source = ActivationSource(
            self.layers_, self.batch_size, module=self.module_, X=X_net
        )
        client, blocks = query_indexes_lazy(
            self.backends_,
            source,
            self.n_neighbors,
            return_distance=return_neighbors,
        )
        head = share(self._head(), client)
        n_layers, k, C = len(self.layers_), self.n_neighbors, self.classes_.size
        fields = {
            "prediction": ((), self.classes_.dtype),
            "p_values": ((C,), np.float64),
            "credibility": ((), np.float64),
            "confidence": ((), np.float64),
            "counts": ((n_layers, C), np.int64),
        }
        if return_neighbors:
            fields["neighbors"] = ((n_layers, k), np.intp)
            fields["distances"] = ((n_layers, k), np.float32)
        parts: dict[str, list[Any]] = {name: [] for name in fields}
        for start, stop, results in blocks:
            outputs = delayed(_block_outputs, pure=False)(
                head, results, start, return_neighbors
            )
            for name, (shape, dtype) in fields.items():
                parts[name].append(
                    da.from_delayed(
                        outputs[name],
                        shape=(stop - start, *shape),
                        dtype=dtype,
                    )
                )
        rows = X.chunks[0]
        return Bunch(
            **{
                name: da.concatenate(blocks_, axis=0).rechunk({0: rows})
                for name, blocks_ in parts.items()
            }
        )

    def _head(self) -> DeepKNNClassifier:
        """What turns neighbours into outputs, without the network and the indexes
        (a light copy sent to the workers)."""
        head = copy.copy(self)
        head.net = None
        head.backend = None
        del head.net_, head.backends_
        return head

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
        if is_dask_array(X):
            return self._lazy_outputs(X, return_neighbors=False).counts
        counts: NDArray[np.int64] = self._search(self._query_source(X))[0]
        return counts

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
        prediction: NDArray = self.predict_with_credibility(X).prediction
        return prediction

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
        counts: Any = self.neighbor_counts(X)
        if is_dask_array(counts):
            return counts.map_blocks(
                conformal.neighbor_proba, drop_axis=1, dtype=np.float64
            )
        return conformal.neighbor_proba(counts)

    def p_values(self, X: Any) -> NDArray[np.float64]:
        """Conformal p-value of every class: share of calibration scores >= alpha_j.

        In the form ``p_value`` (``"dknn"``: ``ge / n``), against all calibration
        scores or, with ``mondrian=True``, against those of the class's own
        calibration points.

        Parameters
        ----------
        X : array-like of shape (n_samples, ...) as in ``fit``

        Returns
        -------
        p : ndarray of shape (n_samples, n_classes)
            Columns follow ``classes_``.
        """
        p: NDArray[np.float64] = self.predict_with_credibility(X).p_values
        return p

    def _p_values_from_counts(
        self, counts: NDArray[np.int64], offset: int = 0
    ) -> NDArray[np.float64]:
        """p-values of the form ``p_value`` (Mondrian or not) from neighbour counts
        (the one place where p-values are computed: every public method goes
        through here). ``offset``: position in ``X`` of the first row, whose
        smoothing draws follow those of the rows before it."""
        alpha = conformal.nonconformity(counts, self.n_neighbors)
        uniform = None
        if self.p_value == "smoothed":
            # PCG64 takes one 64-bit step per uniform draw: skip the earlier rows'
            bits = np.random.PCG64(self._smoothing_seed)
            bits.advance(offset * alpha.shape[1])
            uniform = np.random.Generator(bits).random(alpha.shape)
        labels = None
        if self.mondrian:
            labels = np.searchsorted(self.classes_, self.calibration_labels_)
        return conformal.p_values(
            alpha,
            self.calibration_nonconformity_,
            form=self.p_value,
            calibration_labels=labels,
            uniform=uniform,
        )

    def credibility(self, X: Any) -> NDArray[np.float64]:
        """Credibility: the largest p-value (Papernot & McDaniel 2018, DkNN).

        Low credibility flags inputs unlike the training data of their predicted
        class (e.g. adversarial or out-of-distribution inputs). Without Mondrian
        p-values it is the p-value of the prediction. With ``mondrian=True`` the
        prediction (the class with the most neighbours) need not have the largest
        p-value, and credibility can then exceed the prediction's own p-value; use
        ``p_values(X)`` at the predicted class for the latter.

        Parameters
        ----------
        X : array-like of shape (n_samples, ...) as in ``fit``

        Returns
        -------
        credibility : ndarray of shape (n_samples,)
        """
        credibility: NDArray[np.float64] = self.predict_with_credibility(X).credibility
        return credibility

    def confidence(self, X: Any) -> NDArray[np.float64]:
        """Confidence: one minus the second largest p-value (DkNN).

        With ``mondrian=True`` the largest p-value need not be the prediction's
        (see :meth:`credibility`).

        Parameters
        ----------
        X : array-like of shape (n_samples, ...) as in ``fit``

        Returns
        -------
        confidence : ndarray of shape (n_samples,)
        """
        confidence: NDArray[np.float64] = self.predict_with_credibility(X).confidence
        return confidence

    def predict_set(self, X: Any, significance: float = 0.1) -> NDArray[np.bool_]:
        """Conformal prediction sets {j : p_j(x) > significance}.

        On data exchangeable with the calibration set (``calibration_split=
        "stratified"`` on data distributed like the training set), a set holds the
        true label with probability at least ``1 - significance - 1 /
        (n_calibration + 1)`` (``p_value="dknn"``) or ``1 - significance``
        (``"conformal"``, ``"smoothed"``); with ``mondrian=True`` within every
        class, with ``n_calibration`` that class's calibration points. See
        ``docs/conformal-guarantees.md``.

        Parameters
        ----------
        X : array-like of shape (n_samples, ...) as in ``fit``
        significance : float in [0, 1], default=0.1
            Significance level epsilon.

        Returns
        -------
        sets : ndarray of bool, shape (n_samples, n_classes)
            ``sets[i, j]`` is True when ``classes_[j]`` is in the set of ``X[i]``.

        Raises
        ------
        ValueError
            When ``significance`` is not a real number in [0, 1] (also a
            TypeError).
        """
        # checks significance before any work (an error naming what is expected)
        conformal.prediction_sets(np.empty((0, 0)), significance)
        p: Any = self.p_values(X)
        if is_dask_array(p):
            return p.map_blocks(conformal.prediction_sets, significance, dtype=bool)
        return conformal.prediction_sets(p, significance)

    def kneighbors(
        self,
        X: Any = None,
        n_neighbors: int | None = None,
        return_distance: bool = True,
        layer: str | None = None,
    ) -> Any:
        """Nearest indexed training points in the activation space of the layers.

        As scikit-learn's ``KNeighborsMixin.kneighbors``, with one search per layer.

        Parameters
        ----------
        X : array-like of shape (n_samples, ...) as in ``fit``, default=None
            Queries. ``None`` queries the indexed training points themselves
            (the rows ``train_indices_`` of the fit ``X``, in that order), each one
            left out of its own neighbours.
        n_neighbors : int, default=None
            Number of neighbours; ``None`` uses ``n_neighbors``.
        return_distance : bool, default=True
            Whether to return the distances.
        layer : str, default=None
            One layer of ``layers_``, by any name that denotes the same tensor
            (e.g. ``"relu3"`` or ``"features.relu3"``); ``None`` returns every layer.

        Returns
        -------
        distances : ndarray of float32
            Only with ``return_distance``. Shape (n_samples, n_neighbors) for one
            layer, else (n_samples, n_layers, n_neighbors); nearest first.
        indices : ndarray of int
            Same shape; row indices into the ``X`` passed to ``fit``.
        """
        check_is_fitted(self)
        if layer is None:
            positions = list(range(len(self.layers_)))
        else:
            positions = [match_layer(self.module_, layer, self.layers_)]
        k = check_n_neighbors(self.n_neighbors if n_neighbors is None else n_neighbors)
        backends = [self.backends_[p] for p in positions]
        if X is None:
            results = [b.kneighbors(None, k, return_distance=True) for b in backends]
            distances = np.stack([d for d, _ in results], axis=1)
            indices = np.stack([i for _, i in results], axis=1)
        else:
            source = self._query_source(X, [self.layers_[p] for p in positions])
            n = source.n_rows
            distances = np.empty((n, len(positions), k), np.float32)
            indices = np.empty((n, len(positions), k), np.intp)
            chunks = query_indexes(
                backends, source, k, return_distance=True, n_jobs=self.n_jobs
            )
            for start, stop, results in chunks:
                distances[start:stop] = np.stack([d for d, _ in results], axis=1)
                indices[start:stop] = np.stack([i for _, i in results], axis=1)
        indices = self.train_indices_[indices]
        if layer is not None:
            distances, indices = distances[:, 0], indices[:, 0]
        return (distances, indices) if return_distance else indices

    # -- persistence ----------------------------------------------------------------
    def __setstate__(self, state: dict[str, Any]) -> None:
        version = state.get("skdknn_version_")
        if version is not None and version != __version__:
            warn(
                InconsistentVersionWarning(
                    estimator_name=type(self).__name__,
                    original_version=version,
                    current_version=__version__,
                ),
            )
        if "_y_index" in state:  # pickled by skdknn <= 0.x, before y_index_ was public
            state["y_index_"] = state.pop("_y_index")
        super().__setstate__(state)

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        return tags


# -- tasks of the dask path (module level: pickled by reference) ---------------------
def _dask_images(X: Any, owner: str) -> tuple[Any, tuple[int, ...] | None]:
    """A dask array of images ``(n, C, H, W)`` (channel axis added to ``(n, H,
    W)``) or rows ``(n, d)``, and the image shape. Not flattened: dask's reshape
    back to images would cost a copy (and confuses its scheduler's keys)."""
    X = check_dask_rows(X, min_ndim=2, max_ndim=4, owner=owner)
    if X.ndim == 3:
        X = X[:, None]
    image_shape = tuple(int(s) for s in X.shape[1:]) if X.ndim == 4 else None
    return X, image_shape


def _checked_block(
    X: NDArray[np.float32], fitted_range: Any, owner: str
) -> NDArray[np.float32]:
    """A block of queries: finite values (as ``validate_data`` checks), and the
    range warning of an array in memory (shown by Dask's local scheduler; a
    worker's warnings stay in its log)."""
    assert_all_finite(X, input_name="X", estimator_name=owner)
    check_value_range(X, fitted_range, owner)
    return X


def _block_outputs(
    head: DeepKNNClassifier, results: list[Any], offset: int, return_neighbors: bool
) -> Bunch:
    """On a worker: a block of queries' outputs from each layer's neighbours."""
    counts, neighbors, distances = head._counts_from_neighbors(
        results, return_neighbors
    )
    return head._outputs(counts, neighbors, distances, offset)

"""Layers are graph nodes: names, resolution and extraction of hidden-layer tensors.

A layer name denotes one tensor of the network's forward pass. The network is traced
with :mod:`torch.fx` and every node gets a qualified name, as torchvision's
``get_graph_node_names`` gives them: ``layer1.0.conv1`` for a module's output,
``layer1.0.relu_1`` for the second call of a reused module, ``layer1.0.add`` for a
residual sum or any function call inside ``layer1.0``. The output of a module whose
forward pass is traced through (``layer1``, ``layer1.0``) is addressable by the
module's path too. Extracting layers runs a copy of the traced graph that returns
those tensors and stops after the last one needed.

A network that ``torch.fx`` cannot trace (data-dependent control flow, for example)
falls back to forward hooks on its modules, named by their paths. A hook cannot tell
apart two calls of one module, so a module that runs more than once per forward pass
is refused with an error, never silently reduced to its first call.
"""

from __future__ import annotations

import contextlib
import copy
import operator
import re
import threading
import weakref
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

__all__ = [
    "LayerExtractor",
    "default_layers",
    "layer_extractor",
    "layer_names",
    "match_layer",
    "resolve_layer",
]

_ACTIVATIONS = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.ELU,
    nn.GELU,
    nn.SiLU,
    nn.Tanh,
    nn.Sigmoid,
)
_ACTIVATION_FUNCTIONS = {
    torch.relu,
    torch.tanh,
    torch.sigmoid,
    F.relu,
    F.relu6,
    F.leaky_relu,
    F.elu,
    F.gelu,
    F.silu,
}
_ACTIVATION_METHODS = {"relu", "tanh", "sigmoid"}
_STAGE = re.compile(r"layer(\d+)$")
_INPLACE_OPERATORS = {
    operator.iadd,
    operator.isub,
    operator.imul,
    operator.itruediv,
    operator.ipow,
    operator.iand,
    operator.ior,
}


class _NamingTracer(fx.Tracer):
    """An FX tracer that names every node by its place in the module tree.

    ``names`` lists ``(name, node)`` in execution order: each node under its
    qualified name, and the output of each traced-through module under the module's
    path, right after that output is produced. A name used again gets ``_1``,
    ``_2``, ... in order of use (torchvision's convention).
    """

    def __init__(self) -> None:
        super().__init__()
        self._module_path = ""
        self.names: list[tuple[str, fx.Node]] = []
        self._used: Counter[str] = Counter()

    def _add(self, base: str, node: fx.Node) -> None:
        count = self._used[base]
        self._used[base] += 1
        self.names.append((base if count == 0 else f"{base}_{count}", node))

    def call_module(
        self,
        m: nn.Module,
        forward: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        outer, path = self._module_path, self.path_of_module(m)
        self._module_path = path
        try:
            out = super().call_module(m, forward, args, kwargs)
        finally:
            self._module_path = outer
        if not self.is_leaf_module(m, path) and isinstance(out, fx.Proxy):
            self._add(path, out.node)
        return out

    def create_proxy(self, kind: str, target: Any, *args: Any, **kwargs: Any) -> Any:
        proxy = super().create_proxy(kind, target, *args, **kwargs)
        node = proxy.node
        if kind == "call_module":
            self._add(str(target), node)
        elif kind != "get_attr":
            # fx numbers repeated ops graph-wide (add_3); number them per module
            op = re.sub(r"_\d+$", "", node.name)
            self._add(f"{self._module_path}.{op}" if self._module_path else op, node)
        return proxy


@dataclass
class LayerGraph:
    """The addressable layers of one network.

    ``nodes`` maps each layer name to the name of its FX node (traced networks) or
    to the module path (hooks). ``reason`` says why tracing failed (hooks only).
    """

    names: list[str]
    nodes: dict[str, str]
    graph: fx.Graph | None = None
    logits: str | None = None
    reason: str = ""
    activations: list[str] = field(default_factory=list)

    @property
    def traced(self) -> bool:
        return self.graph is not None


def _trace(module: nn.Module) -> LayerGraph:
    tracer = _NamingTracer()
    was_training = module.training
    module.eval()  # the DkNN runs the network in eval mode; trace that graph
    try:
        graph = tracer.trace(module)
    except Exception as exc:  # any tracing failure means hooks
        return _hooked(module, f"{type(exc).__name__}: {exc}")
    finally:
        module.train(was_training)
    nodes = {name: node.name for name, node in tracer.names}
    first_name: dict[fx.Node, str] = {}
    activations = []
    for name, node in tracer.names:
        first_name.setdefault(node, name)
        if _is_activation(module, node) and first_name[node] == name:
            activations.append(name)
    output = next(node for node in graph.nodes if node.op == "output")
    result = output.args[0]
    logits = first_name.get(result) if isinstance(result, fx.Node) else None
    return LayerGraph(
        names=list(nodes),
        nodes=nodes,
        graph=graph,
        logits=logits,
        activations=activations,
    )


def _is_activation(module: nn.Module, node: fx.Node) -> bool:
    if node.op == "call_module":
        return isinstance(module.get_submodule(str(node.target)), _ACTIVATIONS)
    if node.op == "call_function":
        return node.target in _ACTIVATION_FUNCTIONS
    return node.op == "call_method" and node.target in _ACTIVATION_METHODS


def _is_inplace(module: nn.Module, node: fx.Node) -> bool:
    """Whether ``node`` may write into one of its inputs."""
    if node.op == "call_module":
        return bool(getattr(module.get_submodule(str(node.target)), "inplace", False))
    if node.op == "call_method":
        return str(node.target).endswith("_") and not str(node.target).endswith("__")
    if node.op == "call_function":
        name = getattr(node.target, "__name__", "")
        return (
            bool(node.kwargs.get("inplace"))
            or node.target in _INPLACE_OPERATORS
            or (name.endswith("_") and not name.endswith("__"))
        )
    return False


def _hooked(module: nn.Module, reason: str) -> LayerGraph:
    paths = [name for name, _ in module.named_modules() if name]
    leaves = [
        name for name, sub in module.named_modules() if name and not any(sub.children())
    ]
    return LayerGraph(
        names=paths,
        nodes={path: path for path in paths},
        logits=leaves[-1] if leaves else None,
        reason=reason,
        activations=[
            name
            for name in leaves
            if isinstance(module.get_submodule(name), _ACTIVATIONS)
        ],
    )


_LOCK = threading.Lock()
_GRAPHS: weakref.WeakKeyDictionary[nn.Module, tuple[Any, LayerGraph]] = (
    weakref.WeakKeyDictionary()
)
_EXTRACTORS: weakref.WeakKeyDictionary[
    nn.Module, dict[tuple[Any, tuple[str, ...]], LayerExtractor]
] = weakref.WeakKeyDictionary()


def _structure(module: nn.Module) -> tuple[tuple[str, int], ...]:
    """What the cached trace depends on: the module tree (names and objects)."""
    return tuple((name, id(sub)) for name, sub in module.named_modules())


def layer_graph(module: nn.Module) -> LayerGraph:
    """The (cached) layer graph of ``module``; re-traced when its submodules change."""
    key = _structure(module)
    with _LOCK:
        cached = _GRAPHS.get(module)
        if cached is not None and cached[0] == key:
            return cached[1]
    graph = _trace(module)
    with _LOCK:
        _GRAPHS[module] = (key, graph)
    return graph


def layer_names(module: nn.Module) -> list[str]:
    """Names of every tensor of the forward pass that can serve as a DkNN layer.

    The network is traced with :mod:`torch.fx`; names are qualified and unique, as
    torchvision's ``get_graph_node_names`` gives them (``layer1.0.relu_1`` is the
    second call of the ReLU module of ``layer1.0``, ``layer1.0.add`` its residual
    sum), and the output of each traced-through module is also listed under its path
    (``layer1``, ``layer1.0``). Names are listed in execution order. A layer can
    also be given by the last part of its name when that part is unique
    (``relu1`` for ``features.relu1``).

    A network that cannot be traced lists its module paths (its layers are then
    read with forward hooks, which refuse a module called more than once).

    Parameters
    ----------
    module : torch.nn.Module
        The network.

    Returns
    -------
    names : list of str

    Examples
    --------
    >>> from skdknn.nets import MLP
    >>> layer_names(MLP(n_features=4, n_classes=3, hidden_layer_sizes=(8,)))
    ['x', 'flatten', 'hidden.fc1', 'hidden.relu1', 'hidden', 'logits']
    """
    return list(layer_graph(module).names)


def _short(name: str) -> str:
    return name.rsplit(".", 1)[-1]


def resolve_layer(module: nn.Module, name: str) -> str:
    """The full name of layer ``name`` of ``module`` (a full or unique short name).

    Raises
    ------
    ValueError
        When no tensor of the forward pass has that name (the message lists the
        available names), or a short name matches several layers.
    """
    graph = layer_graph(module)
    if name in graph.nodes:
        return name
    matches = [full for full in graph.names if _short(full) == name]
    if len(matches) == 1:
        return matches[0]
    kind = type(module).__name__
    if matches:
        raise ValueError(
            f"Layer name {name!r} is ambiguous in {kind}; use one of the full "
            f"names {matches}."
        )
    if name in dict(module.named_modules()):
        raise ValueError(
            f"Layer {name!r} is a module of {kind} that its forward pass never calls "
            "(it produced no output); choose layers computed by the forward method."
        )
    available = ", ".join(repr(n) for n in graph.names)
    raise ValueError(
        f"Unknown layer {name!r} for {kind}. Available layers: {available}."
    )


def match_layer(module: nn.Module, name: str, layers: Sequence[str]) -> int:
    """Position in ``layers`` of the layer ``name`` denotes (any of its names).

    Raises
    ------
    ValueError
        When ``name`` denotes none of ``layers``.
    """
    if name in layers:
        return list(layers).index(name)
    try:
        full = resolve_layer(module, name)
    except ValueError:
        full = None
    for position, layer in enumerate(layers):
        if full is not None and resolve_layer(module, layer) == full:
            return position
    raise ValueError(
        f"Unknown layer {name!r}; this model searches layers {list(layers)}."
    )


def default_layers(module: nn.Module) -> list[str]:
    """The layers a DkNN searches when none are given.

    In order of precedence:

    - the module's ``dknn_layers`` attribute (the networks of :mod:`skdknn.nets`);
    - ResNets (children ``layer1``, ``layer2``, ...): the stage outputs and the
      logits, e.g. ``['layer1', 'layer2', 'layer3', 'layer4', 'fc']`` for
      torchvision's ResNets and :class:`skdknn.nets.CifarResNet18`;
    - VGG-style networks (a ``features`` sequence with max-pooling): the output of
      every pooling layer (the end of each convolution block) and the logits;
    - otherwise every activation (modules such as ``nn.ReLU`` and functions such as
      ``torch.relu``, each call separately) and the logits.

    Examples
    --------
    >>> from skdknn.nets import DkNNPaperCNN
    >>> default_layers(DkNNPaperCNN())
    ['relu1', 'relu2', 'relu3', 'logits']
    >>> default_layers(torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(),
    ...                                    torch.nn.Linear(8, 2)))
    ['1', '2']
    """
    declared = getattr(module, "dknn_layers", None)
    if declared is not None:
        return list(declared)
    graph = layer_graph(module)
    logits = [graph.logits] if graph.logits is not None else []
    children = dict(module.named_children())
    stages = sorted(
        (int(m.group(1)), name)
        for name in children
        if (m := _STAGE.match(name)) and name in graph.nodes
    )
    if stages and [i for i, _ in stages] == list(range(1, len(stages) + 1)):
        return [name for _, name in stages] + logits
    features = children.get("features")
    if isinstance(features, nn.Sequential):
        pools = [
            f"features.{name}"
            for name, sub in features.named_children()
            if isinstance(sub, nn.MaxPool2d) and f"features.{name}" in graph.nodes
        ]
        if pools:
            return pools + logits
    names = [n for n in graph.activations if n not in logits] + logits
    if not names:
        raise ValueError(
            f"{type(module).__name__} has no layer that could be used as a DkNN layer; "
            "pass `layers` explicitly or declare `dknn_layers`."
        )
    return names


class _AllLayersCaptured(Exception):
    """Raised inside a forward hook to skip the layers after the last one needed."""


class LayerExtractor:
    """Runs a network up to the named layers and returns their outputs.

    Calling it on a batch returns one tensor per layer, flattened to
    ``(batch, width)`` and, when the network has in-place operations, copied as
    soon as it is produced (later in-place
    operations of the network cannot change it). The forward pass stops after the
    last layer needed. Autograd follows the outputs when it is enabled.
    """

    def __init__(self, module: nn.Module, layers: Sequence[str]) -> None:
        # weak: the extractor is cached per module and must not keep it alive
        self._module = weakref.ref(module)
        self.layers = list(layers)
        self.graph = layer_graph(module)
        self.full_names = [resolve_layer(module, name) for name in self.layers]
        self._forward: Callable[[torch.Tensor], Sequence[Any]]
        if self.graph.traced:
            self._forward = self._truncated_graph()
        else:
            self._forward = self._hooked_forward
            self._checked = False

    @property
    def module(self) -> nn.Module:
        module = self._module()
        assert module is not None, "the network of this extractor was deleted"
        return module

    # -- traced networks --------------------------------------------------------------
    def _truncated_graph(self) -> fx.GraphModule:
        assert self.graph.graph is not None
        graph = copy.deepcopy(self.graph.graph)
        by_name = {node.name: node for node in graph.nodes}
        # a later in-place operation could overwrite a layer's tensor: copy it
        # as soon as it is produced, unless the network has none
        inplace = any(_is_inplace(self.module, node) for node in graph.nodes)
        copies = []
        for full in self.full_names:
            node = by_name[self.graph.nodes[full]]
            if inplace:
                with graph.inserting_after(node):
                    node = graph.call_method("clone", (node,))
            copies.append(node)
        for node in list(graph.nodes):
            if node.op == "output":
                graph.erase_node(node)
        graph.output(tuple(copies))
        truncated = fx.GraphModule(self.module, graph)
        # the nodes after the last layer needed are dead: the forward pass stops there
        truncated.graph.eliminate_dead_code()
        truncated.delete_all_unused_submodules()
        truncated.recompile()
        return truncated

    # -- hooks (networks torch.fx cannot trace) -------------------------------------
    def _refuse_reused(self, path: str, calls: int) -> ValueError:
        kind = type(self.module).__name__
        return ValueError(
            f"Layer {path!r} of {kind} is a module called {calls} times per forward "
            "pass; a forward hook cannot tell its outputs apart, and skdknn does not "
            f"silently keep the first call. {kind} cannot be traced by torch.fx "
            f"({self.graph.reason}); make it traceable (e.g. mark untraceable "
            "submodules as leaf modules or wrap functions with torch.fx.wrap) to "
            f"address each call as {path!r}, {path + '_1'!r}, ..., or choose another "
            "layer, such as the enclosing block."
        )

    def _check_calls(self, x: torch.Tensor) -> None:
        """One full forward pass on one row, counting the calls of each module."""
        calls: Counter[str] = Counter()
        handles = [
            self.module.get_submodule(path).register_forward_hook(
                lambda *_, path=path: calls.update([path])
            )
            for path in set(self.full_names)
        ]
        try:
            with torch.no_grad():
                self.module(x[:1])
        finally:
            for handle in handles:
                handle.remove()
        for path in self.full_names:
            if calls[path] > 1:
                raise self._refuse_reused(path, calls[path])
        self._checked = True

    def _hooked_forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        if not self._checked and x.shape[0] > 0:
            self._check_calls(x)
        captured: dict[str, torch.Tensor] = {}
        wanted = set(self.full_names)
        owner = threading.get_ident()  # hooks live on a shared module

        def make_hook(path: str) -> Any:
            def hook(_mod: nn.Module, _inp: Any, out: Any) -> None:
                if threading.get_ident() != owner:
                    return
                if path in captured:
                    raise self._refuse_reused(path, 2)
                captured[path] = out.clone()
                if len(captured) == len(wanted):
                    raise _AllLayersCaptured

            return hook

        handles = [
            self.module.get_submodule(path).register_forward_hook(make_hook(path))
            for path in wanted
        ]
        try:
            with contextlib.suppress(_AllLayersCaptured):
                self.module(x)
        finally:
            for handle in handles:
                handle.remove()
        missing = [
            n
            for n, full in zip(self.layers, self.full_names, strict=True)
            if full not in captured
        ]
        if missing:
            raise ValueError(
                f"Layers {missing} produced no output during the forward pass of "
                f"{type(self.module).__name__}; choose layers that are called by its "
                "forward method."
            )
        return [captured[full] for full in self.full_names]

    def __call__(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Outputs of the layers for the batch ``x``, each of shape (batch, width)."""
        outputs = self._forward(x)
        flat = []
        for name, out in zip(self.layers, outputs, strict=True):
            if (
                not isinstance(out, torch.Tensor)
                or out.ndim == 0
                or (out.shape[0] != x.shape[0])
            ):
                raise ValueError(
                    f"Layer {name!r} of {type(self.module).__name__} is not a tensor "
                    "with one row per input, so it cannot be a DkNN layer; choose "
                    "another layer (see skdknn.nets.layer_names)."
                )
            flat.append(out.reshape(out.shape[0], -1))
        return flat


def layer_extractor(module: nn.Module, layers: Sequence[str]) -> LayerExtractor:
    """A (cached) :class:`LayerExtractor` of ``layers`` for ``module``."""
    key = (_structure(module), tuple(layers))
    with _LOCK:
        cached = _EXTRACTORS.setdefault(module, {}).get(key)
    if cached is not None:
        return cached
    extractor = LayerExtractor(module, layers)
    with _LOCK:
        per_module = _EXTRACTORS.setdefault(module, {})
        if len(per_module) > 32:  # attacks and searches try many layer lists
            per_module.clear()
        per_module[key] = extractor
    return extractor

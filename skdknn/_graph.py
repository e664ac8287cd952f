"""Layers are graph nodes: names, resolution and extraction of hidden-layer tensors.

A layer name denotes one tensor of the network's forward pass. The network is traced
with :mod:`torch.fx` and every node gets a qualified name, as torchvision's
``get_graph_node_names`` gives them: ``layer1.0.conv1`` for a module's output,
``layer1.0.relu_1`` for the second call of a reused module, ``layer1.0.add`` for a
residual sum or any function call inside ``layer1.0``. The output of a module whose
forward pass is traced through (``layer1``, ``layer1.0``) is addressable by the
module's path too. A module's path always names that module's (first) output,
and a generated name is never a module's path: a function ``torch.relu`` next to a
module ``self.relu`` is ``relu_1``, the module ``relu``. Extracting layers runs a
copy of the traced graph that returns those tensors and stops after the last one
needed; every operation before it runs, in-place ones whose result is unused too.

The traced graph is cached per module and traced again whenever the module differs
from the one traced (submodules, attributes, tensors, hooks; see ``_fingerprint``).

A network that ``torch.fx`` cannot trace (data-dependent control flow, for example),
or whose root module has forward hooks, falls back to forward hooks on its modules,
named by their paths. A hook cannot tell apart two calls of one module, so the whole
forward pass runs on every batch and a module that runs more than once in it is
refused with an error, never silently reduced to its first call.
"""

from __future__ import annotations

import copy
import enum
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

from ._eval import eval_mode

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
    operator.imatmul,
    operator.itruediv,
    operator.ifloordiv,
    operator.imod,
    operator.ipow,
    operator.iand,
    operator.ior,
    operator.ixor,
    operator.ilshift,
    operator.irshift,
    operator.setitem,
}


class _NamingTracer(fx.Tracer):
    """An FX tracer that names every node by its place in the module tree.

    ``names`` lists ``(name, node)`` in execution order: each node under its
    qualified name, and the output of each traced-through module under the module's
    path, right after that output is produced. A name denotes one tensor:

    - a module's output is named by the module's path (the first call's output);
    - another node takes its qualified name (``layer1.0.add``) unless that name is
      already taken or is the path of a module of the network;
    - a taken name is followed by the next free suffix ``_1``, ``_2``, ... that is
      neither a name already given nor a module's path (torchvision's numbering,
      which ``layer1.0.relu_1`` for the second call of a reused module follows).

    Tensors that the forward pass creates (``torch.tensor(...)`` constants) are
    kept in ``constants`` instead of being set on the traced module as torch.fx
    does: tracing never changes the network.

    While it traces, torch.fx patches ``nn.Module.__call__`` and ``__getattr__``
    for the whole process (pytorch/pytorch#112775, #187589): a forward pass in
    another thread (joblib's threading backend, a Dask worker's threads) would
    enter this trace, fail with "module is not installed as a submodule", or add
    its own operations to this graph when it runs the same network. Calls from
    any thread but the tracing one run as if nothing were traced.
    """

    def __init__(self, paths: set[str]) -> None:
        super().__init__()
        self._owner = threading.get_ident()
        self._module_path = ""
        self._paths = paths
        self._taken: set[str] = set()
        self.names: list[tuple[str, fx.Node]] = []
        self.constants: dict[str, torch.Tensor] = {}

    def _add(self, base: str, node: fx.Node, *, module: bool = False) -> None:
        name, suffix = base, 0
        while name in self._taken or (name in self._paths and not module):
            suffix += 1
            name = f"{base}_{suffix}"
            module = False  # a later call of a module never takes another's path
        self._taken.add(name)
        self.names.append((name, node))

    def call_module(
        self,
        m: nn.Module,
        forward: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        if threading.get_ident() != self._owner:
            return forward(*args, **kwargs)  # another thread's plain forward pass
        outer, path = self._module_path, self.path_of_module(m)
        self._module_path = path
        try:
            out = super().call_module(m, forward, args, kwargs)
        finally:
            self._module_path = outer
        if not self.is_leaf_module(m, path) and isinstance(out, fx.Proxy):
            self._add(path, out.node, module=True)
        return out

    def getattr(
        self, attr: str, attr_val: Any, parameter_proxy_cache: dict[str, fx.Proxy]
    ) -> Any:
        if threading.get_ident() != self._owner:
            return attr_val  # another thread reads the module's real attribute
        return super().getattr(attr, attr_val, parameter_proxy_cache)

    def create_arg(self, a: Any) -> Any:
        if (
            isinstance(a, torch.Tensor)
            and not isinstance(a, nn.Parameter)
            and a not in self.tensor_attrs
            and not any(a is b for b in self.root.buffers())
        ):
            # fx would store the constant on the traced module itself
            name = f"_skdknn_constant{len(self.constants)}"
            self.constants[name] = a
            self.tensor_attrs[a] = name
        return super().create_arg(a)

    def create_proxy(self, kind: str, target: Any, *args: Any, **kwargs: Any) -> Any:
        proxy = super().create_proxy(kind, target, *args, **kwargs)
        node = proxy.node
        if kind == "call_module":
            self._add(str(target), node, module=True)
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
    ``constants`` holds the tensors the forward pass creates (traced networks).
    """

    names: list[str]
    nodes: dict[str, str]
    graph: fx.Graph | None = None
    logits: str | None = None
    reason: str = ""
    activations: list[str] = field(default_factory=list)
    constants: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def traced(self) -> bool:
        return self.graph is not None


#: A module's dicts of forward hooks (by handle id), as torch keeps them.
_HOOK_DICTS = (
    "_forward_pre_hooks",
    "_forward_hooks",
    "_forward_pre_hooks_with_kwargs",
    "_forward_hooks_with_kwargs",
    "_forward_hooks_always_called",
)
#: The handle ids of the hooks the hook fallback puts on a module while it reads
#: a batch (see LayerExtractor._hooked_forward). They are not the network's: while
#: one thread reads layers with them, the network another thread fingerprints is
#: the same. Hooks are added, removed and read under _HOOKS, so a reader never
#: iterates a hook dict that another thread is changing.
_OWN_HOOKS: set[int] = set()
_HOOKS = threading.Lock()


def user_hooks(module: nn.Module) -> dict[str, list[tuple[int, Any]]]:
    """The forward hooks that ``module`` itself (not its submodules) runs.

    Parameters
    ----------
    module : torch.nn.Module

    Returns
    -------
    hooks : dict of str to list of (int, object)
        Per dict of torch's (``"_forward_hooks"``, ``"_forward_pre_hooks"``, and
        the ``with_kwargs`` / ``always_called`` flags), its ``(handle id, value)``
        items, without the hooks skdknn adds for the duration of a forward pass.
        A snapshot, safe while other threads run skdknn forward passes.
    """
    with _HOOKS:
        return {name: _without_own(getattr(module, name, {})) for name in _HOOK_DICTS}


def _without_own(hooks: dict[int, Any]) -> list[tuple[int, Any]]:
    return [(key, value) for key, value in hooks.items() if key not in _OWN_HOOKS]


def _root_hooks(module: nn.Module) -> bool:
    """Whether calling ``module`` runs hooks of its own (fx traces ``forward``)."""
    return any(user_hooks(module).values())


def _trace(module: nn.Module) -> LayerGraph:
    if _root_hooks(module):
        # module(x) runs them, a traced forward would not: read what module(x) does
        return _hooked(module, "the network has forward hooks of its own")
    paths = {name for name, _ in module.named_modules(remove_duplicate=False)}
    tracer = _NamingTracer(paths - {""})
    try:
        # the DkNN runs the network in eval mode; trace that graph
        with eval_mode(module):
            graph = tracer.trace(module)
    except Exception as exc:  # any tracing failure means hooks
        return _hooked(module, f"{type(exc).__name__}: {exc}")
    nodes = {name: node.name for name, node in tracer.names}
    assert len(nodes) == len(tracer.names), "a layer name must denote one tensor"
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
        constants=tracer.constants,
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
        target = str(node.target)
        return (target.endswith("_") and not target.endswith("__")) or node.kwargs.get(
            "out"
        ) is not None
    if node.op == "call_function":
        name = getattr(node.target, "__name__", "")
        return (
            bool(node.kwargs.get("inplace"))
            or node.kwargs.get("out") is not None
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


class _Same:
    """Stands for one object in a fingerprint: equal only to the same live object.

    A weak reference, so a fingerprint keeps no object alive (an identity alone
    could be reused by a new object once the old one is freed).
    """

    __slots__ = ("ident", "ref")

    def __init__(self, obj: Any) -> None:
        self.ident = id(obj)
        try:
            self.ref: Any = weakref.ref(obj)
        except TypeError:  # no weak references: the identity alone
            self.ref = None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, _Same) or other.ident != self.ident:
            return False
        if self.ref is None or other.ref is None:
            return self.ref is other.ref
        mine = self.ref()
        return mine is not None and mine is other.ref()

    __hash__ = None  # type: ignore[assignment]


_VALUES = (
    type(None),
    bool,
    int,
    float,
    complex,
    str,
    bytes,
    enum.Enum,
    torch.dtype,
    torch.device,
    torch.layout,
    torch.memory_format,
)
# a module's bookkeeping that does not change what its forward pass computes
_NOT_FORWARD = frozenset(
    {
        "training",  # traced in eval mode whatever the module's mode
        "_non_persistent_buffers_set",
        "_backward_pre_hooks",
        "_backward_hooks",
        "_is_full_backward_hook",
        "_state_dict_hooks",
        "_state_dict_pre_hooks",
        "_load_state_dict_pre_hooks",
        "_load_state_dict_post_hooks",
    }
)


def _freeze(value: Any, depth: int = 0) -> Any:
    """A comparable snapshot of an attribute's value, as a trace may have read it."""
    if isinstance(value, _VALUES):
        return (type(value), value)
    if isinstance(value, torch.Tensor):
        try:  # a value read while tracing is baked in: in-place changes count
            version = value._version
        except RuntimeError:  # inference tensors have no version counter
            version = None
        return (_Same(value), version)
    if depth < 4 and isinstance(value, (tuple, list)) and len(value) <= 1024:
        return (type(value), tuple(_freeze(v, depth + 1) for v in value))
    if depth < 4 and isinstance(value, dict) and len(value) <= 1024:
        return (
            type(value),
            tuple(
                (_freeze(k, depth + 1), _freeze(v, depth + 1)) for k, v in value.items()
            ),
        )
    return _Same(value)


def _fingerprint(module: nn.Module) -> list[Any]:
    """What a traced graph of ``module`` depends on, cheap to compare.

    Every submodule (its path, the object, its class and the class's ``forward``)
    and every attribute of each: parameters and buffers by identity (the graph
    reads them when it runs, so in-place updates need no new trace), hooks by
    identity, tensors by identity and version, numbers, strings and containers of
    them by value, any other object by identity. Changing any of them means a
    new trace.
    """
    parts: list[Any] = []
    with _HOOKS:  # see _OWN_HOOKS
        for path, sub in module.named_modules(remove_duplicate=False):
            cls = type(sub)
            parts.append(
                (path, _Same(sub), _Same(cls), _Same(getattr(cls, "forward", None)))
            )
            for key, value in list(sub.__dict__.items()):
                if key in _NOT_FORWARD:
                    continue
                if key in ("_parameters", "_buffers", "_modules"):
                    parts.append((key, tuple((k, _Same(v)) for k, v in value.items())))
                elif key in _HOOK_DICTS:
                    parts.append((key, _freeze(dict(_without_own(value)))))
                else:
                    parts.append((key, _freeze(value)))
    return parts


_LOCK = threading.RLock()  # tracing patches torch globally: one trace at a time
_GRAPHS: weakref.WeakKeyDictionary[nn.Module, tuple[list[Any], LayerGraph]] = (
    weakref.WeakKeyDictionary()
)
_EXTRACTORS: weakref.WeakKeyDictionary[
    nn.Module, dict[tuple[str, ...], tuple[list[Any], LayerExtractor]]
] = weakref.WeakKeyDictionary()


def layer_graph(module: nn.Module) -> LayerGraph:
    """The layer graph of ``module``: cached, traced again when the module changes.

    The cache is checked against :func:`_fingerprint`, so a graph is never reused
    once the module's submodules, attributes, tensors or hooks differ from the
    ones it was traced with.
    """
    return _cached_graph(module, _fingerprint(module))


def _cached_graph(module: nn.Module, key: list[Any]) -> LayerGraph:
    with _LOCK:
        cached = _GRAPHS.get(module)
        if cached is None or cached[0] != key:
            cached = (key, _trace(module))
            _GRAPHS[module] = cached
        return cached[1]


def layer_names(module: nn.Module) -> list[str]:
    """Names of every tensor of the forward pass that can serve as a DkNN layer.

    The network is traced with :mod:`torch.fx`; names are qualified and unique, as
    torchvision's ``get_graph_node_names`` gives them (``layer1.0.relu_1`` is the
    second call of the ReLU module of ``layer1.0``, ``layer1.0.add`` its residual
    sum), and the output of each traced-through module is also listed under its path
    (``layer1``, ``layer1.0``). A module's path always names that module's output:
    another tensor whose name would be a module's path (a function ``torch.relu``
    next to a module ``relu``, the second call of ``relu`` next to a module
    ``relu_1``) takes the next free suffix instead. Names are listed in execution
    order. A layer can also be given by the last part of its name when that part
    is unique (``relu1`` for ``features.relu1``).

    A network that cannot be traced, or whose root module has forward hooks, lists
    its module paths (its layers are then read with forward hooks, which refuse a
    module called more than once).

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
    return _resolve(module, layer_graph(module), name)


def _resolve(module: nn.Module, graph: LayerGraph, name: str) -> str:
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


def _snapshot(value: Any) -> Any:
    """A copy of a layer's tensor that later in-place operations cannot change."""
    return value.clone() if isinstance(value, torch.Tensor) else value


class LayerExtractor:
    """Runs a network up to the named layers and returns their outputs.

    Calling it on a batch returns one tensor per layer, flattened to
    ``(batch, width)`` and, when the network has in-place operations, copied as
    soon as it is produced (later in-place operations of the network cannot change
    it). A traced network runs a copy of its graph that ends at the last layer
    needed; every operation before that point runs, in-place ones included. A
    network read with hooks runs its whole forward pass on every batch, so that a
    second call of a chosen module is always seen. Autograd follows the outputs
    when it is enabled.
    """

    def __init__(
        self, module: nn.Module, layers: Sequence[str], graph: LayerGraph | None = None
    ) -> None:
        # weak: the extractor is cached per module and must not keep it alive
        self._module = weakref.ref(module)
        self.layers = list(layers)
        self.graph = layer_graph(module) if graph is None else graph
        self.full_names = [_resolve(module, self.graph, name) for name in self.layers]
        self._forward: Callable[[torch.Tensor], Sequence[Any]]
        if self.graph.traced:
            self._forward = self._truncated_graph()
        else:
            self._forward = self._hooked_forward

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
                    node = graph.call_function(_snapshot, (node,))
            copies.append(node)
        # the forward pass stops after the last layer needed: the nodes after it
        # go, and every node before it stays (an in-place operation whose result
        # is unused still changes the tensors the layers read)
        order = {node: i for i, node in enumerate(graph.nodes)}
        last = max((order[node] for node in copies), default=-1)
        for node in reversed(list(graph.nodes)):
            if order[node] > last and node.op != "placeholder":
                graph.erase_node(node)
        graph.output(tuple(copies))
        attributes: dict[str, Any] = dict(self.graph.constants)
        for node in graph.nodes:
            if node.op in ("get_attr", "call_module") and node.target not in attributes:
                attributes[str(node.target)] = _attribute(self.module, str(node.target))
        return fx.GraphModule(attributes, graph)

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

    def _hooked_forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        # the whole forward pass runs on every batch: a module may be called again
        # later, for some batches only (data-dependent control flow), and a hook
        # must see that second call to refuse it
        captured: dict[str, Any] = {}
        calls: Counter[str] = Counter()
        wanted = set(self.full_names)
        owner = threading.get_ident()  # hooks live on a shared module
        kind = type(self.module).__name__

        def make_hook(path: str) -> Any:
            def hook(_mod: nn.Module, _inp: Any, out: Any) -> None:
                if threading.get_ident() != owner:
                    return
                calls[path] += 1
                if calls[path] == 1:
                    if not isinstance(out, torch.Tensor):
                        raise _not_a_tensor(path, kind, out)
                    captured[path] = out.clone()

            return hook

        with _HOOKS:
            handles = [
                self.module.get_submodule(path).register_forward_hook(make_hook(path))
                for path in wanted
            ]
            _OWN_HOOKS.update(handle.id for handle in handles)
        try:
            self.module(x)
        finally:
            with _HOOKS:
                for handle in handles:
                    handle.remove()
                    _OWN_HOOKS.discard(handle.id)
        for path in self.full_names:
            if calls[path] > 1:
                raise self._refuse_reused(path, calls[path])
        missing = [
            n
            for n, full in zip(self.layers, self.full_names, strict=True)
            if full not in captured
        ]
        if missing:
            raise ValueError(
                f"Layers {missing} produced no output during the forward pass of "
                f"{kind}; choose layers that are called by its forward method."
            )
        return [captured[full] for full in self.full_names]

    def __call__(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Outputs of the layers for the batch ``x``, each of shape (batch, width)."""
        outputs = self._forward(x)
        kind = type(self.module).__name__
        flat = []
        for name, out in zip(self.layers, outputs, strict=True):
            if not isinstance(out, torch.Tensor):
                raise _not_a_tensor(name, kind, out)
            if out.ndim == 0 or out.shape[0] != x.shape[0]:
                raise ValueError(
                    f"Layer {name!r} of {kind} is not a tensor with one row per "
                    f"input (its shape is {tuple(out.shape)} for {x.shape[0]} "
                    "inputs), so it cannot be a DkNN layer; choose another layer "
                    "(see skdknn.nets.layer_names)."
                )
            flat.append(out.reshape(out.shape[0], -1))
        return flat


def _not_a_tensor(name: str, kind: str, out: Any) -> ValueError:
    return ValueError(
        f"Layer {name!r} of {kind} outputs a {type(out).__name__}, not a tensor, "
        "so it cannot be a DkNN layer (a module such as nn.GRU or nn.LSTM returns "
        "a tuple); choose a layer whose output is one tensor with one row per "
        "input (see skdknn.nets.layer_names; a traced network lists the elements "
        "it takes from a tuple as getitem layers)."
    )


def _attribute(module: nn.Module, target: str) -> Any:
    """The submodule, parameter, buffer or tensor at dotted path ``target``."""
    value: Any = module
    for part in target.split("."):
        value = getattr(value, part)
    return value


def layer_extractor(module: nn.Module, layers: Sequence[str]) -> LayerExtractor:
    """A (cached) :class:`LayerExtractor` of ``layers`` for ``module``.

    Built again when the module changed since (see :func:`layer_graph`).
    """
    key, layers = _fingerprint(module), tuple(layers)
    with _LOCK:
        cached = _EXTRACTORS.get(module, {}).get(layers)
        if cached is not None and cached[0] == key:
            return cached[1]
    extractor = LayerExtractor(module, layers, _cached_graph(module, key))
    with _LOCK:
        per_module = _EXTRACTORS.setdefault(module, {})
        if len(per_module) > 32:  # attacks and searches try many layer lists
            per_module.clear()
        per_module[layers] = (key, extractor)
    return extractor

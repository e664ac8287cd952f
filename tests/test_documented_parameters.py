"""Every public estimator's parameters: documented, with the documented defaults,
and stored by ``__init__`` as given (scikit-learn's ``get_params`` / ``clone``).

The docstrings (numpydoc, parsed by numpydoc itself) are the user's reference for
the defaults; a default changed in the signature but not in the docs, or a
parameter ``__init__`` stores as something else than it was given, is a silent
change of behaviour that no other test has to notice.
"""

from __future__ import annotations

import ast
import inspect
import re

import pytest
from sklearn.base import clone

import skdknn
import skdknn.attacks
import skdknn.neighbors

docscrape = pytest.importorskip("numpydoc.docscrape")

ESTIMATORS = sorted(
    {
        getattr(module, name)
        for module in (skdknn, skdknn.attacks, skdknn.neighbors)
        for name in module.__all__
        if inspect.isclass(getattr(module, name))
        and hasattr(getattr(module, name), "get_params")
    },
    key=lambda cls: cls.__name__,
)


def documented_defaults(cls: type) -> dict[str, str]:
    """{parameter: the text after ``default=`` in its numpydoc type line}."""
    defaults = {}
    for param in docscrape.ClassDoc(cls)["Parameters"]:
        names = [n.strip() for n in param.name.split(",")]
        match = re.search(r"default\s*=\s*(.*)$", param.type)
        if match is None:
            continue
        text = match.group(1).strip()
        values = [v.strip() for v in text.split(",")] if len(names) > 1 else [text]
        assert len(values) == len(names), (cls.__name__, param.name, param.type)
        defaults.update(zip(names, values, strict=True))
    return defaults


def signature_parameters(cls: type) -> dict[str, inspect.Parameter]:
    params = inspect.signature(cls.__init__).parameters
    return {name: p for name, p in params.items() if name != "self"}


def test_the_public_estimators_are_all_found():
    names = {cls.__name__ for cls in ESTIMATORS}
    assert {
        "DeepKNNClassifier",
        "FGSMAttack",
        "BIMAttack",
        "CarliniWagnerL2Attack",
        "AdvKNNAttack",
        "MeanAttack",
        "ExactBackend",
        "ShardedBackend",
        "ProjectedBackend",
    } <= names


@pytest.mark.parametrize("cls", ESTIMATORS, ids=lambda cls: cls.__name__)
def test_every_parameter_is_documented_with_its_default(cls):
    documented = {
        n.strip()
        for param in docscrape.ClassDoc(cls)["Parameters"]
        for n in param.name.split(",")
    }
    params = signature_parameters(cls)
    assert set(params) <= documented, set(params) - documented
    defaults = documented_defaults(cls)
    for name, param in params.items():
        if param.default is inspect.Parameter.empty:
            continue
        assert name in defaults, f"{cls.__name__}.{name}: no 'default=' in its docs"
        text = defaults[name].strip("`")
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            # a name or an expression: the signature's default must be spelled so
            assert text in (repr(param.default), str(param.default)), (name, text)
        else:
            assert value == param.default and type(value) is type(param.default), (
                f"{cls.__name__}.{name}: documented default {text}, "
                f"signature default {param.default!r}"
            )


@pytest.mark.parametrize("cls", ESTIMATORS, ids=lambda cls: cls.__name__)
def test_a_parameter_left_out_is_stored_as_its_documented_default(cls):
    """The documented default is what the estimator holds when the parameter is
    left out: read off a constructed object, not off the signature, which a
    wrapper (a decorator, mutmut's trampoline) can show unchanged while the
    function it calls has another default."""
    params = signature_parameters(cls)
    required = {n: object() for n, p in params.items() if p.default is p.empty}
    stored = cls(**required).get_params(deep=False)
    defaults = documented_defaults(cls)
    for name, param in params.items():
        if param.default is inspect.Parameter.empty:
            continue
        text = defaults[name].strip("`")
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            assert text in (repr(stored[name]), str(stored[name])), (name, text)
        else:
            assert value == stored[name] and type(value) is type(stored[name]), (
                f"{cls.__name__}.{name}: documented default {text}, "
                f"stored {stored[name]!r}"
            )


@pytest.mark.parametrize("cls", ESTIMATORS, ids=lambda cls: cls.__name__)
def test_init_stores_every_parameter_as_given(cls):
    """``__init__`` stores parameters only, unchanged: each one set to a distinct
    object comes back from ``get_params`` as that object, and survives ``clone``
    (which raises when a parameter is not stored as given)."""
    given = {name: object() for name in signature_parameters(cls)}
    estimator = cls(**given)
    params = estimator.get_params(deep=False)
    assert set(params) == set(given)
    for name, value in given.items():
        assert params[name] is value, f"{cls.__name__}.{name} not stored as given"
    cloned = clone(estimator, safe=False)
    assert cloned.get_params(deep=False).keys() == given.keys()

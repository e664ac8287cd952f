"""Carlini-Wagner L2 and PGD with restarts, checked against torchattacks and ART.

torchattacks and ART are test dependencies (CI installs torchattacks with
``pip install --no-deps``: it pins an old ``requests``). Where the algorithms
coincide the adversarial examples must agree to float rounding; where they differ,
the test says why.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.base import clone
from sklearn.datasets import make_classification
from sklearn.frozen import FrozenEstimator
from torch import nn

from skdknn import DeepKNNClassifier
from skdknn.attacks import AdvKNNAttack, BIMAttack, CarliniWagnerL2Attack

torchattacks = pytest.importorskip("torchattacks")
art_classification = pytest.importorskip("art.estimators.classification")
art_evasion = pytest.importorskip("art.attacks.evasion")


def tiny_cnn(logit_shift: float = 0.0) -> nn.Module:
    """A seeded 8x8 CNN with 3 classes; ``logit_shift`` is added to every logit."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3)
    )
    with torch.no_grad():
        net[3].bias += logit_shift
    return net.eval()


def images(low: float = 0.05, high: float = 0.95, n: int = 16) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.uniform(low, high, size=(n, 1, 8, 8)).astype(np.float32)


def clean_labels(net: nn.Module, X: np.ndarray) -> torch.Tensor:
    with torch.no_grad():
        return net(torch.from_numpy(X)).argmax(1)


def logits_of(net: nn.Module, X: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return net(torch.from_numpy(X)).numpy()


def generator_seed(random_state: int) -> int:
    """The torch seed an attack draws its random starts from (see _perturb_batches)."""
    return int(np.random.RandomState(random_state).randint(2**31 - 1))


# -- Carlini-Wagner L2 -----------------------------------------------------------------


@pytest.mark.parametrize("c, steps", [(1.0, 20), (10.0, 40)])
def test_cw_equals_torchattacks_without_binary_search(c, steps):
    """torchattacks' CW is ours with one binary-search step and no early abort.

    Its margin multiplies the logits by a one-hot mask, which replaces negative
    logits by 0 (torchattacks issue #184); with positive logits, as here, the two
    objectives are the same, and the examples agree to float rounding (atanh is
    computed differently).
    """
    net = tiny_cnn(logit_shift=5.0)
    X = images()
    assert logits_of(net, X).min() > 0
    t = clean_labels(net, X)
    ours = (
        CarliniWagnerL2Attack(
            net,
            learning_rate=0.01,
            initial_const=c,
            binary_search_steps=1,
            n_iter=steps,
            abort_early=False,
        )
        .fit(X)
        .transform(X)
    )
    theirs = torchattacks.CW(net, c=c, kappa=0, steps=steps, lr=0.01)(
        torch.from_numpy(X), t
    ).numpy()
    np.testing.assert_allclose(ours, theirs, atol=1e-6)
    assert not np.array_equal(ours, X)  # the attack did something


def test_cw_margin_uses_the_largest_other_logit_even_when_negative():
    """With negative logits torchattacks' margin is wrong; ours is C&W's."""
    net = tiny_cnn(logit_shift=-5.0)
    X = images()
    assert logits_of(net, X).max() < 0
    ours = (
        CarliniWagnerL2Attack(
            net, initial_const=1.0, binary_search_steps=3, n_iter=50, learning_rate=0.01
        )
        .fit(X)
        .transform(X)
    )
    z = logits_of(net, ours)
    t = clean_labels(net, X).numpy()
    changed = z.argmax(1) != t
    assert changed.mean() > 0.5
    # rows that failed come back unchanged
    np.testing.assert_array_equal(ours[~changed], X[~changed])
    theirs = torchattacks.CW(net, c=1.0, kappa=0, steps=50, lr=0.01)(
        torch.from_numpy(X), torch.from_numpy(t)
    ).numpy()
    # torchattacks pushes Z_t below 0 instead of below the other logits: no success
    assert (logits_of(net, theirs).argmax(1) == t).all()


def test_cw_binary_search_finds_the_minimal_l2_of_a_linear_model():
    """For a 2-class linear model the smallest L2 perturbation is known exactly."""
    torch.manual_seed(1)
    net = nn.Linear(6, 2)
    X = np.random.default_rng(1).uniform(0.3, 0.7, size=(10, 6)).astype(np.float32)
    w = (net.weight[1] - net.weight[0]).detach().numpy()
    b = float((net.bias[1] - net.bias[0]).detach())
    margin = X @ w + b
    minimal = np.abs(margin) / np.linalg.norm(w)  # distance to the hyperplane
    one_step = CarliniWagnerL2Attack(
        net, initial_const=1e-3, binary_search_steps=1, n_iter=200, learning_rate=0.01
    ).fit(X)
    searched = clone(one_step).set_params(binary_search_steps=8).fit(X)
    # c = 1e-3 alone is too weak to cross the boundary; the search raises it
    np.testing.assert_array_equal(one_step.transform(X), X)
    X_adv = searched.transform(X)
    l2 = np.linalg.norm(X_adv - X, axis=1)
    assert (np.sign(X_adv @ w + b) != np.sign(margin)).all()
    assert (l2 >= minimal - 1e-5).all()  # nothing beats the optimum
    assert (l2 <= 1.05 * minimal + 1e-3).all(), l2 / minimal


class RecordingLinear(nn.Module):
    """A linear model that records, for every forward pass with gradients, its
    logits and the gradient of the attack's loss with respect to them."""

    def __init__(self, lin: nn.Linear) -> None:
        super().__init__()
        self.lin = lin
        self.logits: list[torch.Tensor] = []
        self.grads: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.lin(x)
        if out.requires_grad:
            self.logits.append(out.detach().clone())
            out.register_hook(lambda g: self.grads.append(g.detach().clone()))
        return out


def test_cw_binary_search_sequence_of_c_is_the_documented_one():
    """The constant c of each binary-search step, read off the loss's gradient
    with respect to the logits (c on the attacked logit while the margin term is
    not clamped), follows the documented rule per row: times 10 until a step finds
    an example, then the midpoint of the largest failing and the smallest
    successful c. (A linear model's path crosses its boundary at the closest
    point for any large enough c, so the result alone cannot tell the rule.)"""
    torch.manual_seed(1)
    model = RecordingLinear(nn.Linear(6, 2)).eval()
    X = np.random.default_rng(1).uniform(0.3, 0.7, size=(10, 6)).astype(np.float32)
    steps, n_iter = 6, 30
    CarliniWagnerL2Attack(
        model,
        initial_const=1e-3,
        binary_search_steps=steps,
        n_iter=n_iter,
        learning_rate=0.01,
        abort_early=False,
    ).fit(X).transform(X)
    t = logits_of(model.lin, X).argmax(1)
    rows = np.arange(len(X))
    logits = torch.stack(model.logits).numpy().reshape(steps, n_iter, len(X), 2)
    grads = torch.stack(model.grads).numpy().reshape(steps, n_iter, len(X), 2)
    c_seen = np.abs(grads[..., rows, t]).max(axis=1)  # (steps, rows)
    const = np.full(len(X), 1e-3)
    lower, upper = np.zeros(len(X)), np.full(len(X), np.inf)
    for step in range(steps):
        np.testing.assert_allclose(c_seen[step], const, rtol=1e-5)
        z = logits[step]  # (n_iter, rows, 2)
        found = (z[:, rows, 1 - t] > z[:, rows, t]).any(axis=0)
        upper = np.where(found, np.minimum(upper, const), upper)
        lower = np.where(found, lower, np.maximum(lower, const))
        const = np.where(np.isfinite(upper), (lower + upper) / 2, const * 10)
    # the search went both ways: most rows were raised, then bisected
    assert (np.isfinite(upper) & (lower > 0)).sum() >= 5


def test_cw_confidence_is_a_margin():
    net = tiny_cnn(logit_shift=5.0)
    X = images()
    t = clean_labels(net, X).numpy()
    X_adv = (
        CarliniWagnerL2Attack(
            net, confidence=0.05, initial_const=10.0, n_iter=50, learning_rate=0.01
        )
        .fit(X)
        .transform(X)
    )
    z = logits_of(net, X_adv)
    done = ~np.all(X_adv == X, axis=(1, 2, 3))
    assert done.mean() > 0.5
    real = z[np.arange(len(z)), t]
    z[np.arange(len(z)), t] = -np.inf
    assert (z.max(1)[done] - real[done] > 0.05).all()


def test_cw_box_boundary_pixels_move_and_the_box_holds():
    """Pixels at exactly 0 or 1 start 1e-6 inside the box and can move (slowly:
    tanh is flat there, hence the large learning rate); torchattacks starts them
    at atanh(+-1) = +-inf, where they stay."""
    net = tiny_cnn(logit_shift=5.0)
    X = np.round(images(0.0, 1.0))  # only 0s and 1s
    lo = np.zeros((1, 8, 8), np.float32)
    lo[0, :4] = -0.5  # a per-feature box: the top half may go below 0
    attack = CarliniWagnerL2Attack(
        net, initial_const=10.0, n_iter=100, learning_rate=0.1, clip_min=lo
    )
    X_adv = attack.fit(X).transform(X)
    assert (X_adv >= lo).all() and X_adv.max() <= 1.0
    assert X_adv[:, :, :4].min() < 0  # the per-feature bound is the one used
    changed = np.abs(X_adv - X).max(axis=(1, 2, 3)) > 1e-3
    assert changed.mean() > 0.5
    # both edges start inside: pixels at the upper edge move down, pixels at the
    # lower edge (0 in the bottom half) move up
    moved = np.abs(X_adv - X) > 1e-3
    assert moved[X == 1.0].any()
    assert moved[:, :, 4:][X[:, :, 4:] == 0.0].any()
    t = clean_labels(net, X)
    theirs = torchattacks.CW(net, c=10.0, steps=100, lr=0.1)(torch.from_numpy(X), t)
    np.testing.assert_array_equal(theirs.numpy(), X)


def test_cw_result_does_not_depend_on_the_batch():
    net = tiny_cnn(logit_shift=5.0)
    X = images()
    make = lambda bs: CarliniWagnerL2Attack(  # noqa: E731
        net,
        initial_const=1.0,
        binary_search_steps=3,
        n_iter=30,
        learning_rate=0.01,
        batch_size=bs,
    ).fit(X)
    # per-row early abort: the batch changes only the convolution's rounding
    np.testing.assert_allclose(make(16).transform(X), make(5).transform(X), atol=1e-6)


def forward_calls(net: nn.Module) -> list[int]:
    """A list that counts the rows of every forward pass of ``net``."""
    calls: list[int] = []
    net.register_forward_hook(lambda module, args, out: calls.append(len(out)))
    return calls


@pytest.mark.parametrize(
    "abort_early, n_iter, passes", [(True, 100, 11), (False, 100, 100), (True, 25, 3)]
)
def test_cw_abort_early_reaches_the_loop_and_stops_a_stalled_row(
    abort_early, n_iter, passes
):
    """With a tiny ``c`` the loss is almost the L2 term, which Adam's first steps
    only increase: with ``abort_early`` each row stops at the second check (checks
    every ``n_iter // 10`` iterations from i = 0: at i = 10 of 100, i = 2 of 25),
    without it every iteration runs. The class passes its setting through."""
    net = tiny_cnn(logit_shift=5.0)
    X = images(n=4)
    attack = CarliniWagnerL2Attack(
        net,
        initial_const=1e-6,
        binary_search_steps=1,
        n_iter=n_iter,
        abort_early=abort_early,
    ).fit(X)
    calls = forward_calls(net)
    attack.transform(X)
    # one pass for the clean labels, then the attack's
    assert len(calls) == 1 + passes


class ConstantLogits(nn.Module):
    """Logits that do not depend on the input: class 0 wins by 1 everywhere."""

    def __init__(self) -> None:
        super().__init__()
        self.logits = nn.Parameter(torch.tensor([1.0, 0.0, 0.0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.flatten(1)[:, :1] * 0.0) + self.logits


@pytest.mark.parametrize("n_iter, passes", [(100, 11), (25, 3), (10, 2), (5, 2)])
def test_cw_stops_a_row_whose_loss_stalls_at_the_second_check(n_iter, passes):
    """With logits that ignore the input, w gets no gradient: the loss stays
    c * margin, exactly, from the first step. abort_early stops a row whose loss
    fell by less than 0.01 % since the previous check, so every row stops at the
    second check, at i = max(n_iter // 10, 1): after that many passes plus one.
    A looser test (a loss that did not double) never stops it."""
    net = ConstantLogits()
    X = images(n=4)
    attack = CarliniWagnerL2Attack(net, binary_search_steps=1, n_iter=n_iter).fit(X)
    calls = forward_calls(net)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the zero-gradient warning
        X_adv = attack.transform(X)
    # one pass for the clean labels, then the attack's
    assert len(calls) == 1 + passes
    np.testing.assert_array_equal(X_adv, X)  # no success: the inputs come back


def test_cw_keeps_a_row_whose_loss_stays_zero_as_the_authors_do():
    """The authors stop a row when ``loss > 0.9999 * previous``: a loss of exactly
    0 at two checks (inputs at the box's midpoint, where the start gives x back
    exactly, and a label the network already gets wrong) keeps the row going, so
    abort_early then runs every iteration, as without it."""
    net = ConstantLogits()  # predicts class 0 everywhere
    X = np.full((4, 1, 8, 8), 0.5, np.float32)
    y = np.ones(4, dtype=np.int64)
    passes = {}
    for abort_early in (True, False):
        attack = CarliniWagnerL2Attack(
            net, binary_search_steps=1, n_iter=30, abort_early=abort_early
        ).fit(X)
        calls = forward_calls(net)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the zero-gradient warning
            attack.generate(X, y)
        passes[abort_early] = len(calls)
    assert passes[True] == passes[False] >= 30


def test_cw_leaves_the_network_parameters_alone():
    net = tiny_cnn()
    X = images(n=4)
    CarliniWagnerL2Attack(net, n_iter=5, binary_search_steps=2).fit(X).transform(X)
    assert all(p.grad is None for p in net.parameters())
    assert not net.training


def test_cw_keeps_float64_input_in_its_box_and_failed_rows_exact():
    net = tiny_cnn(logit_shift=5.0)
    X = images().astype(np.float64)
    attack = CarliniWagnerL2Attack(
        net, initial_const=1.0, binary_search_steps=1, n_iter=20, learning_rate=0.01
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no budget, so no budget warning
        X_adv = attack.fit(X).transform(X)
    assert X_adv.dtype == np.float64
    assert X_adv.min() >= 0.0 and X_adv.max() <= 1.0
    t = clean_labels(net, X.astype(np.float32)).numpy()
    failed = logits_of(net, X_adv.astype(np.float32)).argmax(1) == t
    assert 0 < failed.sum() < len(X)
    np.testing.assert_array_equal(X_adv[failed], X[failed])


def test_cw_parameters():
    net = tiny_cnn()
    X = images(n=4)
    assert "eps" not in CarliniWagnerL2Attack(net).get_params()
    with pytest.raises(TypeError, match="eps"):
        CarliniWagnerL2Attack(net, eps=0.1)  # type: ignore[call-arg]
    for bad in ({"n_iter": 0}, {"initial_const": 0.0}, {"confidence": -1.0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            CarliniWagnerL2Attack(net, **bad).fit(X)


def test_cw_true_labels_through_generate():
    net = tiny_cnn(logit_shift=5.0)
    X = images()
    t = clean_labels(net, X).numpy()
    attack = CarliniWagnerL2Attack(
        net, initial_const=1.0, n_iter=20, learning_rate=0.01
    ).fit(X)
    np.testing.assert_array_equal(attack.generate(X, t), attack.transform(X))
    other = (t + 1) % 3
    assert not np.array_equal(attack.generate(X, other), attack.transform(X))


def test_cw_statistics_beside_art():
    """ART's CarliniL2Method replaces Adam by a line search: compare outcomes only.

    Both must succeed on every input of this easy model with a comparable mean L2
    (measured: ours / ART = 1.03; the better optimiser may win by up to 25 %).
    """
    net = tiny_cnn(logit_shift=5.0)
    X = images()
    t = clean_labels(net, X).numpy()
    ours = (
        CarliniWagnerL2Attack(
            net,
            initial_const=1.0,
            binary_search_steps=4,
            n_iter=30,
            learning_rate=0.01,
        )
        .fit(X)
        .transform(X)
    )
    clf = art_classification.PyTorchClassifier(
        net,
        loss=nn.CrossEntropyLoss(),
        input_shape=(1, 8, 8),
        nb_classes=3,
        clip_values=(0.0, 1.0),
    )
    theirs = art_evasion.CarliniL2Method(
        clf,
        initial_const=1.0,
        binary_search_steps=4,
        max_iter=30,
        batch_size=16,
        verbose=False,
    ).generate(X, y=t)
    for X_adv in (ours, theirs):
        assert (logits_of(net, X_adv).argmax(1) != t).all()
    l2_ours = np.linalg.norm((ours - X).reshape(len(X), -1), axis=1).mean()
    l2_art = np.linalg.norm((theirs - X).reshape(len(X), -1), axis=1).mean()
    assert 1 / 1.25 < l2_ours / l2_art < 1.25, (l2_ours, l2_art)


# -- PGD: BIM with random starts and restarts ------------------------------------------


def test_bim_equals_torchattacks_pgd_and_art_bim_without_random_start():
    net = tiny_cnn()
    X = images(0.0, 1.0)
    t = clean_labels(net, X)
    ours = BIMAttack(net, eps=0.1, step=0.01, n_iter=20).fit(X).transform(X)
    theirs = torchattacks.PGD(net, eps=0.1, alpha=0.01, steps=20, random_start=False)(
        torch.from_numpy(X), t
    ).numpy()
    np.testing.assert_allclose(ours, theirs, atol=1e-6)
    clf = art_classification.PyTorchClassifier(
        net,
        loss=nn.CrossEntropyLoss(),
        input_shape=(1, 8, 8),
        nb_classes=3,
        clip_values=(0.0, 1.0),
    )
    art_bim = art_evasion.BasicIterativeMethod(
        clf, eps=0.1, eps_step=0.01, max_iter=20, batch_size=64, verbose=False
    ).generate(X, y=t.numpy())
    np.testing.assert_allclose(ours, art_bim, atol=1e-6)


def test_random_start_equals_torchattacks_pgd_from_the_same_seed():
    net = tiny_cnn()
    X = images(0.0, 1.0)
    t = clean_labels(net, X)
    ours = (
        BIMAttack(net, eps=0.1, step=0.01, n_iter=20, random_start=True, random_state=3)
        .fit(X)
        .transform(X)
    )
    torch.manual_seed(generator_seed(3))
    theirs = torchattacks.PGD(net, eps=0.1, alpha=0.01, steps=20)(
        torch.from_numpy(X), t
    ).numpy()
    np.testing.assert_allclose(ours, theirs, atol=1e-6)


def test_random_starts_of_several_batches_equal_torchattacks_batch_by_batch():
    """The random starts of successive batches come from one generator, in turn:
    torchattacks PGD called on the same batches one after the other from the
    same seed (the last batch is shorter)."""
    net = tiny_cnn()
    X = images(0.0, 1.0)
    t = clean_labels(net, X)
    ours = (
        BIMAttack(
            net,
            eps=0.1,
            step=0.01,
            n_iter=5,
            random_start=True,
            random_state=3,
            batch_size=6,
        )
        .fit(X)
        .transform(X)
    )
    torch.manual_seed(generator_seed(3))
    pgd = torchattacks.PGD(net, eps=0.1, alpha=0.01, steps=5)
    theirs = np.concatenate(
        [
            pgd(torch.from_numpy(X[i : i + 6]), t[i : i + 6]).numpy()
            for i in range(0, len(X), 6)
        ]
    )
    np.testing.assert_allclose(ours, theirs, atol=1e-6)


@pytest.mark.parametrize("R", [2, 4])
def test_restarts_keep_the_most_damaging_torchattacks_run(R):
    """n_restarts = R is R torchattacks PGD runs, then per input: misclassified
    first, then the highest cross-entropy. (ART's num_random_init keeps the last
    successful run instead, so it is not compared.)"""
    net = tiny_cnn()
    X = images(0.0, 1.0)
    t = clean_labels(net, X)
    ours = (
        BIMAttack(
            net,
            eps=0.1,
            step=0.01,
            n_iter=20,
            random_start=True,
            n_restarts=R,
            random_state=3,
        )
        .fit(X)
        .transform(X)
    )
    torch.manual_seed(generator_seed(3))
    pgd = torchattacks.PGD(net, eps=0.1, alpha=0.01, steps=20)
    runs = np.stack([pgd(torch.from_numpy(X), t).numpy() for _ in range(R)])
    logits = torch.from_numpy(logits_of(net, runs.reshape(-1, 1, 8, 8)))
    t_rep = t.repeat(R)
    wrong = (logits.argmax(1) != t_rep).numpy().reshape(R, -1)
    loss = F.cross_entropy(logits, t_rep, reduction="none").numpy().reshape(R, -1)
    best = np.lexsort((loss, wrong), axis=0)[-1]  # sort by wrong, then by loss
    expected = runs[best, np.arange(len(X))]
    assert len(set(best.tolist())) > 1  # the choice matters on this data
    np.testing.assert_allclose(ours, expected, atol=1e-6)


def test_restarts_are_seeded_and_never_less_damaging():
    net = tiny_cnn(logit_shift=0.0)
    X = images(0.0, 1.0, n=32)
    t = clean_labels(net, X)

    def make(n_restarts, seed=0):
        return BIMAttack(
            net,
            eps=0.05,
            step=0.01,
            n_iter=5,
            random_start=True,
            n_restarts=n_restarts,
            random_state=seed,
        ).fit(X)

    np.testing.assert_array_equal(make(3).transform(X), make(3).transform(X))
    first = make(1).transform(X)  # the first of the three restarts
    three = make(3).transform(X)
    z1, z3 = (
        torch.from_numpy(logits_of(net, first)),
        torch.from_numpy(logits_of(net, three)),
    )
    wrong1, wrong3 = z1.argmax(1) != t, z3.argmax(1) != t
    assert (wrong3 | ~wrong1).all()  # a success is never lost
    same = wrong1 == wrong3
    loss1 = F.cross_entropy(z1, t, reduction="none")
    loss3 = F.cross_entropy(z3, t, reduction="none")
    assert (loss3[same] >= loss1[same] - 1e-6).all()


def test_keep_most_damaging_by_hand():
    """Misclassified beats correctly classified whatever the losses; then the
    higher loss; a tie keeps the earlier run. The logits are the inputs' first
    three values; the fourth tells the runs apart."""
    from skdknn.attacks._bim import keep_most_damaging  # the pure rule under test

    def logits(x):
        return x[:, :3]

    t = torch.tensor([0, 0, 0])
    first = torch.tensor([[0.0, 0.1, -5.0, 1], [2.0, 0.0, 0.0, 1], [0.0, 1.0, 2.0, 1]])
    # row 0: correct now, with a higher loss than the misclassified first run;
    # row 1: misclassified now; row 2: misclassified both times, the same loss
    later = torch.tensor(
        [[0.0, -0.01, -0.01, 2], [0.0, 1.0, 0.0, 2], [0.0, 1.0, 2.0, 2]]
    )
    best = keep_most_damaging(logits, t, None, first)
    loss = F.cross_entropy(logits(later), t, reduction="none")
    assert loss[0] > best[2][0] and loss[2] == best[2][2]
    x, wrong, kept_loss = keep_most_damaging(logits, t, best, later)
    np.testing.assert_array_equal(x.numpy(), [first[0], later[1], first[2]])
    np.testing.assert_array_equal(wrong.numpy(), [True, True, True])
    np.testing.assert_array_equal(kept_loss.numpy(), [best[2][0], loss[1], best[2][2]])


def test_restarts_need_a_random_start():
    X = images(n=4)
    with pytest.raises(
        ValueError,
        match=r"^n_restarts=2 needs random_start=True: without a random start every "
        r"restart gives the same result\.$",
    ):
        BIMAttack(tiny_cnn(), n_restarts=2).fit(X)
    with pytest.raises(ValueError, match="n_restarts=3 needs random_start=True"):
        BIMAttack(tiny_cnn(), n_restarts=3).fit(X)
    with pytest.raises(ValueError, match="n_restarts"):
        BIMAttack(tiny_cnn(), n_restarts=0, random_start=True).fit(X)


# -- AdvKNN with CW through the DkNNB head ---------------------------------------------


@pytest.fixture(scope="module")
def tabular_dknn():
    X, y = make_classification(
        n_samples=400, n_features=6, n_informative=4, random_state=0
    )
    X = ((X - X.min()) / (X.max() - X.min())).astype(np.float32)
    dknn = DeepKNNClassifier(
        n_neighbors=10,
        calibration_size=60,
        max_epochs=20,
        batch_size=64,
        random_state=0,
    ).fit(X[:300], y[:300])
    return dknn, X[:300], X[300:]


def test_advknn_cw_crosses_the_head_and_moves_the_knn(tabular_dknn):
    dknn, X_train, X_test = tabular_dknn
    attack = AdvKNNAttack(
        FrozenEstimator(dknn),
        layer="relu2",
        method="cw",
        initial_const=1.0,
        learning_rate=0.01,
        n_iter=50,
        head_epochs=20,
        random_state=0,
    ).fit(X_train)
    X_adv = attack.transform(X_test)
    clean = attack.neighbor_distribution(X_test).argmax(1)
    head_adv = attack.head_proba(X_adv).argmax(1)
    done = np.abs(X_adv - X_test).max(axis=1) > 0
    # every changed row crosses the head's boundary (CW returns x where it fails)
    assert done.mean() > 0.8
    assert (head_adv[done] != clean[done]).all()
    # CW's smallest perturbations stop just past the head's boundary; many of them
    # also cross the kNN's (measured 41 %), with a mean L2 of about 0.13
    knn_adv = attack.neighbor_distribution(X_adv).argmax(1)
    assert np.mean(knn_adv != clean) > 0.3
    assert np.linalg.norm(X_adv - X_test, axis=1)[done].mean() < 0.3
    assert X_adv.min() >= 0.0 and X_adv.max() <= 1.0
    # the CW settings are parameters (clonable, grid-searchable)
    assert clone(attack).get_params()["binary_search_steps"] == 5


def test_advknn_boundary_copies_are_an_option(tabular_dknn):
    dknn, X_train, X_test = tabular_dknn
    base = AdvKNNAttack(
        FrozenEstimator(dknn), layer="relu2", head_epochs=20, random_state=0
    )
    paper = clone(base).fit(X_train)
    again = clone(base).set_params(boundary_eps=0.0).fit(X_train)
    boundary = clone(base).set_params(boundary_eps=0.2).fit(X_train)
    assert paper.get_params()["boundary_eps"] == 0.0  # the paper's recipe by default
    np.testing.assert_array_equal(paper.loss_curve_, again.loss_curve_)
    # more (and harder) training rows: a different head, still imitating the kNN
    assert not np.allclose(paper.loss_curve_, boundary.loss_curve_)
    assert boundary.agreement_ > 0.7, (paper.agreement_, boundary.agreement_)
    with pytest.raises(ValueError, match="boundary_eps"):
        clone(base).set_params(boundary_eps=-0.1).fit(X_train)


@pytest.mark.parametrize(
    "clip_min, clip_max",
    [
        (-np.inf, np.inf),
        (0.0, np.inf),
        (-np.inf, 1.0),
        (np.full((1, 8, 8), 0.0), np.where(np.eye(8) > 0, np.inf, 1.0)[None]),
        (-3e38, 3e38),  # finite in float64, but half-width * 2 overflows float32
    ],
)
def test_cw_refuses_a_box_that_is_not_finite(clip_min, clip_max):
    # before: accepted, and every input came back unchanged, with no warning
    net = tiny_cnn()
    X = images(n=4)
    with pytest.raises(ValueError, match="needs a finite clip box.*tanh"):
        CarliniWagnerL2Attack(net, clip_min=clip_min, clip_max=clip_max).fit(X)


def test_advknn_cw_refuses_an_infinite_box_before_training(tabular_dknn):
    dknn, X_train, _ = tabular_dknn
    attack = AdvKNNAttack(
        dknn, layer="relu2", method="cw", clip_min=-np.inf, clip_max=np.inf
    )
    with pytest.raises(ValueError, match="needs a finite clip box"):
        attack.fit(X_train)
    assert not hasattr(attack, "heads_")
    # the L-infinity methods keep accepting an unbounded side
    AdvKNNAttack(
        dknn, layer="relu2", head_epochs=1, clip_min=-np.inf, clip_max=np.inf
    ).fit(X_train[:50])


def test_cw_warns_for_a_box_far_wider_than_the_inputs():
    # before: [-1e30, 1e30] moved the inputs by float32 noise only, silently
    net = tiny_cnn()
    X = images(n=4)
    for clip_min, clip_max in ((0.0, 1.0), (-10.0, 10.0)):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            CarliniWagnerL2Attack(
                net, clip_min=clip_min, clip_max=clip_max, n_iter=2
            ).fit(X).transform(X)
    attack = CarliniWagnerL2Attack(net, clip_min=-1e30, clip_max=1e30, n_iter=2).fit(X)
    with pytest.warns(UserWarning, match="times the inputs' scale.*tanh"):
        attack.transform(X)

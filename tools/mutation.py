"""Mutation testing of skdknn's core modules with mutmut, one module at a time.

    python tools/mutation.py                      # every core module
    python tools/mutation.py conformal attacks    # some of them
    python tools/mutation.py --report             # scores of the last run only
    python tools/mutation.py classifier --only '*_search__*'  # some functions
    python tools/mutation.py exact --run-equivalents  # the listed equivalents too

Each module runs in its own copy of the package and tests, ``mutants/<module>/``
(git-ignored), whose pyproject.toml is the project's with ``[tool.mutmut]`` scoped
to the module: its files (``Module.files``) and only its own test files
(``Module.tests``). mutmut runs those tests once to learn which tests reach which
function, then runs every mutant against only the tests that reach its function,
fastest first, stopping at the first failure. A mutant *survives* when all of them
pass. The score of a module is

    killed / (mutants - equivalent)

where a timeout counts as killed and "no tests" as survived. Equivalent mutants
(the mutated code behaves exactly like the original) are listed in ``EQUIVALENT``
below with the reason; they are recognised by the text of the mutated line, so they
survive renumbering when a function changes. A run skips them (each would run
every test that reaches its function) after having mutmut generate the mutants;
``--run-equivalents`` runs them too and flags a listed mutant the tests kill. Not
run in CI (it takes minutes per module): see docs/development.md.

Nothing is printed while a module runs: mutmut's output is streamed to
``mutants/<module>/run.log`` (``tail -f`` it), and the module's score is printed
when its run ends. The report says "not run" for a module without results (not a
failure), and counts the unchecked mutants of a run apart: outside its ``--only``
globs (recorded in ``mutants/<module>/selection.json``) or not reached (an
interrupted run).
"""

from __future__ import annotations

import argparse
import ast
import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: The classifier's conformal wiring: the methods from neighbour counts to p-values.
WIRING = [
    "fit",
    "_calibration_split",
    "_search",
    "_p_values_from_counts",
    "_outputs",
    "predict_with_credibility",
    "neighbor_counts",
    "predict",
    "predict_proba",
    "p_values",
    "credibility",
    "confidence",
    "predict_set",
]

# mutmut's separator in the names of a method's mutants (class name, method name)
_SEP = "\u01c1"


@dataclass(frozen=True)
class Module:
    """A core module: the files mutmut mutates, the tests that judge the mutants,
    and the globs of the mutant names that count towards its score."""

    files: list[str]
    tests: list[str]
    globs: list[str]


_CLASSIFIER_TESTS = [
    "tests/test_classifier.py",
    "tests/test_calibration.py",
    "tests/test_classifier_calibration.py",
    "tests/test_scale.py",  # the single pass (predict_with_credibility) and chunks
    "tests/test_dask.py",  # the branches for dask arrays (worker threads: see mutmut())
    "tests/test_documented_parameters.py",  # __init__ and the documented defaults
]
_ATTACK_FILES = [
    "skdknn/attacks/_base.py",
    "skdknn/attacks/_bim.py",
    "skdknn/attacks/_fgsm.py",
]
_ATTACK_TESTS = [
    "tests/test_attack_steps.py",
    "tests/test_attack_precision.py",
    "tests/test_attacks.py",
    "tests/test_attacks_cw_pgd.py",  # BIM's random start and restarts (PGD)
    "tests/test_misuse.py",
    "tests/test_warnings.py",  # the warnings' categories and whole texts
    "tests/test_documented_parameters.py",
]
MODULES: dict[str, Module] = {
    "conformal": Module(
        ["skdknn/conformal.py"],
        [
            "tests/test_conformal.py",
            "tests/test_conformal_forms.py",
            "tests/test_calibration.py",
        ],
        ["skdknn.conformal.*"],
    ),
    "calibration": Module(
        ["skdknn/_calibration.py"],
        [
            "tests/test_conformal.py",
            "tests/test_conformal_forms.py",
            "tests/test_calibration.py",
            "tests/test_classifier_calibration.py",
        ],
        ["skdknn._calibration.*"],
    ),
    "classifier": Module(
        ["skdknn/_classifier.py"],
        _CLASSIFIER_TESTS,
        [f"skdknn._classifier.x{_SEP}DeepKNNClassifier{_SEP}{m}__*" for m in WIRING],
    ),
    # the attack steps and the batching / labels / box pipeline around them
    "attacks": Module(
        _ATTACK_FILES,
        _ATTACK_TESTS,
        [
            *(
                f"skdknn.attacks._base.x_{f}__*"
                for f in ("_loss_gradient_sign", "fgsm", "bim")
            ),
            *(
                f"skdknn.attacks._base.x{_SEP}GradientAttack{_SEP}{m}__*"
                for m in (
                    "fit",
                    "transform",
                    "generate",
                    "_logits",
                    "_clean_labels",
                    "_ball",
                    "_bounds",
                    "_box",
                    "_perturb_batches",
                    "_rng",
                )
            ),
            "skdknn.attacks._bim.*",
            "skdknn.attacks._fgsm.*",
        ],
    ),
    # applying the float32 step exactly in the input's dtype, and the misuse warnings;
    # judged without test_attacks / test_attacks_cw_pgd, whose module fixtures (a
    # DkNN trained on MNIST, the torchattacks / ART comparisons) are rebuilt in every
    # mutant's process (about 4x the run time) and which test the steps, not these
    "attack-precision": Module(
        _ATTACK_FILES,
        [
            "tests/test_attack_steps.py",
            "tests/test_attack_precision.py",
            "tests/test_misuse.py",
            "tests/test_warnings.py",
            "tests/test_documented_parameters.py",
        ],
        [
            *(
                f"skdknn.attacks._base.x_{f}__*"
                for f in ("_exceeds", "_round_inward", "_ball_bound", "land_in_dtype")
            ),
            f"skdknn.attacks._base.x{_SEP}_ZeroGradientRows{_SEP}*",
            *(
                f"skdknn.attacks._base.x{_SEP}GradientAttack{_SEP}{m}__*"
                for m in ("_validate_input", "_check_budgets", "_report_zero_gradient")
            ),
        ],
    ),
    # Carlini-Wagner L2 (its loop and the attack class)
    "cw": Module(
        ["skdknn/attacks/_cw.py"],
        ["tests/test_attacks_cw_pgd.py", "tests/test_documented_parameters.py"],
        ["skdknn.attacks._cw.*"],
    ),
    "sharded": Module(
        ["skdknn/neighbors/_sharded.py"],
        # test_dask's clusters run their workers as threads here (see mutmut()):
        # worker processes do not start inside mutmut's fork server, and a mutant
        # is switched on only in the process that runs the tests
        [
            "tests/test_sharded.py",
            "tests/test_dask.py",
            "tests/test_documented_parameters.py",
        ],
        ["skdknn.neighbors._sharded.*"],
    ),
    "exact": Module(
        ["skdknn/neighbors/_exact.py"],
        # float16 storage: the classifier's streamed fit and the tile budget
        [
            "tests/test_exact_backend.py",
            "tests/test_half_precision.py",
            "tests/test_documented_parameters.py",
        ],
        ["skdknn.neighbors._exact.*"],
    ),
}

_REFINE = "skdknn.neighbors._exact.x__refine_near_duplicates__*"

# (glob of the mutated function, text of the mutated line, why it changes nothing)
EQUIVALENT: list[tuple[str, str, str]] = [
    # sharded: a task's purity only names its key; zips of lists built equal
    *(
        (
            "skdknn.neighbors._sharded.xǁShardedBackendǁ_search_fitted__*",
            text,
            "_shard_rows only reads a fitted shard's rows: the same answer under a "
            "pure (deterministic) key or a random one",
        )
        for text in (
            "submit(_shard_rows, s, pure=None)",
            "submit(_shard_rows, s, )",
            "submit(_shard_rows, s, pure=True)",
        )
    ),
    *(
        (
            "skdknn.neighbors._sharded.xǁShardedBackendǁ_submit_fits__*",
            text,
            "_shard_size only reads a fitted shard's size (waited on to surface a "
            "fit's error): the same answer under a pure key or a random one",
        )
        for text in (
            "submit(_shard_size, s, pure=None)",
            "submit(_shard_size, s, )",
            "submit(_shard_size, s, pure=True)",
        )
    ),
    *(
        (
            "skdknn.neighbors._sharded.xǁShardedBackendǁ_kneighbors_delayed__*",
            text,
            "the delayed tasks compute the same answer whatever their purity: it only "
            "names their keys (pure=None and no pure are dask's default, False)",
        )
        for text in (
            "delayed(_prepare_query, pure=None)(",
            "delayed(_prepare_query, )(",
            "delayed(_prepare_query, pure=False)(",
            "delayed(_search_shard, pure=None)(",
            "delayed(_search_shard, )(",
            "delayed(_search_shard, pure=False)(",
            "delayed(_merge_answers, pure=None)(answers, k, return_distance)",
            "delayed(_merge_answers, )(answers, k, return_distance)",
            "delayed(_merge_answers, pure=False)(answers, k, return_distance)",
        )
    ),
    *(
        (
            "skdknn.neighbors._sharded.xǁShardedBackendǁ_submit_fits__*",
            text,
            "one inner backend is made per block of rows (len(rows)): the zip's "
            "lists are always of equal length",
        )
        for text in (
            "zip(self._inner_backends(len(rows)), rows, strict=None)",
            "zip(self._inner_backends(len(rows)), rows, )",
            "zip(self._inner_backends(len(rows)), rows, strict=False)",
        )
    ),
    *(
        (
            "skdknn.neighbors._sharded.x_fit_on_dask_arrays__*",
            text,
            "one clone per array and one group of blocks per clone: the zip's lists "
            "are always of equal length",
        )
        for text in (
            "zip(backends, arrays_, strict=None)",
            "zip(backends, arrays_, )",
            "zip(backends, arrays_, strict=False)",
            "zip(backends, blocks, strict=None)",
            "zip(backends, blocks, )",
            "zip(backends, blocks, strict=False)",
        )
    ),
    *(
        (
            "skdknn.neighbors._sharded.xǁShardedBackendǁ_load_index__*",
            text,
            "np.load's allow_pickle defaults to False (None is false too)",
        )
        for text in (
            'mmap_mode="c" if mmap else None, allow_pickle=None',
            'mmap_mode="c" if mmap else None, )',
        )
    ),
    *(
        (f"skdknn.neighbors._sharded.x_{function}__*", text, reason)
        for function, text, reason in (
            *(
                (
                    function,
                    text,
                    "np.require upper-cases each requirement: 'c', 'w', 'a' are "
                    "'C', 'W', 'A'",
                )
                for function, text in (
                    ("_fit_shard", 'requirements=["c", "W", "A"]'),
                    ("_fit_shard", 'requirements=["C", "w", "A"]'),
                    ("_fit_shard", 'requirements=["C", "W", "a"]'),
                    ("_search_shard", 'requirements=["c", "A"]'),
                    ("_search_shard", 'requirements=["C", "a"]'),
                )
            ),
            (
                "_fit_shard",
                "backend._fit_rows(rows, copy=None)",
                "_fit_rows hands `copy and self._keeps_rows` to _prepare, which "
                "copies only when `copy or None` is true: None copies nothing, as "
                "False",
            ),
            (
                "_shard_size",
                "return int(shard.rows.shape[1])",
                "the sizes are gathered only so that a fit's error surfaces in fit "
                "(their values are never read), and a shard's rows are always 2-D",
            ),
            *(
                (
                    "shard_bounds",
                    text,
                    "np.full infers numpy's default integer from a Python int fill "
                    "value, which is intp since NumPy 2 (the bounds are cast to intp "
                    "too)",
                )
                for text in (
                    "n_samples // n_shards, dtype=None)",
                    "n_samples // n_shards, )",
                )
            ),
        )
    ),
    *(
        (
            f"skdknn.neighbors._sharded.x{_SEP}ShardedBackend{_SEP}{method}__*",
            text,
            reason,
        )
        for method, text, reason in (
            (
                "__sklearn_clone__",
                "clone(value, safe=None)",
                "clone tests `if not safe`: None deep-copies a non-estimator "
                "parameter as False does",
            ),
            (
                "__sklearn_clone__",
                "self.get_params(deep=None)",
                "get_params tests `if deep and ...`: None gives the shallow "
                "parameters as False does",
            ),
            *(
                (
                    "_build",
                    text,
                    "zip of shard_bounds_[:-1] and shard_bounds_[1:]: always of "
                    "equal length",
                )
                for text in (
                    "self.shard_bounds_[1:], strict=None",
                    "self.shard_bounds_[1:], )",
                    "self.shard_bounds_[1:], strict=False",
                )
            ),
            *(
                (
                    method,
                    text,
                    "Client.scatter names the keys by content only `if hash:`: "
                    "None gives random keys, as False does",
                )
                for method, text in (
                    ("_build", "workers=[workers[i % len(workers)]], hash=None)"),
                    ("scatter", "workers=[workers[i % len(workers)]], hash=None)"),
                    ("_search_on_cluster", "client.scatter(q, hash=None)"),
                )
            ),
            *(
                (
                    "_search_on_cluster",
                    text,
                    "each search task takes its query block's future, scattered under "
                    "a random key at each call (or a pure=False _shard_rows task), "
                    "and the (block, shard) pairs of one call are distinct: a key "
                    "named by content is as unique as a random one (pure=None is "
                    "false: random keys)",
                )
                for text in ("pure=None,", "pure=True,", "del pure=False,")
            ),
            *(
                (
                    "_search_on_cluster",
                    text,
                    "the query block's key named by its content instead of at random "
                    "(hashing it costs time): the search tasks read the same array "
                    "under either key",
                )
                for text in ("client.scatter(q, ) if", "client.scatter(q, hash=True)")
            ),
            *(
                (
                    "_submit_fits",
                    text,
                    "every block of rows is a Future, whose token includes its "
                    "object's own _id (Future.__dask_tokenize__): a key named by "
                    "content is as unique as a random one, no fit is ever shared "
                    "(pure=None is false: random keys)",
                )
                for text in (
                    "client.submit(_fit_shard, inner, part, pure=None)",
                    "client.submit(_fit_shard, inner, part, pure=True)",
                    "client.submit(_fit_shard, inner, part, )",
                )
            ),
            *(
                (
                    "_dask_blocks",
                    text,
                    "map_blocks' dtype only labels the lazy array: without it dask "
                    "infers float32 by running _l2_normalize on an empty float32 "
                    "block, and the blocks computed are _l2_normalize's either way",
                )
                for text in (
                    "X.map_blocks(_l2_normalize, dtype=None)",
                    "X.map_blocks(_l2_normalize, )",
                )
            ),
        )
    ),
    (
        "skdknn.conformal.x_neighbor_label_counts__*",
        "np.arange(n * n_layers, ",
        "np.arange of a Python int already gives int64 (the default integer)",
    ),
    (
        "skdknn.conformal.x__p_values__*",
        "at_least = n - np.searchsorted(scores, alpha, )",
        'side="left" is searchsorted\'s default',
    ),
    *(
        (
            "skdknn.conformal.x_p_values__*",
            text,
            "np.empty's default dtype (also with dtype=None) is float64",
        )
        for text in (
            "p = np.empty(alpha_arr.shape, dtype=None)",
            "p = np.empty(alpha_arr.shape, )",
        )
    ),
    (
        "skdknn.conformal.x_neighbor_proba__*",
        ".astype(None)",
        "astype(None) is astype(float64)",
    ),
    (
        "skdknn.conformal.x_confidence__*",
        "np.partition(p_arr, -2, )",
        "the default axis -1 is axis 1 of the 2-D p-values",
    ),
    *(
        (
            "skdknn._calibration.x_stratified_calibration_split__*",
            text,
            "only the first split is drawn (next()), and StratifiedShuffleSplit "
            "draws it from the same random state whatever n_splits is",
        )
        for text in (
            "StratifiedShuffleSplit(test_size=total, ",
            "StratifiedShuffleSplit(n_splits=2, ",
        )
    ),
    (
        "skdknn._calibration.x_stratified_calibration_split__*",
        "splitter.split(np.zeros((n_samples, 2)), y)",
        "the split reads only the number of rows of its X placeholder",
    ),
    (
        "skdknn._calibration.x_balanced_calibration_split__*",
        "counts = np.bincount(y, )",
        "n_classes is int(y.max()) + 1: the bincount of y already has that length",
    ),
    (
        "skdknn._calibration.x_balanced_calibration_split__*",
        "size=sizes[j], replace=None)",
        "RandomState.choice tests `if replace:`: None draws without replacement, "
        "as False does",
    ),
    *(
        (
            f"skdknn._classifier.x{_SEP}DeepKNNClassifier{_SEP}predict_set__*",
            text,
            "without dtype, map_blocks infers it by calling prediction_sets on an "
            "empty block: bool, the same lazy array",
        )
        for text in (
            "significance, dtype=None)",
            "map_blocks(conformal.prediction_sets, significance, )",
        )
    ),
    *(
        (
            f"skdknn._classifier.x{_SEP}DeepKNNClassifier{_SEP}predict_proba__*",
            text,
            "without dtype, map_blocks infers it by calling neighbor_proba on a "
            "block of ones of the counts' dtype (int64): float64, the same lazy array",
        )
        for text in (
            "conformal.neighbor_proba, drop_axis=1, dtype=None",
            "conformal.neighbor_proba, drop_axis=1, )",
        )
    ),
    *(
        (
            f"skdknn._classifier.x{_SEP}DeepKNNClassifier{_SEP}predict_set__*",
            text,
            "the check of significance before any work: prediction_sets of an "
            "empty array, whatever its empty shape, checks significance the same "
            "way (its result is dropped)",
        )
        for text in (
            "prediction_sets(np.empty((1, 0)), significance)",
            "prediction_sets(np.empty((0, 1)), significance)",
        )
    ),
    (
        f"skdknn._classifier.x{_SEP}DeepKNNClassifier{_SEP}_calibration_split__*",
        'f"{self.classes_[missing[:2]].tolist()[0]!r} has none: its share of "',
        "only the first missing class ([0]) is named: [:2] and [:1] share it",
    ),
    *(
        (
            f"skdknn._classifier.x{_SEP}DeepKNNClassifier{_SEP}_calibration_split__*",
            # the category argument of the two warnings: warn(message, None) and
            # warn(message) (its closing parenthesis is all that the diff adds).
            # The message replaced by None shows the same line; the tests of the
            # whole messages kill it.
            text,
            "warnings.warn's category None (its default) is UserWarning",
        )
        for text in ("            None,", "            )")
    ),
    *(
        (
            f"skdknn._classifier.x{_SEP}DeepKNNClassifier{_SEP}_search__*",
            text,
            "an assert that only narrows the types for mypy: with return_neighbors "
            "both arrays are made (and _counts_from_neighbors returns both rows and "
            "distances), so the weaker `or` holds wherever `and` does",
        )
        for text in (
            "assert neighbors is not None or distances is not None",
            "assert rows is not None or dist is not None",
        )
    ),
    (
        f"skdknn._classifier.x{_SEP}DeepKNNClassifier{_SEP}fit__*",
        "counts, y_calibration, self.n_neighbors, sort=None",
        "calibration_scores reads sort as a truth value: None does not sort, as False",
    ),
    (
        f"skdknn._classifier.x{_SEP}DeepKNNClassifier{_SEP}fit__*",
        'order = np.argsort(scores, kind="STABLE")',
        "numpy reads a sort kind by its first letter, in either case: 'STABLE' is "
        "'stable'",
    ),
    (
        f"skdknn._classifier.x{_SEP}DeepKNNClassifier{_SEP}_p_values_from_counts__*",
        "offset: int = 1",
        "its one caller, _outputs, always passes offset",
    ),
    (
        f"skdknn._classifier.x{_SEP}DeepKNNClassifier{_SEP}_p_values_from_counts__*",
        'uniform = ""',
        "replaced by the draws when smoothed; conformal.p_values reads uniform for "
        "the smoothed form only",
    ),
    (
        "skdknn._calibration.x_label_shift__*",
        "n_classes = int(y.max()) + 2",
        "one more class of count 0 on both sides adds |0 m - 0 n| = 0 to a sum of "
        "integers (exact: no float summation order to change)",
    ),
    (
        "skdknn._calibration.x_label_shift__*",
        "train = np.bincount(y, )",
        "the bincount of all of y already has int(y.max()) + 1 = n_classes entries",
    ),
    (
        "skdknn.neighbors._exact.x__refine_near_duplicates__*",
        "suspect = sq_dist <= 1e-2 *",
        "a pair exactly on the threshold is recomputed exactly: the same distance "
        "up to float32 rounding, never a different neighbour",
    ),
    (
        "skdknn.neighbors._exact.x__refine_near_duplicates__*",
        "suspect = sq_dist < 1.01 *",
        "a larger threshold only recomputes more pairs exactly (slower, same result)",
    ),
    (
        "skdknn.neighbors._exact.x__refine_near_duplicates__*",
        "tol = 1.00001 *",
        "a wider tolerance only re-ranks more candidates exactly (slower, same result)",
    ),
    (
        "skdknn.neighbors._exact.x__refine_near_duplicates__*",
        "within = scores[part] < (values[part, -1] + tol)",
        "a score exactly at the k-th plus the tolerance is farther than the k-th by "
        "more than the expansion's error: it is never among the k nearest",
    ),
    (
        _REFINE,
        "crowded_part = within.sum(dim=1) >= k",
        "exactly k candidates within the tolerance are the k selected ones: "
        "recomputing them exactly gives what the other path gives",
    ),
    *(
        (_REFINE, text, "zip of two sequences that always have the same length")
        for text in (
            "within[crowded_part], strict=None",
            "within[crowded_part], strict=False",
            "within[crowded_part], )",
        )
    ),
    *(
        (
            _REFINE,
            text,
            "only the order among exactly equal distances can change, and the "
            "search orders ties itself afterwards (by index since the sharded "
            "backend; unordered and documented so before)",
        )
        for text in (
            "stable=None",
            "stable=False",
            ".sum(dim=1), )",
            "dim=1, )",
            "torch.sort(dist, )",
        )
    ),
    (
        _REFINE,
        "within = scores[part] <= (values[part, -2] + tol)",
        "the search selects k + 1 points (the extra one shows ties at the k-th "
        "place): a window up to the k-th instead of the (k + 1)-th score only "
        "changes which of the two exact paths re-ranks a crowded row; both give the "
        "k nearest, and a tie at the k-th place is then settled by _exact_row",
    ),
    (
        _REFINE,
        "near = (dist <= 1e-2 *",
        "as for the suspect pairs: a pair exactly on the threshold is recomputed "
        "exactly, the same distance up to float32 rounding",
    ),
    (
        _REFINE,
        "near = (dist < 1.01 *",
        "as for the suspect pairs: a larger threshold only recomputes more pairs "
        "exactly (slower, same result)",
    ),
    (
        _REFINE,
        "for start in range(0, rows.numel(), )",
        "one crowded row per group instead of many: less memory, the same rows "
        "compared the same way",
    ),
    *(
        (
            pattern,
            text,
            "memory only: the rows gathered (or compared) per step of a 64 MiB "
            "budget; every row is still computed the same way. Not checked by a "
            "test (the index's own tiles are: test_float16_tiles_use_a_quarter_of_"
            "the_budget)",
        )
        for pattern, text in (
            ("skdknn.neighbors._exact.x__pair_sq_dist__*", "step = max(2, _GATHER"),
            ("skdknn.neighbors._exact.x__pair_sq_dist__*", "// (5 * max(1, fit_t"),
            ("skdknn.neighbors._exact.x__pair_sq_dist__*", "(4 * max(2, fit_t"),
            (_REFINE, "step = max(2, _GATHER_BYTES"),
            (_REFINE, "_GATHER_BYTES // (5 * scores"),
        )
    ),
    *(
        (
            f"skdknn.neighbors._exact.x{_SEP}ExactBackend{_SEP}_to_storage__*",
            text,
            "the rows are validated non-empty before they are stored, and their "
            "largest magnitude is at least 0: an initial value of 1 (below "
            "float16's 65504) or none changes nothing",
        )
        for text in ("max(initial=None)", "max(initial=1.0)")
    ),
    *(
        (
            f"skdknn.neighbors._exact.x{_SEP}ExactBackend{_SEP}_storage__*",
            text,
            "typing.cast does nothing at run time",
        )
        for text in (
            "cast(None, dtype)",
            "cast(type[np.floating], None)",
            "cast(dtype)",
            "cast(type[np.floating], )",
        )
    ),
    *(
        (
            f"skdknn.neighbors._exact.x{_SEP}ExactBackend{_SEP}_search__*",
            text,
            reason,
        )
        for text, reason in (
            (
                "indices = np.empty((n_queries, n_neighbors), dtype=None)",
                "float64 holds every index exactly; the result is cast to intp",
            ),
            (
                "indices = np.empty((n_queries, n_neighbors), )",
                "float64 holds every index exactly; the result is cast to intp",
            ),
            (
                "torch.empty((rows, n_index), dtype=None)",
                "torch.empty's default dtype is float32",
            ),
            (
                "torch.empty((rows, n_index), )",
                "torch.empty's default dtype is float32",
            ),
            ("max(n_queries, 2)", "a block with one row to spare, never used"),
            (
                "k_plus = min(n_neighbors + 2,",
                "one more point selected than needed to see ties at the k-th "
                "place: slower, the same answer",
            ),
            (
                "torch.topk(block, k_plus, largest=False)",
                "topk's default dim -1 is dim 1 of the 2-D block",
            ),
        )
    ),
    *(
        (f"skdknn.neighbors._exact.x{_SEP}ExactBackend{_SEP}_build__*", text, reason)
        for text, reason in (
            ('np.einsum("IJ,IJ->I"', "einsum's subscripts may be capital letters"),
            (
                "step = self._tile_rows(X.shape[1], X.shape[1])",
                "memory only: at most d rows per tile instead of n; every norm is "
                "computed the same way",
            ),
            (
                "for start in range(0, X.shape[0], ):",
                "memory only: one row per tile; every norm is computed the same way",
            ),
        )
    ),
    (
        f"skdknn.neighbors._exact.x{_SEP}ExactBackend{_SEP}_to_storage__*",
        "if dtype is np.float32 and X.dtype == dtype:",
        "memory only: float16 rows given to a float32 index are converted to "
        "float32 exactly instead of kept; the same distances",
    ),
    (
        f"skdknn.neighbors._exact.x{_SEP}ExactBackend{_SEP}_block_rows__*",
        "int(self._budget_bytes() / bytes_per_row)",
        "int() of a positive quotient floors it as // does",
    ),
    *(
        ("skdknn.neighbors._exact.x__expanded_scores__*", text, reason)
        for text, reason in (
            (
                "if n_query > _MIN_QUERY_ROWS and n_rows > 1:",
                "a block of exactly 16 queries then takes the padded path, which "
                "pads it with 0 rows: the same product",
            ),
            (
                "if n_query >= _MIN_QUERY_ROWS and n_rows > 2:",
                "an index of 2 rows then takes the padded path, which pads neither "
                "side (16 queries or more, 2 rows): the same product, copied",
            ),
        )
    ),
    *(
        (
            "skdknn.neighbors._exact.x__expanded_scores__*",
            text,
            "beta=1 is addmm's default",
        )
        for text in (
            "torch.addmm(sq_norms, query, rows.T, alpha=-2, out=out)",
            "scores = torch.addmm(sq_norms, query, rows.T, alpha=-2)",
        )
    ),
    (
        f"skdknn.neighbors._exact.x{_SEP}ExactBackend{_SEP}_tile_rows__*",
        "int(self._budget_bytes() / 4 / (4 * n_features))",
        "int() of a positive quotient floors it as // does",
    ),
    (
        "skdknn.neighbors._exact.x__pair_sq_dist__*",
        "torch.empty(fit_rows.shape[0], dtype=None)",
        "torch.empty's default dtype is float32 (torch's default, never changed "
        "by skdknn)",
    ),
    (
        "skdknn.neighbors._exact.x__pair_sq_dist__*",
        "torch.empty(fit_rows.shape[0], )",
        "torch.empty's default dtype is float32 (torch's default, never changed "
        "by skdknn)",
    ),
    (
        "skdknn.neighbors._exact.x__exact_row__*",
        "query[None, :]).sum(dim=None)",
        "the sum of all of a one-row tensor is its row sum (same bits, checked for "
        "widths 1 to 10,000); shape () broadcasts as shape (1,) does",
    ),
    (
        "skdknn.neighbors._exact.x__exact_row__*",
        "near = (sq_dist <= 1e-2 *",
        "as in the refinement: a pair exactly on the threshold is recomputed "
        "exactly, the same distance up to float32 rounding",
    ),
    (
        "skdknn.neighbors._exact.x__exact_row__*",
        "near = (sq_dist < 1.01 *",
        "as in the refinement: a larger threshold only recomputes more pairs "
        "exactly (slower, same result)",
    ),
    (
        "skdknn.neighbors._exact.x_sort_by_distance_then_index__*",
        "np.lexsort((ind, dist), )",
        "lexsort's default axis -1 is axis 1 of the 2-D distances",
    ),
    *(
        (
            "skdknn.neighbors._exact.x_sort_by_distance_then_index__*",
            text,
            "take_along_axis's default axis -1 is axis 1 of the 2-D arrays",
        )
        for text in ("take_along_axis(dist, order, )", "take_along_axis(ind, order, )")
    ),
    (
        "skdknn.neighbors._exact.x\u01c1ExactBackend\u01c1_block_rows__*",
        "int(budget_mb * 2**20 / bytes_per_row)",
        "int(a / b) is a // b for positive a, b (up to one row where a / b rounds "
        "up to an integer): the block size is a memory budget, not a result",
    ),
    (
        _REFINE,
        "torch.sort(sub_dist, stable=True)",
        "torch.sort's default dim -1 is dim 1 of the 2-D distances",
    ),
    (
        _REFINE,
        "suspect[row] = True",
        "the crowded rows are dropped from ``rows`` before ``suspect`` is read again",
    ),
    # CW's state tensors made on x's device with ``device=None`` or no device
    *(
        (
            "skdknn.attacks._cw.x_carlini_wagner_l2__*",
            text,
            "a tensor made without a device is on the CPU, x's device in every "
            "test: equivalent on this CPU-only machine (a CUDA run would tell them "
            "apart)",
        )
        for text in (
            "device=None)",
            'float("inf"), )',
            "float(initial_const), )",
            "torch.zeros(n, )",
            "dtype=torch.bool, )",
        )
    ),
    *(
        ("skdknn.attacks._cw.*", text, "float() reads infinity case-insensitively")
        for text in ('float("INF")', 'float("-INF")')
    ),
    (
        "skdknn.attacks._cw.x_carlini_wagner_l2__*",
        "(other - real >= confidence)",
        "differs only when a float32 logit margin equals the confidence exactly "
        "(a tie of two logits at confidence 0), which no test input can be "
        "built to reach",
    ),
    (
        "skdknn.attacks._cw.x_carlini_wagner_l2__*",
        "improved = success & (l2 <= best_l2)",
        "differs only when two successful iterates have bit-identical float32 "
        "L2 distances, which no test input can be built to reach",
    ),
    # _exceeds casts both sides to float64; one side left uncast is promoted to
    # float64 by the arithmetic with the other (numpy's type promotion)
    *(
        (
            "skdknn.attacks._base.x__exceeds__*",
            text,
            "numpy promotes the uncast "
            "side to float64 in every operation with the float64 one",
        )
        for text in (
            "np.asarray(a, None), np.asarray(b, np.float64)",
            "np.asarray(a, ), np.asarray(b, np.float64)",
            "np.asarray(a, np.float64), np.asarray(b, None)",
            "np.asarray(a, np.float64), np.asarray(b, )",
        )
    ),
    (
        f"skdknn.attacks._base.x{_SEP}_ZeroGradientRows{_SEP}update__*",
        "self.valid = None",
        "`valid` is only read by `if counter.valid and ...`, where None is false "
        "as False is",
    ),
    (
        f"skdknn.attacks._base.x{_SEP}GradientAttack{_SEP}_perturb_batches__*",
        "randint(2**31 - 2)",
        "RandomState.randint draws through the same 31-bit mask for both bounds; "
        "the seeds differ only when the draw is 2**31 - 2 (probability 2**-31)",
    ),
    *(
        (
            f"skdknn.attacks._base.x{_SEP}GradientAttack{_SEP}_perturb_batches__*",
            text,
            "only the sum and the size of zero_gradient are read: a float array of "
            "0.0 and 1.0 gives the same count",
        )
        for text in (
            "np.zeros(X_net.shape[0], dtype=None)",
            "np.zeros(X_net.shape[0], )",
        )
    ),
    *(
        (
            pattern,
            text,
            "device moves: on this CPU-only machine every tensor and module is on "
            "the CPU already (no GPU to test them on)",
        )
        for pattern, text in (
            (
                f"skdknn.attacks._base.x{_SEP}GradientAttack{_SEP}_perturb_batches__*",
                "device = None",
            ),
            (
                f"skdknn.attacks._base.x{_SEP}GradientAttack{_SEP}_perturb_batches__*",
                ".to(None)",
            ),
            (
                f"skdknn.attacks._base.x{_SEP}GradientAttack{_SEP}generate__*",
                "on_device(None, self.device)",
            ),
            (
                f"skdknn.attacks._base.x{_SEP}GradientAttack{_SEP}generate__*",
                "on_device(self.target_.module, None)",
            ),
            (f"skdknn.attacks._bim.x{_SEP}BIMAttack{_SEP}_perturb__*", ".to(None)"),
            (f"skdknn.attacks._base.x{_SEP}GradientAttack{_SEP}_box__*", ".to(None)"),
            (
                f"skdknn.attacks._base.x{_SEP}GradientAttack{_SEP}_box__*",
                "device = None",
            ),
        )
    ),
    (
        f"skdknn.attacks._base.x{_SEP}GradientAttack{_SEP}_bounds__*",
        "and len(sample_shape) >= 1:",
        "a sample shape of length 1 is (n_features,): reshaping a bound of "
        "n_features values to it changes nothing",
    ),
    (
        f"skdknn.attacks._base.x{_SEP}GradientAttack{_SEP}fit__*",
        "self._fit(X_net, None)",
        "no attack's _fit reads y (FGSM / BIM / CW have none, AdvKNN trains its "
        "heads on the DkNN's outputs): y is in fit's signature for scikit-learn",
    ),
    (
        f"skdknn.attacks._base.x{_SEP}GradientAttack{_SEP}generate__*",
        "check_is_fitted(self, ",
        "an unfitted attack has no attribute ending in '_', so check_is_fitted "
        "raises the same NotFittedError whether or not it names target_",
    ),
    (
        f"skdknn.attacks._base.x{_SEP}GradientAttack{_SEP}generate__*",
        "self._validate_input(X, reset=None)",
        "reset is only read as a truth value (here and in validate_data)",
    ),
    *(
        ("skdknn.attacks._base.x_land_in_dtype__*", text, reason)
        for text, reason in (
            (
                "np.asarray(x_step_start, )",
                "x_step_start is a float array: the difference is float64 either way",
            ),
            ("(x.astype(None) + step)", "astype(None) is astype(float64)"),
            *(
                (
                    f"np.asarray({bound}, {arg})",
                    "clip_min / clip_max arrive as float64 arrays (from _bounds)",
                )
                for bound in ("clip_min", "clip_max")
                for arg in ("None", "")
            ),
            ("up=None)", "`up` is only read as a truth value: None is False"),
        )
    ),
    (
        f"skdknn.attacks._base.x{_SEP}GradientAttack{_SEP}_validate_input__*",
        "if (shape is not None) and False else dknn.n_features_in_",
        "a fitted DkNN's n_features_in_ is prod(input_shape_) of its images",
    ),
    (
        "skdknn.attacks._base.x__ball_bound__*",
        "x.astype(None)",
        "astype(None) is astype(float64)",
    ),
    (
        "skdknn.attacks._base.x__ball_bound__*",
        "for _ in range(5):",
        "one nextafter towards x undoes the single rounding of the cast, so the "
        "loop ends at its second pass at the latest: a fifth is never reached",
    ),
    *(
        (
            "skdknn.attacks._base.x_land_in_dtype__*",
            text,
            "x_step and x_step_start are float arrays: the subtraction promotes both "
            "to float64 either way, and widening a float to float64 is exact",
        )
        for text in ("np.asarray(x_step, None) -", "np.asarray(x_step, ) -")
    ),
    (
        "skdknn.attacks._base.x_land_in_dtype__*",
        "np.asarray(x_step_start, None)",
        "the same: the other operand is float64, so the difference is float64",
    ),
]


def function_mutant_names(name: str) -> list[str]:
    """A mutant name of each function and method of the module's files, as mutmut
    names them (``<module>.x_<function>__mutmut_1``,
    ``<module>.xǁ<Class>ǁ<method>__mutmut_1``), read from the source: to check an
    ``--only`` glob before a run replaces the last results."""
    names = []
    for path in MODULES[name].files:
        dotted = path.removesuffix(".py").replace("/", ".")
        tree = ast.parse((ROOT / path).read_text())
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                names.append(f"{dotted}.x_{node.name}__mutmut_1")
            elif isinstance(node, ast.ClassDef):
                names += [
                    f"{dotted}.x{_SEP}{node.name}{_SEP}{item.name}__mutmut_1"
                    for item in node.body
                    if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef))
                ]
    return names


def workspace(name: str) -> Path:
    return ROOT / "mutants" / name


def prepare(name: str) -> Path:
    """A fresh copy of the package and the tests whose pyproject.toml scopes mutmut
    to the module: its files, and only its test files."""
    module, work = MODULES[name], workspace(name)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    shutil.copytree(ROOT / "skdknn", work / "skdknn")
    shutil.copytree(ROOT / "tests", work / "tests")
    tests = [t for t in module.tests if (ROOT / t).is_file()]
    lines, inside = [], False
    for line in (ROOT / "pyproject.toml").read_text().splitlines():
        if line.startswith("["):
            inside = line.strip() == "[tool.mutmut]"
        if not inside:
            lines.append(line)
    lines += [
        "[tool.mutmut]",
        'source_paths = ["skdknn"]',
        f"only_mutate = {json.dumps(module.files)}",
        f"pytest_add_cli_args_test_selection = {json.dumps(tests)}",
        'pytest_add_cli_args = ["-p", "no:cacheprovider", "-q"]',
        'process_isolation = "forkserver"',
    ]
    (work / "pyproject.toml").write_text("\n".join(lines) + "\n")
    return work


#: the thread pools of torch, MKL, OpenBLAS and OpenMP
_THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def _environment(threads: int | None = None) -> dict[str, str]:
    """The environment of the processes the script starts in a module's copy."""
    # derandomised hypothesis (tests/conftest.py's ci profile, which otherwise only
    # CI=true selects); Dask clusters of worker threads (tests/test_dask.py)
    env = dict(os.environ, HYPOTHESIS_PROFILE="ci", SKDKNN_TEST_DASK_WORKERS="threads")
    if threads is not None:
        # children x threads <= cores: otherwise OpenMP's waiting threads spin on
        # the cores the other children need (measured: a 1 s test took 295 s), and
        # mutmut's CPU-time limit counts the spinning, so mutants "time out"
        for variable in _THREAD_VARIABLES:
            env.setdefault(variable, str(threads))
    env.pop("PYTHONPATH", None)  # the mutated copy, never the checkout, is imported
    return env


def mutmut(
    work: Path, *args: str, log: Path | None = None, threads: int | None = None
) -> str:
    """Run ``python -m mutmut *args`` in ``work``; with ``log``, its output is
    streamed to that file as it runs (``tail -f`` it) and ``""`` is returned.
    ``threads`` caps the math libraries' threads of each process (unless the
    caller's environment sets them)."""
    env = _environment(threads)
    command = [sys.executable, "-m", "mutmut", *args]
    if log is not None:
        with log.open("a") as out:
            subprocess.run(
                command, cwd=work, env=env, stdout=out, stderr=subprocess.STDOUT
            )
        return ""
    result = subprocess.run(
        command, cwd=work, env=env, capture_output=True, text=True, check=False
    )
    return result.stdout


def results(work: Path) -> dict[str, int | None]:
    codes: dict[str, int | None] = {}
    for meta in (work / "mutants").rglob("*.py.meta"):
        codes.update(json.loads(meta.read_text())["exit_code_by_key"])
    return codes


#: prints ``mutmut show``'s diff of each mutant named on the command line, in one
#: process (``mutmut show`` takes about 0.5 s per mutant, this 10 ms)
_SHOW_MANY = """
import json, sys
from mutmut.mutation.diff_apply import find_mutant, get_diff_for_mutant
diffs = {}
for name in sys.argv[1:]:
    diffs[name] = get_diff_for_mutant(name, path=find_mutant(name).path)
print(json.dumps(diffs))
"""


def _changed(diff: str) -> str:
    """The ``+`` lines of a mutant's diff (what the mutant changed); for a mutant
    that only deletes lines (an argument on a line of its own), those lines as
    ``del <line>``."""
    shown = diff.splitlines()
    added = [line[1:] for line in shown if re.match(r"\+(?!\+\+)", line)]
    if added:
        return "\n".join(added)
    deleted = [line[1:].strip() for line in shown if re.match(r"-(?!--)", line)]
    return "\n".join(f"del {line}" for line in deleted)


def mutated_lines(work: Path, names: list[str]) -> dict[str, str]:
    """``{name: the lines the mutant changed}`` (see ``_changed``), from mutmut's
    diffs, in one process; with ``mutmut show`` per mutant if mutmut's module for
    them has moved."""
    if not names:
        return {}
    batch = subprocess.run(
        [sys.executable, "-c", _SHOW_MANY, *names],
        cwd=work,
        env=_environment(),
        capture_output=True,
        text=True,
        check=False,
    )
    if batch.returncode == 0:
        return {name: _changed(diff) for name, diff in json.loads(batch.stdout).items()}
    return {name: _changed(mutmut(work, "show", name)) for name in names}


def equivalent_reason(name: str, diff: str) -> str | None:
    for pattern, text, reason in EQUIVALENT:
        if fnmatch.fnmatch(name, pattern) and text in diff:
            return reason
    return None


#: a mutant name that matches no mutant: ``mutmut run`` given it generates the
#: mutants and learns which tests reach which function, then stops at its filter
_NO_MUTANT = "skdknn.__generate_only__"


def generate(work: Path, threads: int) -> None:
    """Generate the mutants of ``work`` and map the tests to the functions they
    reach (mutmut's stats, kept in ``work/mutants/`` for the run that follows),
    running no mutant."""
    log = work / "run.log"
    with log.open("a") as out:
        out.write(
            "tools/mutation.py: generating the mutants and the map of tests; "
            "mutmut's error 'nothing matches' below is expected\n"
        )
    mutmut(work, "run", _NO_MUTANT, log=log, threads=threads)


def skip_equivalents(work: Path, selection: list[str]) -> tuple[list[str], dict]:
    """(the selected mutants to run, the skipped ones) of generated mutants: a
    mutant whose mutated line is listed in ``EQUIVALENT`` is skipped, with its
    mutated line (``{name: line}``), since it survives every test; only the
    functions some entry names are looked at."""
    selected = [
        mutant
        for mutant in sorted(results(work))
        if any(fnmatch.fnmatch(mutant, g) for g in selection)
    ]
    diffs = mutated_lines(work, [m for m in selected if _listed(m)])
    run, skipped = [], {}
    for mutant in selected:
        if mutant in diffs and equivalent_reason(mutant, diffs[mutant]) is not None:
            skipped[mutant] = diffs[mutant]
        else:
            run.append(mutant)
    return run, skipped


def _listed(mutant: str) -> bool:
    """Whether an ``EQUIVALENT`` entry names the mutant's function."""
    return any(fnmatch.fnmatch(mutant, p) for p, _, _ in EQUIVALENT)


def _skipped(work: Path) -> dict[str, str]:
    """The mutants the last run skipped as equivalent, with their mutated lines."""
    path = work / "skipped.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def skipped_equivalents(work: Path) -> dict[str, str]:
    """The mutants the last run skipped as equivalent and left unrun, whose
    mutated line an ``EQUIVALENT`` entry still names: ``{name: reason}``. One that
    no entry names any more (an entry removed since) is not in it: it counts as
    not run."""
    codes = results(work)
    skipped = {}
    for mutant, diff in _skipped(work).items():
        reason = equivalent_reason(mutant, diff)
        if codes.get(mutant, 0) is None and reason is not None:
            skipped[mutant] = f"{diff.strip()}  [{reason}; skipped, not run]"
    return skipped


#: mutmut's exit codes of a killed mutant: a test failed (1, 3) or the tests
#: exceeded the CPU-time limit (the others, "timeout")
_TIMEOUT = {36, -24, 24, 152, 255}
_KILLED = {1, 3} | _TIMEOUT


@dataclass
class Score:
    """A module's last run: ``killed`` of ``total`` non-equivalent mutants run;
    ``survivors``, ``equivalents`` (run and skipped), ``too_broad`` (killed,
    though an ``EQUIVALENT`` entry names their mutated line: the entry would skip
    a mutant the tests kill) and ``timeouts`` (counted as killed: they exceeded
    mutmut's CPU-time limit) as the report prints them."""

    killed: int = 0
    total: int = 0
    skipped: int = 0  # of the equivalents: skipped by the run, not run
    survivors: list[str] = field(default_factory=list)
    equivalents: list[str] = field(default_factory=list)
    too_broad: list[str] = field(default_factory=list)
    timeouts: list[str] = field(default_factory=list)


def score(name: str) -> Score:
    """The score of a module's last run."""
    work = workspace(name)
    codes = {
        mutant: code
        for mutant, code in results(work).items()
        if any(fnmatch.fnmatch(mutant, g) for g in MODULES[name].globs)
    }
    # an interrupted run leaves mutants unchecked: they count neither way
    run = {mutant: code for mutant, code in codes.items() if code is not None}
    # survivors, timeouts, and killed mutants an entry may name (a too broad entry)
    shown = [
        m
        for m, c in sorted(run.items())
        if c not in _KILLED or c in _TIMEOUT or _listed(m)
    ]
    diffs = mutated_lines(work, shown)
    result = Score()
    for mutant, code in sorted(run.items()):
        reason = equivalent_reason(mutant, diffs[mutant]) if mutant in diffs else None
        if code in _KILLED:
            result.killed += 1
            if code in _TIMEOUT:
                result.timeouts.append(f"{mutant}: {diffs[mutant].strip()}")
            if reason is not None:
                result.too_broad.append(f"{mutant}: {diffs[mutant].strip()}")
        elif reason is not None:
            result.equivalents.append(f"{mutant}: {diffs[mutant].strip()}  [{reason}]")
        else:
            result.survivors.append(f"{mutant} ({code}): {diffs[mutant].strip()}")
    result.total = len(run) - len(result.equivalents)
    skipped = [
        f"{mutant}: {text}"
        for mutant, text in sorted(skipped_equivalents(work).items())
        if mutant in codes
    ]
    result.equivalents += skipped
    result.skipped = len(skipped)
    return result


def unchecked_count(name: str) -> tuple[int, int, int]:
    """(not selected, not run, unlisted) of the module's mutants left unchecked by
    the last run, apart from those skipped as equivalent: outside the ``--only``
    globs it recorded, the others (an interrupted run), and among those the ones
    the run skipped as equivalent that no ``EQUIVALENT`` entry names any more (an
    entry removed or narrowed since: their verdict is unknown until a new run).
    Without a record of the globs (a run by an older tool), every unchecked mutant
    counts as not run."""
    work = workspace(name)
    selected = _selection(work)
    skipped = skipped_equivalents(work)
    was_skipped = _skipped(work)
    outside = unrun = unlisted = 0
    for mutant, code in results(work).items():
        if (
            code is not None
            or mutant in skipped
            or not any(fnmatch.fnmatch(mutant, g) for g in MODULES[name].globs)
        ):
            continue
        if mutant in was_skipped:
            unlisted += 1
        elif selected is not None and not any(
            fnmatch.fnmatch(mutant, g) for g in selected
        ):
            outside += 1
        else:
            unrun += 1
    return outside, unrun, unlisted


def _selection(work: Path) -> list[str] | None:
    """The mutant-name globs the last run selected (``--only`` or the module's),
    or None when the run left no record of them."""
    path = work / "selection.json"
    return json.loads(path.read_text()) if path.is_file() else None


def summary(name: str, width: int) -> tuple[str, bool, Score]:
    """The report's line for a module, whether the module failed (scored below
    95 %, was run without any mutant judged, or an ``EQUIVALENT`` entry names a
    mutant its tests kill), and its score. A module never run (no results in
    ``mutants/<module>/``) is "not run", not a failure."""
    if not results(workspace(name)):
        return f"{name:{width}s}  not run", False, Score()
    result = score(name)
    outside, unrun, unlisted = unchecked_count(name)
    # nothing judged (e.g. mutmut's clean test run failed: see run.log) is a
    # failed run, never a perfect score
    rate = result.killed / result.total if result.total else 0.0
    notes = [f"{len(result.equivalents)} equivalent"]
    if result.skipped:
        notes[0] += f" ({result.skipped} skipped, not run)"
    if outside:
        notes.append(f"{outside} not selected (--only)")
    if unrun:
        notes.append(
            f"{unrun} not run: interrupted"
            if _selection(workspace(name)) is not None
            else f"{unrun} not run (outside --only, or interrupted)"
        )
    if unlisted:
        notes.append(
            f"{unlisted} skipped as equivalent by an entry since removed: run again"
        )
    if result.timeouts:
        notes.append(f"{len(result.timeouts)} of the killed timed out")
    if result.too_broad:
        notes.append(f"{len(result.too_broad)} killed though listed equivalent")
    if result.total:
        judged = f"{result.killed:4d} / {result.total:4d} killed = {100 * rate:5.1f} %"
    elif result.equivalents:
        judged = "nothing to judge: every mutant run or skipped is equivalent"
    else:
        judged = "nothing judged (see run.log)"
    line = f"{name:{width}s}  {judged}  ({', '.join(notes)})"
    failed = (rate < 0.95 and not (result.equivalents and not result.total)) or bool(
        result.too_broad or unlisted
    )
    return line, failed, result


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0],
        epilog="mutmut's output goes to mutants/<module>/run.log as it runs "
        "(`tail -f` it to follow a run); this script prints a module's score "
        "only when the module's run has ended. See docs/development.md.",
    )
    parser.add_argument("modules", nargs="*", help=f"some of {', '.join(MODULES)}")
    parser.add_argument(
        "--max-children",
        type=int,
        default=2,
        help="mutants run at once (default 2); each process gets "
        "cores // max-children math threads",
    )
    parser.add_argument(
        "--only",
        nargs="+",
        metavar="GLOB",
        help="run only the module's mutants whose names match one of these globs "
        "(e.g. '*_search__*'), to split a slow module into runs of a few "
        "functions; the others are reported as not selected",
    )
    parser.add_argument(
        "--run-equivalents",
        action="store_true",
        help="run the mutants listed in EQUIVALENT too (by default they are "
        "skipped: each would run every test that reaches its function), e.g. to "
        "check that they still survive",
    )
    parser.add_argument(
        "--report", action="store_true", help="only print the last run's scores"
    )
    args = parser.parse_args()
    modules = args.modules or list(MODULES)
    unknown = sorted(set(modules) - set(MODULES))
    if unknown:
        parser.error(f"unknown module(s) {unknown}; choose from {list(MODULES)}")
    if args.only and len(modules) != 1:
        parser.error("--only selects mutants of one module: name exactly one")
    if args.only and not args.report:
        # checked before the module's last results are replaced by the new run
        names = function_mutant_names(modules[0])
        unmatched = [
            g for g in args.only if not any(fnmatch.fnmatch(n, g) for n in names)
        ]
        if unmatched:
            parser.error(
                f"--only {unmatched} matches no function of {modules[0]}; its "
                f"mutants are named like {names[0]} (see docs/development.md)"
            )
    if not args.report:
        for name in modules:
            start = time.perf_counter()
            work = prepare(name)
            selection = args.only or MODULES[name].globs
            # read back by --report to tell mutants outside --only from unrun ones
            (work / "selection.json").write_text(json.dumps(selection))
            names = selection
            threads = max(1, (os.cpu_count() or 1) // args.max_children)
            if not args.run_equivalents:
                generate(work, threads)
                names, skipped = skip_equivalents(work, selection)
                if results(work) and not names and not skipped:
                    parser.error(
                        f"no mutant of {name} matches {selection}; its mutants are "
                        f"named like {min(results(work))}"
                    )
                # read back by --report, which counts them as equivalent
                (work / "skipped.json").write_text(json.dumps(skipped, indent=1))
            if names:
                mutmut(
                    work,
                    "run",
                    "--max-children",
                    str(args.max_children),
                    *names,
                    log=work / "run.log",
                    threads=threads,
                )
            print(f"{name}: ran in {time.perf_counter() - start:.0f} s", flush=True)
    width = max(len(m) for m in modules)
    failed = False
    for module in modules:
        line, bad, result = summary(module, width)
        if not args.report and not results(workspace(module)):
            # this run made no mutant: a failed run, not a module never run
            line, bad = f"{module:{width}s}  no mutants made (see run.log)", True
        failed |= bad
        print(line)
        for text in result.survivors:
            print(f"    survived  {text}")
        for text in result.timeouts:
            print(f"    timed out (counted killed)  {text}")
        for text in result.too_broad:
            print(f"    killed, though EQUIVALENT lists it (narrow the entry)  {text}")
        for text in result.equivalents:
            print(f"    equivalent {text}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

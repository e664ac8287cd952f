"""docs/attacks.md, "Warnings that catch unit mistakes": filtering one kind."""

import warnings

import numpy as np
from torch import nn

from skdknn.attacks import FGSMAttack
from skdknn.exceptions import AttackBudgetWarning

X = np.random.default_rng(0).uniform(0, 1, size=(10, 4)).astype(np.float32)
with warnings.catch_warnings():
    warnings.simplefilter("error", AttackBudgetWarning)
    try:
        FGSMAttack(nn.Linear(4, 3), eps=8).fit(X)  # meant 8 / 255
    except AttackBudgetWarning as warning:
        print(type(warning).__name__, "-", str(warning).split(" (")[0])

# the warning names the caller's line (this file), and a budget on the inputs'
# scale does not warn
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    FGSMAttack(nn.Linear(4, 3), eps=8).fit(X)
assert [w.filename for w in caught] == [__file__], caught
with warnings.catch_warnings():
    warnings.simplefilter("error", AttackBudgetWarning)
    FGSMAttack(nn.Linear(4, 3), eps=8 / 255).fit(X)

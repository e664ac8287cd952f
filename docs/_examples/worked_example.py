"""The worked example of docs/dknn.md, computed with skdknn.conformal.

``python docs/_examples/worked_example.py``: 2 layers, k = 3, 3 classes, 8
calibration points, 3 test inputs. Labels are encoded 0, 1, 2.
"""

import numpy as np

from skdknn import conformal

k, n_classes = 3, 3

# labels of the k = 3 neighbours in layer 1 and layer 2 of each calibration point
cal_neighbors = [
    [[0, 0, 0], [0, 0, 0]],  # c1, y = 0
    [[1, 1, 1], [1, 1, 1]],  # c2, y = 1
    [[2, 2, 2], [1, 2, 2]],  # c3, y = 2
    [[0, 0, 1], [0, 0, 0]],  # c4, y = 0
    [[1, 1, 2], [0, 1, 1]],  # c5, y = 1
    [[1, 2, 2], [0, 1, 1]],  # c6, y = 2
    [[0, 1, 2], [0, 1, 1]],  # c7, y = 0
    [[0, 1, 2], [0, 2, 2]],  # c8, y = 1
]
cal_y = [0, 1, 2, 0, 1, 2, 0, 1]
cal_counts = conformal.neighbor_label_counts(cal_neighbors, n_classes)
scores = conformal.calibration_scores(cal_counts, cal_y, n_neighbors=k)
print("A =", scores)  # the calibration scores A

test_neighbors = [
    [[2, 2, 1], [2, 2, 2]],  # x_a
    [[0, 0, 1], [0, 1, 1]],  # x_b
    [[0, 1, 1], [0, 1, 2]],  # x_c
]
counts = conformal.neighbor_label_counts(test_neighbors, n_classes)
print("totals:\n", counts.sum(axis=1))
alpha = conformal.nonconformity(counts, n_neighbors=k)
print("alpha:\n", alpha)
p = conformal.p_values(alpha, scores)
print("p-values:\n", p)
print("prediction: ", conformal.predict_from_counts(counts))
print("argmax of p:", p.argmax(axis=1))
print("credibility:", conformal.credibility(p))
print("confidence: ", conformal.confidence(p))
print("proba:\n", conformal.neighbor_proba(counts).round(3))
for eps in (0.1, 0.2, 0.375):
    sets = conformal.prediction_sets(p, eps)
    print(f"sets at eps={eps}:", [np.flatnonzero(row).tolist() for row in sets])

# what the two rejected variants would give for x_a (class 2) and x_b (class 0)
print("strict > :", np.mean(scores > alpha[0, 2]), np.mean(scores > alpha[1, 0]))
print("zeros dropped:", conformal.p_values(alpha, scores[scores > 0])[[0, 1], [2, 0]])

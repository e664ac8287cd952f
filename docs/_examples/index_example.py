"""The example on docs/index.md (a small setting: 1,500 images, 3 epochs).

``python docs/_examples/index_example.py``.
"""

from sklearn.model_selection import train_test_split

from skdknn import DeepKNNClassifier
from skdknn.datasets import load_mnist

X, y = load_mnist(return_X_y=True)  # 5,000 real MNIST images, offline
X_train, X_test, y_train, y_test = train_test_split(
    X, y, train_size=1500, test_size=1000, stratify=y, random_state=0
)
clf = DeepKNNClassifier(
    n_neighbors=25, calibration_size=200, max_epochs=3, random_state=0
).fit(X_train, y_train)
clf.predict(X_test)  # labels
clf.credibility(X_test)  # largest p-value, in [0, 1]
clf.predict_set(X_test, significance=0.1)  # conformal prediction sets

print(clf.predict(X_test)[:10])
print(clf.credibility(X_test)[:3])
print(clf.predict_set(X_test, significance=0.1).shape)

"""Flat rows: a DkNN on tabular data (an MLP is trained), inside a Pipeline.

``python docs/_examples/tabular.py``.
"""

from sklearn.datasets import load_breast_cancer
from sklearn.model_selection import cross_val_score, train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from skdknn import DeepKNNClassifier

X, y = load_breast_cancer(return_X_y=True)  # 569 rows, 30 features, 2 classes
X_train, X_test, y_train, y_test = train_test_split(X, y, stratify=y, random_state=0)

model = make_pipeline(
    StandardScaler(),
    DeepKNNClassifier(
        n_neighbors=10,
        calibration_size=100,
        max_epochs=30,
        batch_size=32,
        random_state=0,
    ),
)
model.fit(X_train, y_train)
dknn = model[-1]
print(type(dknn.module_).__name__, dknn.layers_, dknn.input_shape_)
print(f"test accuracy: {model.score(X_test, y_test):.3f}")
scaled = model[:-1].transform(X_test)  # Pipeline exposes predict, not credibility
cred = dknn.credibility(scaled)
wrong = model.predict(X_test) != y_test
print(f"mean credibility, correct: {cred[~wrong].mean():.2f} ({(~wrong).sum()} rows)")
print(f"mean credibility, wrong:   {cred[wrong].mean():.2f} ({wrong.sum()} rows)")
print("5-fold CV accuracy:", cross_val_score(model, X, y, cv=5).round(3))

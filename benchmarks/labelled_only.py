"""What the labels alone give: a classifier (scikit-learn) trained on the same seeded,
class-balanced labelled subset that ``vaekit train --labelled N`` keeps, on the same inputs
(e.g. the latent means ``vaekit encode RUN --as-data`` writes), and its test error. A
semi-supervised model's test error below this is what its unlabelled data gave; ``all``
trains on every training label, the most these inputs allow that classifier.

    python benchmarks/labelled_only.py codes.npz --labelled 100 1000 all [--classifier svc]
"""

from __future__ import annotations

import argparse

import torch
from sklearn.base import ClassifierMixin
from sklearn.linear_model import LogisticRegression
from sklearn.svm import SVC

from vaekit import load_dataset
from vaekit.data.labelled import labelled_subset

CLASSIFIERS = {
    "logistic": ("logistic regression", lambda: LogisticRegression(max_iter=5000)),
    "svc": ("an RBF support-vector classifier (C = 10)", lambda: SVC(C=10.0)),
}


def label_count(text: str) -> int | None:
    """``--labelled``'s value: a count of labelled examples, or ``all`` (None)."""
    if text == "all":
        return None
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a count of labels or 'all'")
    return int(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", help="a dataset with labels (.npz with x/y_train, x/y_test)")
    parser.add_argument(
        "--labelled", type=label_count, nargs="+", default=[100, 1000], help="counts, or all"
    )
    parser.add_argument("--classifier", choices=sorted(CLASSIFIERS), default="logistic")
    parser.add_argument("--seed", type=int, default=0, help="the run's --seed")
    args = parser.parse_args()
    data = load_dataset(args.dataset)
    assert data.train_y is not None and data.test_y is not None, "the data need labels"
    train_x, test_x = data.train_x.flatten(1).numpy(), data.test_x.flatten(1).numpy()
    name, make = CLASSIFIERS[args.classifier]
    for n in args.labelled:
        if n is None:
            index = torch.arange(len(data.train_y)).numpy()
        else:
            index = labelled_subset(data.train_y, n, data.label_count(), args.seed).numpy()
        model: ClassifierMixin = make().fit(train_x[index], data.train_y[index])
        error = 1 - model.score(test_x, data.test_y.numpy())
        print(f"{data.name}: {len(index)} labels, {name}: {100 * error:.2f}% test error")


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()

"""What the labels alone give: a logistic-regression classifier (scikit-learn) trained on the
same seeded, class-balanced labelled subset that ``vaekit train --labelled N`` keeps, on the
same inputs (e.g. the latent means ``vaekit encode RUN --as-data`` writes), and its test
error. A semi-supervised model's test error below this is what its unlabelled data gave.

    python benchmarks/labelled_only.py codes.npz --labelled 100 1000 [--seed 0]
"""

from __future__ import annotations

import argparse

import torch
from sklearn.linear_model import LogisticRegression

from vaekit import load_dataset
from vaekit.data.labelled import labelled_subset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", help="a dataset with labels (.npz with x/y_train, x/y_test)")
    parser.add_argument("--labelled", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--seed", type=int, default=0, help="the run's --seed")
    args = parser.parse_args()
    data = load_dataset(args.dataset)
    assert data.train_y is not None and data.test_y is not None, "the data need labels"
    train_x, test_x = data.train_x.flatten(1).numpy(), data.test_x.flatten(1).numpy()
    for n in args.labelled:
        index = labelled_subset(data.train_y, n, data.label_count(), args.seed).numpy()
        model = LogisticRegression(max_iter=5000).fit(train_x[index], data.train_y[index])
        error = 1 - model.score(test_x, data.test_y.numpy())
        print(f"{data.name}: {n} labels, logistic regression: {100 * error:.2f}% test error")


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()

"""Small simulated longitudinal data sets shared by the tests (random intercepts and slopes, optional nesting)."""

from __future__ import annotations

import numpy as np
import pandas as pd


def simulate(seed: int, n_subjects: int = 30, nested: bool = False) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_subjects):
        b0, b1 = rng.normal(0, [1.5, 0.4])
        for eye in ("L", "R") if nested else ("L",):
            if nested and rng.random() < 0.3 and eye == "R":
                continue  # some subjects have one eye only: unequal slot counts
            c = rng.normal(0, 0.7) if nested else 0.0
            for _ in range(rng.integers(1, 6)):
                t = rng.uniform(0, 5)
                x = rng.normal()
                y = 1 + 0.5 * t - 0.3 * x + b0 + b1 * t + c + rng.normal(0, 0.8)
                rows.append({"id": f"s{i}", "eye": eye, "t": t, "x": x, "g": "ab"[i % 2], "y": y})
    return pd.DataFrame(rows)


def random_factors(design, rng: np.random.Generator) -> list[np.ndarray]:
    """A random lower-triangular factor L per block of a design (positive diagonal), for likelihood checks."""
    out = []
    for block in design.blocks:
        L = np.tril(rng.normal(0, 0.4, (block.q, block.q)))
        L[np.diag_indices(block.q)] = rng.uniform(0.3, 1.5, block.q)
        out.append(L)
    return out


def every_kind(seed: int = 21, n_subjects: int = 40) -> pd.DataFrame:
    """Data every fit kind can be fitted to: nested ``id/eye``, and a ``rater`` crossed with ``id``."""
    frame = simulate(seed, n_subjects=n_subjects, nested=True)
    frame["rater"] = [f"r{k % 5}" for k in range(len(frame))]  # crossed with id
    return frame

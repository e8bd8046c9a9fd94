"""Two-dimensional t-SNE maps of utterance representations (the paper's Figure 10).

t-SNE is quadratic-ish in the number of points and stochastic, so the maps are drawn
from a fixed-seed subsample of at most a few thousand utterances and with a fixed
``random_state`` and PCA initialisation: the same run and data give the same picture.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from sklearn.manifold import TSNE
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

#: Above this many utterances the maps are drawn from a subsample (t-SNE time grows fast).
MAX_POINTS = 2000

#: Fewer points than this make no meaningful map (perplexity must stay below n).
MIN_POINTS = 10


def subsample_indices(n: int, limit: int = MAX_POINTS, seed: int = 0) -> np.ndarray:
    """Sorted indices of at most ``limit`` of ``n`` rows, the same for the same arguments."""
    if n <= limit:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=limit, replace=False))


def embed(
    stages: Mapping[str, np.ndarray], *, seed: int = 0, progress: bool = False
) -> dict[str, np.ndarray]:
    """A 2-D t-SNE embedding of each stage's rows (all stages hold the same utterances).

    Perplexity is sklearn's default 30, lowered for small sets where it must stay below
    the number of points. OpenMP is held to one thread: on a busy 2-core machine its
    busy-waiting made Barnes-Hut t-SNE three to four times slower than a single thread.
    """
    n = {len(x) for x in stages.values()}
    if len(n) != 1:
        raise ValueError("every stage must hold the same utterances")
    (n_points,) = n
    perplexity = float(min(30.0, max(2.0, (n_points - 1) / 3)))
    out: dict[str, np.ndarray] = {}
    with threadpool_limits(limits=1, user_api="openmp"):
        for name, x in tqdm(stages.items(), desc="t-SNE", unit="map", disable=not progress, dynamic_ncols=True):
            tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed)
            out[name] = tsne.fit_transform(np.asarray(x, dtype=np.float64))
    return out


def labelled_subsample(
    representations: Mapping[str, object], stages: Sequence[str], limit: int = MAX_POINTS, seed: int = 0
) -> tuple[dict[str, np.ndarray], list[str]]:
    """The labelled utterances of ``representations`` (as returned by ``Joyful.representations``), subsampled.

    Unlabelled utterances are left out because the maps are coloured by gold label.
    """
    labels = representations["labels"]
    keep = np.flatnonzero([label is not None for label in labels])
    keep = keep[subsample_indices(len(keep), limit, seed)]
    return {s: np.asarray(representations[s])[keep] for s in stages}, [labels[i] for i in keep]

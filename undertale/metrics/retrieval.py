"""Function search scores: random pools of pairs, the rank of each query's partner, MRR and Recall@1.

Within a pool each query ranks every candidate by cosine similarity; the rank of its own partner (the
same row) gives MRR (mean of 1/rank) and Recall@1 (share ranked first). Pure numpy (scipy sparse rows too).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.sparse import csr_matrix, hstack


def pools(count: int, size: int, seed: int) -> list[np.ndarray]:
    """Random pools of ``size`` pair indices (fixed seed); fewer pairs than ``size`` make one smaller pool."""
    order = np.random.default_rng(seed).permutation(count)
    if count <= size:
        return [order] if count > 1 else []
    return [order[start:start + size] for start in range(0, count - size + 1, size)]


def unit_rows(matrix):
    """Rows scaled to unit length (dense numpy or scipy sparse)."""
    if hasattr(matrix, "multiply"):  # scipy sparse
        norms = np.sqrt(np.asarray(matrix.multiply(matrix).sum(axis=1)).ravel())
        return matrix.multiply(1.0 / np.maximum(norms, 1e-12)[:, None]).tocsr()
    matrix = np.asarray(matrix, dtype=np.float64)
    return matrix / np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)


def ranks(queries, candidates) -> np.ndarray:
    """Rank (1 = best) of each query's own partner (same row) among the candidates, by cosine similarity.

    Rows may be dense arrays or scipy sparse matrices. Ties count against the query
    (a partner tied with another candidate is ranked below it).
    """
    similarity = unit_rows(queries) @ unit_rows(candidates).T
    similarity = similarity.toarray() if hasattr(similarity, "toarray") else np.asarray(similarity)
    own = np.diag(similarity)[:, None]
    return (similarity >= own - 1e-9).sum(axis=1)  # the partner itself counts once: rank >= 1


def search_scores(queries, candidates, pool_list: list[np.ndarray]) -> dict:
    """MRR and Recall@1 over the pools."""
    all_ranks = np.concatenate([ranks(queries[pool], candidates[pool]) for pool in pool_list]) if pool_list else np.array([])
    if not len(all_ranks):
        return {"mrr": None, "recall@1": None, "queries": 0, "pools": 0}
    return {"mrr": float(np.mean(1.0 / all_ranks)), "recall@1": float(np.mean(all_ranks == 1)),
            "queries": int(len(all_ranks)), "pools": len(pool_list),
            "pool_size": int(max(len(pool) for pool in pool_list))}


def hybrid_vectors(dense, sparse):
    """Each row of ``dense`` and of ``sparse`` at unit length, side by side, scaled by 1/sqrt(2) (scipy sparse).

    The dot product of two such rows is the mean of the two systems' cosines: an encoder's vectors and
    TF-IDF's rows scored together with equal weight (no weight is fitted). Rows are functions, in the
    same order in both.
    """
    if dense.shape[0] != sparse.shape[0]:
        raise ValueError(f"hybrid_vectors: {dense.shape[0]} dense rows against {sparse.shape[0]} sparse rows")
    return (hstack([csr_matrix(unit_rows(dense)), unit_rows(sparse)]) / math.sqrt(2)).tocsr()

"""Top-k search in an index: exact (blocked matrix products on the memory-mapped vectors) or FAISS (IVF).

Exact search reads the vectors in blocks of ``block`` rows and keeps each query's best ``k`` so far, so
memory stays bounded by a block's scores. When the vector file is larger than ``RESIDENT_LIMIT`` the pages
of each block are dropped from the process after use (``madvise(MADV_DONTNEED)``; the file stays in the page
cache), so the resident size stays bounded too.

Above ``faiss_above`` vectors, and when ``faiss`` is installed, an inverted-file index (``IndexIVFFlat``,
inner product) is built once, saved as ``faiss.index`` in the index directory and searched with ``nprobe``
lists.
"""

from __future__ import annotations

import difflib
import json
import math
import mmap
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from undertale.runtime.errors import UsageError
from undertale.search.store import FAISS_FILE, SearchIndex, check_binary, describe_model

RESIDENT_LIMIT = 1 << 30  # bytes of vectors kept mapped; above it each block's pages are released after use
BLOCK = 1 << 18
HYBRID = "model+tf-idf"
SCORINGS = ("model", HYBRID)


def _release(vectors: np.ndarray, start: int, stop: int) -> None:
    """Drop the pages of rows ``start:stop`` of a memory-mapped array from this process (not from the cache)."""
    handle = getattr(vectors, "_mmap", None)
    if handle is None or not hasattr(handle, "madvise"):
        return
    row = vectors.strides[0]
    base = vectors.offset if hasattr(vectors, "offset") else 0
    first = (base + start * row) // mmap.PAGESIZE * mmap.PAGESIZE
    last = base + stop * row
    try:
        handle.madvise(mmap.MADV_DONTNEED, first, last - first)
    except (OSError, ValueError):
        pass


def exact_topk(vectors: np.ndarray, queries: np.ndarray, k: int, block: int = BLOCK,
               release: Optional[bool] = None) -> tuple[np.ndarray, np.ndarray]:
    """Each query's ``k`` best rows of ``vectors`` by dot product (cosine for unit rows), best first.

    Returns:
        ``(scores, indices)``, each (queries x min(k, rows)).
    """
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    count = vectors.shape[0]
    k = min(k, count)
    if release is None:
        release = vectors.nbytes > RESIDENT_LIMIT
    best_scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
    best_indices = np.zeros((len(queries), k), dtype=np.int64)
    if k == 0:
        return best_scores, best_indices
    rows = np.arange(len(queries))[:, None]
    for start in range(0, count, block):
        chunk = vectors[start:start + block]
        scores = queries @ chunk.T  # (queries x block)
        if release:
            _release(vectors, start, start + len(chunk))
        take = min(k, scores.shape[1])
        top = np.argpartition(-scores, take - 1, axis=1)[:, :take] if take < scores.shape[1] else \
            np.broadcast_to(np.arange(scores.shape[1]), scores.shape)
        merged_scores = np.concatenate([best_scores, scores[rows, top]], axis=1)
        merged_indices = np.concatenate([best_indices, top + start], axis=1)
        keep = np.argpartition(-merged_scores, k - 1, axis=1)[:, :k]
        best_scores, best_indices = merged_scores[rows, keep], merged_indices[rows, keep]
    order = np.argsort(-best_scores, axis=1, kind="stable")
    return best_scores[rows, order], best_indices[rows, order]


def faiss_available() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def build_faiss(vectors: np.ndarray, nlist: Optional[int] = None, train_size: int = 100_000, seed: int = 0,
                block: int = BLOCK):
    """An ``IndexIVFFlat`` (inner product) of ``vectors``: ``nlist`` lists (default about 2 sqrt(rows)),
    trained on a sample of ``train_size`` rows, filled block by block."""
    import faiss

    count, width = vectors.shape
    nlist = nlist or max(1, min(count // 39, int(2 * math.sqrt(count))))
    quantizer = faiss.IndexFlatIP(width)
    index = faiss.IndexIVFFlat(quantizer, width, nlist, faiss.METRIC_INNER_PRODUCT)
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(count, size=min(count, max(train_size, 39 * nlist)), replace=False))
    index.train(np.ascontiguousarray(vectors[sample], dtype=np.float32))
    for start in range(0, count, block):
        index.add(np.ascontiguousarray(vectors[start:start + block], dtype=np.float32))
    return index


def faiss_topk(index, queries: np.ndarray, k: int, nprobe: int) -> tuple[np.ndarray, np.ndarray]:
    index.nprobe = nprobe
    scores, indices = index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
    return scores, indices.astype(np.int64)


def agreement(exact: np.ndarray, approximate: np.ndarray) -> float:
    """Mean share of each query's exact top-k that the approximate top-k also returns."""
    shared = [len(set(a) & set(b)) / max(len(a), 1) for a, b in zip(exact.tolist(), approximate.tolist())]
    return float(np.mean(shared)) if shared else 1.0


@dataclass
class Searcher:
    """Top-k over one index: exact below ``faiss_above`` rows (or without faiss), else FAISS IVF."""

    index: SearchIndex
    faiss_above: int = 100_000
    nprobe: int = 64
    nlist: Optional[int] = None

    def __post_init__(self):
        self.vectors = self.index.vectors()
        self.method = "exact"
        self._faiss = None
        if self.index.count > self.faiss_above:
            if faiss_available():
                self.method = "faiss"
            else:
                print(f"note: {self.index.count:,} vectors > faiss_above={self.faiss_above:,} but faiss is not "
                      "installed (pip install faiss-cpu); exact search", file=sys.stderr)

    def faiss_index(self):
        if self._faiss is None:
            import faiss

            path = self.index.path / FAISS_FILE
            if path.is_file():
                self._faiss = faiss.read_index(str(path))
            if self._faiss is None or self._faiss.ntotal != self.index.count:
                started = time.perf_counter()
                self._faiss = build_faiss(self.vectors, self.nlist)
                faiss.write_index(self._faiss, str(path))
                print(f"note: built {path} ({self._faiss.nlist} lists) in {time.perf_counter() - started:.1f} s",
                      file=sys.stderr)
        return self._faiss

    def topk(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        if self.method == "faiss":
            return faiss_topk(self.faiss_index(), queries, min(k, self.index.count), self.nprobe)
        return exact_topk(self.vectors, queries, k)


# --- queries: binaries and functions -----------------------------------------------------------------------


@dataclass
class Functions:
    """Some functions of one binary: their table rows (name, address, ...) and unit vectors."""

    binary: str
    rows: list[dict]
    vectors: np.ndarray
    texts: list[str]


def functions_of(index: SearchIndex, spec: str, encoder_cache: dict) -> Functions:
    """The functions of a binary: from the index when it holds the binary (by sha256, path or basename), else
    read from the file and embedded with the index's model (checked against the index's model hash)."""
    entry = None
    if os.path.exists(spec):
        if os.path.isdir(spec):
            raise UsageError(f"{spec} is a directory; give one binary")
        check_binary(spec)
    entry = index.binary(spec)
    if entry is not None:
        start, count = entry["start"], entry["functions"]
        table = index.table().slice(start, count)
        rows = table.drop(["disassembly"]).to_pylist()
        return Functions(entry["path"], rows, np.asarray(index.vectors()[start:start + count]),
                         table.column("disassembly").to_pylist())
    if not os.path.isfile(spec):
        names = ", ".join(os.path.basename(e["path"]) for e in index.binaries[:5])
        raise UsageError(f"{spec} is neither a file nor a binary of the index (it holds {names}"
                         f"{', ...' if len(index.binaries) > 5 else ''})")
    from undertale.search.index import embed_rows, read_binary

    encoder = encoder_for(index, encoder_cache)
    rows, digest = read_binary(spec)
    vectors, table = embed_rows(encoder, rows, os.path.realpath(spec), digest)
    return Functions(os.path.realpath(spec), table.drop(["disassembly"]).to_pylist(), vectors,
                     [row["disassembly"] for row in rows])


def encoder_for(index: SearchIndex, cache: dict):
    """The index's model, loaded once; :class:`UsageError` when its path no longer holds the same model."""
    if "encoder" not in cache:
        from undertale.search.store import load_encoder, model_hash

        model = index.model
        if not Path(model["path"]).is_dir():
            raise UsageError(f"the index's model {model['path']} is gone; query binaries of the index only")
        encoder = load_encoder(model["path"])
        if model_hash(encoder) != model["hash"]:
            raise UsageError(f"the model at {model['path']} changed since index {index.path} was built "
                             f"({describe_model(model)}); query binaries of the index only")
        cache["encoder"] = encoder
    return cache["encoder"]


def pick(functions: Functions, which: Optional[str]) -> Functions:
    """The function named ``which`` (a name or a 0x address) of ``functions``, or all when None."""
    if which is None:
        return functions
    if which.lower().startswith("0x"):
        try:
            address = int(which, 16)
        except ValueError:
            raise UsageError(f"{which} is not a hexadecimal address") from None
        chosen = [i for i, row in enumerate(functions.rows) if row["address"] == address]
    else:
        chosen = [i for i, row in enumerate(functions.rows) if row["name"] == which]
    if not chosen:
        names = sorted({row["name"] for row in functions.rows})
        close = difflib.get_close_matches(which, names, n=5, cutoff=0.0)
        raise UsageError(f"no function {which} in {functions.binary}; closest: {', '.join(close) or 'none'}")
    return Functions(functions.binary, [functions.rows[i] for i in chosen], functions.vectors[chosen],
                     [functions.texts[i] for i in chosen])


def hybrid_scores(query_vectors: np.ndarray, query_texts: list[str], candidate_vectors: np.ndarray,
                  candidate_texts: list[str]) -> np.ndarray:
    """Cosines of the model and of TF-IDF (fitted on the candidates' texts) averaged: evaluate.py's
    ``model+tf-idf`` (:func:`~undertale.metrics.retrieval.hybrid_vectors`). Dense (queries x candidates)."""
    from undertale.metrics.retrieval import hybrid_vectors
    from undertale.metrics.tfidf import TfIdf

    tfidf = TfIdf(candidate_texts)
    queries = hybrid_vectors(query_vectors, tfidf.vectors(query_texts))
    candidates = hybrid_vectors(np.asarray(candidate_vectors), tfidf.vectors(candidate_texts))
    return np.asarray((queries @ candidates.T).todense(), dtype=np.float32)


def query(index: SearchIndex, spec: str, k: int = 10, scoring: str = "model", faiss_above: int = 100_000,
          nprobe: int = 64, hybrid_limit: int = 200_000) -> dict:
    """Top-k matches of ``spec`` (``binary``, ``binary:name`` or ``binary:0xaddress``)."""
    if scoring not in SCORINGS:
        raise UsageError(f"scoring must be one of {', '.join(SCORINGS)}, got {scoring!r}")
    binary, which = spec, None
    if not os.path.exists(spec) and ":" in spec:
        binary, which = spec.rsplit(":", 1)
    cache: dict = {}
    chosen = pick(functions_of(index, binary, cache), which)
    table = index.table(["binary", "name", "address", "size"])
    started = time.perf_counter()
    if scoring == HYBRID:
        if index.count > hybrid_limit:
            raise UsageError(f"scoring={HYBRID} scores every function in memory; this index has {index.count:,} "
                             f"(> {hybrid_limit:,}); use scoring=model")
        texts = index.table(["disassembly"]).column("disassembly").to_pylist()
        scores = hybrid_scores(chosen.vectors, chosen.texts, index.vectors(), texts)
        k = min(k, index.count)
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        top_scores, top = np.take_along_axis(scores, order, axis=1), order
        method = "exact"
    else:
        searcher = Searcher(index, faiss_above=faiss_above, nprobe=nprobe)
        top_scores, top = searcher.topk(chosen.vectors, k)
        method = searcher.method
    seconds = time.perf_counter() - started
    binaries, names = table.column("binary"), table.column("name")
    addresses = table.column("address")
    results = []
    for row, scores, indices in zip(chosen.rows, top_scores.tolist(), top.tolist()):
        results.append({"query": {"binary": chosen.binary, "name": row["name"], "address": row["address"]},
                        "matches": [{"binary": binaries[i].as_py(), "name": names[i].as_py(),
                                     "address": addresses[i].as_py(), "score": round(float(s), 6)}
                                    for s, i in zip(scores, indices) if i >= 0]})
    return {"index": str(index.path), "scoring": scoring, "method": method, "k": k, "seconds": round(seconds, 4),
            "results": results}


def query_table(result: dict) -> str:
    lines = []
    header = f"{'rank':>4}  {'score':>7}  {'address':>12}  {'binary':<20} function"
    for item in result["results"]:
        q = item["query"]
        lines.append(f"{os.path.basename(q['binary'])}:{q['name']} (0x{q['address']:x})")
        lines.append(header)
        for rank, match in enumerate(item["matches"], 1):
            lines.append(f"{rank:>4}  {match['score']:>7.4f}  {'0x%x' % match['address']:>12}  "
                         f"{os.path.basename(match['binary'])[:20]:<20} {match['name']}")
        lines.append("")
    lines.append(f"{len(result['results'])} queries, top {result['k']}, scoring={result['scoring']}, "
                 f"{result['method']} search in {result['seconds'] * 1000:.1f} ms")
    return "\n".join(lines)


def write_json(path: str, result: dict) -> None:
    output = Path(path).expanduser()
    output.parent.mkdir(parents=True, exist_ok=True)
    temporary = output.with_name(f".{output.name}.tmp")
    temporary.write_text(json.dumps(result, indent=2))
    os.replace(temporary, output)

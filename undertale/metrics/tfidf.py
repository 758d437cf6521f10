"""The TF-IDF baseline of function search: instruction n-grams weighted by inverse document frequency."""

from __future__ import annotations

import math
from collections import Counter
from typing import Sequence

import numpy as np
from scipy.sparse import csr_matrix


def instruction_ngrams(text: str, n: int = 2) -> list[str]:
    """Instructions (the text between ``[NEXT]``) and runs of ``n`` consecutive instructions."""
    instructions = [part.strip() for part in text.split("[NEXT]")]
    grams = list(instructions)
    for width in range(2, n + 1):
        grams += [" ; ".join(instructions[i:i + width]) for i in range(len(instructions) - width + 1)]
    return grams


class TfIdf:
    """TF-IDF over instruction n-grams, with document frequencies from the texts it is fitted on."""

    def __init__(self, texts: Sequence[str], n: int = 2):
        self.n = n
        frequency: Counter = Counter()
        for text in texts:
            frequency.update(set(instruction_ngrams(text, n)))
        self.vocabulary = {gram: index for index, gram in enumerate(frequency)}
        self.idf = np.array([math.log((1 + len(texts)) / (1 + frequency[gram])) + 1 for gram in frequency])

    def vectors(self, texts: Sequence[str]):
        """TF-IDF rows as a scipy sparse matrix (texts x vocabulary)."""
        rows, columns, values = [], [], []
        for row, text in enumerate(texts):
            for gram, times in Counter(instruction_ngrams(text, self.n)).items():
                index = self.vocabulary.get(gram)
                if index is not None:
                    rows.append(row)
                    columns.append(index)
                    values.append(times * self.idf[index])
        return csr_matrix((values, (rows, columns)), shape=(len(texts), len(self.vocabulary)), dtype=np.float64)

"""Metrics: pure functions that models, tasks and evaluation share.

:mod:`~undertale.metrics.token_classes` (the class of each masked target), :mod:`~undertale.metrics.retrieval`
(search pools, ranks, MRR and Recall@k) and :mod:`~undertale.metrics.tfidf` (the TF-IDF baseline's vectors).
"""

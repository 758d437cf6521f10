"""Inference: what a trained model is used for outside training.

:mod:`~undertale.inference.embedding` (function vectors, :class:`FunctionEncoder`),
:mod:`~undertale.inference.embed_command` (``embed.py``) and :mod:`~undertale.inference.fill_mask`
(``infer.py``: fill ``[MASK]`` tokens).
"""

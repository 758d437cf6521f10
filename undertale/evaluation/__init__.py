"""Evaluation of trained models: what a masked-LM prediction target is, and how well each kind is predicted.

- :mod:`.token_classes`: the class of each target (``[NEXT]``, mnemonic, register, number, memory, other, ``[UNK]``);
- :mod:`.baselines`: token counts per class and the frequency baselines;
- :mod:`.data`: which data an evaluation reads, prepared with the run's own tokenizer;
- :mod:`.report`: the numbers as ``evaluation.json``, a terminal table and flat metric keys;
- :mod:`.maskedlm`: ``python evaluate.py run=<run dir>`` (see ``docs/evaluation.md``);
- :mod:`.entry`: what ``evaluate.py`` does around Hydra (task choice, one-line errors: :class:`undertale.runtime.errors.UsageError`).

Importing this package loads nothing heavy; each module imports what it needs.
"""

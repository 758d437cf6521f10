"""Settings: typed, validated settings of every configurable part, without torch.

Model sizes (:mod:`~undertale.settings.model`), optimizer, masking, data, pairs and similarity settings,
and the Hydra config store built from them (:mod:`~undertale.settings.store`). Checking a config imports
only this layer, so it never waits for torch or Lightning.
"""

"""Data: ELF binaries to instruction-trace corpora, tokenizers, tokenized shards and loaders.

Modules, in pipeline order: ``elf`` (find functions), ``disassembly`` (decode and
normalise), ``corpus`` (parallel build into parquet shards), ``tokenizer``,
``parquet`` (shard files and token columns), ``encode`` (tokenize shards),
``packing``, ``dataset`` and ``datamodule`` (streaming loaders), ``pipeline``
(the cached chain the training entry uses), ``statistics`` and ``benchmark``. Commands: ``python -m undertale.data --help``.
"""

"""Embed every function of some binaries (or of a corpus) with a trained encoder.

    python embed.py run=outputs/train/runs/<time> binaries=[/usr/bin/ls] output=ls.parquet
    python embed.py run=<run dir> corpus=<corpus or pairs dir> output=vectors.parquet pooling=first

Writes one row per function: source, name, address, size, instructions and
``vector`` (float32, the model's width). Functions longer than the model's
sequence length are embedded by windows and averaged (see undertale.inference.embedding).
"""

from undertale.commands.embed import main

if __name__ == "__main__":
    main()

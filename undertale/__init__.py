"""undertale: masked-language-model pretraining on binary code (instruction traces)."""

__version__ = "0.1.0"

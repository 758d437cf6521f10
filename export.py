"""Export a run as a Hugging Face-style directory: config, safetensors weights, tokenizer, model card, remote code.

    python export.py run=outputs/train/runs/<time> output=undertale-model
    python export.py run=outputs/similarity/runs/<time> output=undertale-search overwrite=true

Loads with ``FunctionEncoder.from_pretrained(dir)``, ``transformers.AutoModel.from_pretrained(dir,
trust_remote_code=True)`` (and ``AutoModelForMaskedLM`` for a pretraining run) or plain ``safetensors``
(docs/export.md).
"""

from undertale.commands.export import main

if __name__ == "__main__":
    main()

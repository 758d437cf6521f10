"""Print parameter counts of the named model sizes.

    python -m undertale.models [SIZE ...] [--vocab-size N]
"""

import argparse

from undertale.data.tokenizer import MASK, NEXT, SPECIAL_TOKEN_IDS
from undertale.settings.model import InstructionTraceTransformerEncoderForMaskedLMConfiguration as Sizes
from undertale.models.flops import count_parameters, training_flops_per_token
from undertale.models.maskedlm import InstructionTraceTransformerEncoderForMaskedLM


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m undertale.models", description=__doc__.splitlines()[0])
    parser.add_argument("sizes", nargs="*", metavar="SIZE", help=f"any of {', '.join(Sizes.options)} (default: all)")
    parser.add_argument("--vocab-size", type=int, default=5120, help="vocabulary size (default 5120)")
    args = parser.parse_args(argv)
    unknown = [name for name in args.sizes if name not in Sizes.options]
    if unknown:
        parser.error(f"unknown size {unknown[0]!r}; choose from {', '.join(Sizes.options)}")
    args.sizes = args.sizes or list(Sizes.options)
    print(f"{'size':<8}{'layers':>14}{'embeddings':>14}{'head':>14}{'total':>14}{'train GFLOP/token':>20}")
    for name in args.sizes:
        size = Sizes.options[name]
        model = InstructionTraceTransformerEncoderForMaskedLM(
            **size, vocab_size=args.vocab_size, next_token_id=SPECIAL_TOKEN_IDS[NEXT],
            mask_token_id=SPECIAL_TOKEN_IDS[MASK],
        )
        layers = count_parameters(model, ["encoder.layers"])
        embeddings = count_parameters(model, ["encoder.embedding"])
        head = count_parameters(model, ["head"])
        flops = training_flops_per_token(**size, vocab_size=args.vocab_size)
        print(
            f"{name:<8}{layers / 1e6:>13.1f}M{embeddings / 1e6:>13.1f}M{head / 1e6:>13.1f}M"
            f"{count_parameters(model) / 1e6:>13.1f}M{flops / 1e9:>20.3f}"
        )


if __name__ == "__main__":
    main()

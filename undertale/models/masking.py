"""The masking collator for one tokenizer: :func:`build_collator` fills in its token ids and maps ``exclude``.

The settings themselves (:class:`~undertale.settings.masking.MaskingSettings`) live in the settings layer;
:class:`~undertale.models.maskedlm.MaskedLMCollator` applies them.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence


def exclude_ids(exclude: Sequence[str], vocabulary: Mapping[str, int]) -> tuple[int, ...]:
    """The ids of the ``exclude`` token strings.

    Arguments:
        exclude: token strings, as in ``masking.exclude``.
        vocabulary: the run's tokenizer vocabulary (token string to id).

    Raises:
        ValueError: naming the first token string the vocabulary lacks.
    """
    missing = [token for token in exclude if token not in vocabulary]
    if missing:
        token = missing[0]
        hint = (f"; on the command line quote brackets: 'masking.exclude=[\"[{token}]\"]'"
                if f"[{token}]" in vocabulary else "; list whole tokens such as [NEXT], [UNK], mov or rax")
        raise ValueError(f"masking.exclude names {token!r}, which is not a token of the run's tokenizer{hint}")
    return tuple(sorted({vocabulary[token] for token in exclude}))


def build_collator(masking: Any, tokenizer: Any) -> Any:
    """The ``masking`` group's collator for one tokenizer: token ids filled in, ``exclude`` mapped to ids.

    Arguments:
        masking: the ``masking`` config node (``_target_``: the collator, partial).
        tokenizer: the run's ``tokenizers.Tokenizer``.

    Raises:
        ValueError: for an ``exclude`` token the tokenizer lacks.
    """
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from undertale.data.tokenizer import special_ids

    ids = special_ids(tokenizer)
    exclude = list(masking.get("exclude") or ())
    node = OmegaConf.masked_copy(masking, [key for key in masking if key != "exclude"])
    return instantiate(node)(mask_token_id=ids["mask_token_id"], vocab_size=ids["vocab_size"],
                             exclude_ids=exclude_ids(exclude, tokenizer.get_vocab()))



"""Model package: collator statistics, positions, head, module behaviour, bad input."""

import dataclasses
import inspect
import math

import lightning
import pytest
import torch

from undertale.models import (
    InstructionTracePositionEmbedding,
    InstructionTraceTransformerEncoder,
    InstructionTraceTransformerEncoderForMaskedLM,
    InstructionTraceTransformerEncoderForMaskedLMConfiguration as Sizes,
    MaskedLMCollator,
    MaskedLMHead,
)
from undertale.models.maskedlm import MaskedLMMetrics, count_parameters, learning_rate_factor
from undertale.settings.optimizer import OptimizerSettings

VOCAB, MASK, NEXT = 64, 4, 5


def tiny_model(**overrides):
    arguments = dict(
        depth=2,
        hidden_dimensions=32,
        vocab_size=VOCAB,
        sequence_length=16,
        heads=4,
        intermediate_dimensions=64,
        next_token_id=NEXT,
        mask_token_id=MASK,
        dropout=0.0,
        eps=1e-12,
    )
    arguments.update(overrides)
    return InstructionTraceTransformerEncoderForMaskedLM(**arguments)


def test_collator_statistics_on_a_large_batch():
    torch.manual_seed(0)
    batch, length = 512, 256
    tokens = torch.randint(10, VOCAB, (batch, length))
    lengths = torch.randint(1, length + 1, (batch,))
    mask = (torch.arange(length) < lengths[:, None]).long()
    tokens = tokens * mask  # padding id 0
    out = MaskedLMCollator(MASK, VOCAB, probability=0.15)([{"tokens": t, "mask": m} for t, m in zip(tokens, mask)])

    candidates = out["labels"] != -100
    real = mask == 1
    assert not (candidates & ~real).any(), "padding became a target"
    assert torch.equal(out["tokens"][~real], tokens[~real]), "padding was changed"
    assert abs(candidates.sum().item() / real.sum().item() - 0.15) < 0.005
    assert torch.equal(out["labels"][candidates], tokens[candidates])
    assert (out["labels"][~candidates] == -100).all()
    assert torch.equal(out["tokens"][~candidates], tokens[~candidates])

    n = candidates.sum().item()
    masked = (out["tokens"] == MASK) & candidates
    unchanged = (out["tokens"] == tokens) & candidates
    changed_random = candidates & ~masked & ~unchanged
    assert abs(masked.sum().item() / n - 0.8) < 0.01
    # a random replacement can draw the original token: 10% x (1 - 1/vocab_range) changed, the rest unchanged
    assert abs(changed_random.sum().item() / n - 0.1) < 0.01
    assert abs(unchanged.sum().item() / n - 0.1) < 0.01
    assert all(value.dtype == torch.long for value in out.values())


def test_collator_accepts_lists_and_rejects_bad_input():
    collate = MaskedLMCollator(MASK, VOCAB, probability=1.0, mask_fraction=1.0, random_fraction=0.0)
    out = collate([{"tokens": [7, 8, 0], "mask": [1, 1, 0]}])
    assert out["tokens"].tolist() == [[MASK, MASK, 0]]
    assert out["labels"].tolist() == [[7, 8, -100]]
    with pytest.raises(ValueError, match="1.5"):
        MaskedLMCollator(MASK, VOCAB, probability=1.5)
    with pytest.raises(ValueError, match="-0.1"):
        MaskedLMCollator(MASK, VOCAB, probability=-0.1)
    with pytest.raises(ValueError, match=r"unequal 'tokens' lengths \[2, 3\]"):
        collate([{"tokens": [1, 2, 3], "mask": [1, 1, 1]}, {"tokens": [1, 2], "mask": [1, 1]}])


def test_position_indices():
    foo, bar, baz, blah = 10, 11, 12, 13
    state = torch.tensor([foo, bar, baz, NEXT, blah])
    embedding = InstructionTracePositionEmbedding
    assert embedding.compute_instruction_index(state, NEXT).tolist() == [0, 0, 0, 0, 1]
    assert embedding.compute_argument_index(state, NEXT).tolist() == [0, 1, 2, 3, 0]

    batch = torch.tensor([[foo, bar, baz, NEXT, blah, 0, 0], [foo, NEXT, bar, NEXT, baz, blah, NEXT]])
    assert embedding.compute_instruction_index(batch, NEXT).tolist() == [
        [0, 0, 0, 0, 1, 1, 1],
        [0, 0, 1, 1, 2, 2, 2],
    ]
    assert embedding.compute_argument_index(batch, NEXT).tolist() == [
        [0, 1, 2, 3, 0, 1, 2],
        [0, 1, 0, 1, 0, 1, 2],
    ]
    # a padding mask leaves real positions alone
    mask = (batch != 0).long()
    assert embedding.compute_instruction_index(batch, NEXT, mask)[:, :5].tolist() == [
        [0, 0, 0, 0, 1],
        [0, 0, 1, 1, 2],
    ]
    # packed functions (segment ids) restart both counts
    packed = torch.tensor([[foo, NEXT, bar, baz, NEXT, blah, 0]])
    segments = torch.tensor([[1, 1, 1, 2, 2, 2, 0]])
    assert embedding.compute_instruction_index(packed, NEXT, segments).tolist() == [[0, 0, 1, 0, 0, 1, 0]]
    assert embedding.compute_argument_index(packed, NEXT, segments).tolist() == [[0, 1, 0, 0, 1, 0, 0]]


def test_head_shapes():
    head = MaskedLMHead(32, VOCAB, 1e-12)
    assert head(torch.randn(3, 7, 32)).shape == (3, 7, VOCAB)


def test_padding_does_not_change_real_outputs():
    torch.manual_seed(0)
    model = tiny_model().eval()
    tokens = torch.randint(10, VOCAB, (1, 8))
    padded = torch.cat([tokens, torch.zeros(1, 4, dtype=torch.long)], 1)
    mask = torch.cat([torch.ones(1, 8), torch.zeros(1, 4)], 1).long()
    assert torch.allclose(model(tokens)[0], model(padded, mask)[0, :8], atol=1e-5)


def test_infer_fills_only_masked_positions():
    torch.manual_seed(0)
    model = tiny_model()
    tokens = torch.randint(10, VOCAB, (3, 12))
    tokens[:, [2, 5]] = MASK
    filled = model.infer(tokens)
    assert filled.shape == (3, 12)
    keep = tokens != MASK
    assert torch.equal(filled[keep], tokens[keep])
    assert torch.equal(filled[:, [2, 5]], model(tokens).argmax(-1)[:, [2, 5]])
    assert model.infer(tokens[0]).shape == (12,)
    assert model.infer(tokens[:1]).shape == (12,)


def test_learning_rate_schedule():
    total, warmup = 1000, 25
    assert learning_rate_factor(0, warmup, total, "cosine", 0.0) == pytest.approx(1 / 26)
    assert learning_rate_factor(warmup, warmup, total, "cosine", 0.0) == pytest.approx(1.0)
    assert learning_rate_factor(total, warmup, total, "cosine", 0.0) == pytest.approx(0.0, abs=1e-9)
    assert learning_rate_factor(total, warmup, total, "cosine", 0.1) == pytest.approx(0.1)
    assert learning_rate_factor((total + warmup) // 2, warmup, total, "linear", 0.0) == pytest.approx(0.5, abs=0.01)


def test_optimizer_schedule_through_the_trainer(tmp_path):
    """warmup=0.1 of 40 steps is 4 steps; the lr peaks after them and ends near final_lr."""
    torch.manual_seed(0)
    model = tiny_model(lr=1e-3, warmup=0.1, final_lr=0.0)
    rates = []

    class Record(lightning.Callback):
        def on_train_batch_start(self, trainer, *_):
            rates.append(trainer.optimizers[0].param_groups[0]["lr"])

    data = [MaskedLMCollator(MASK, VOCAB)([{"tokens": torch.randint(10, VOCAB, (16,)), "mask": torch.ones(16)}] * 4)]
    trainer = lightning.Trainer(
        max_steps=40, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, callbacks=[Record()], accelerator="cpu",
    )
    trainer.fit(model, train_dataloaders=torch.utils.data.DataLoader(data * 40, batch_size=None))
    assert model.warmup_steps(40) == 4
    assert rates[0] == pytest.approx(1e-3 / 5)
    assert rates[4] == pytest.approx(1e-3)
    assert rates[-1] == pytest.approx(1e-3 * 0.5 * (1 + math.cos(math.pi * 35 / 36)), rel=1e-6)
    assert trainer.optimizers[0].param_groups[1]["weight_decay"] == 0.0


def test_accuracy_is_a_total_count_not_a_mean_of_batch_means():
    metrics = MaskedLMMetrics()
    # batch 1: 1 of 1 correct; batch 2: 1 of 3 correct -> 2/4 = 0.5 (a mean of means would say 0.667)
    eye = torch.eye(4) * 10
    metrics.update(eye[[0]], torch.tensor([0]))
    metrics.update(eye[[1, 1, 1]], torch.tensor([1, 2, 3]))
    assert metrics.compute()["accuracy"].item() == pytest.approx(0.5)
    expected_loss = torch.nn.functional.cross_entropy(eye[[0, 1, 1, 1]], torch.tensor([0, 1, 2, 3]))
    assert metrics.compute()["loss"].item() == pytest.approx(expected_loss.item(), rel=1e-5)
    assert metrics.compute()["perplexity"].item() == pytest.approx(math.exp(expected_loss.item()), rel=1e-5)


def test_masked_logits_loss_equals_full_logits_loss():
    torch.manual_seed(0)
    model = tiny_model().eval()
    batch = MaskedLMCollator(MASK, VOCAB, probability=0.3)(
        [{"tokens": torch.randint(10, VOCAB, (16,)), "mask": torch.ones(16)} for _ in range(4)]
    )
    logits, labels = model.masked_logits(batch)
    full = torch.nn.functional.cross_entropy(model(batch["tokens"], batch["mask"]).transpose(1, 2), batch["labels"])
    assert torch.nn.functional.cross_entropy(logits, labels).item() == pytest.approx(full.item(), rel=1e-5)


def test_save_load_gives_identical_outputs(tmp_path):
    torch.manual_seed(0)
    model = tiny_model(lr=3e-4)
    trainer = lightning.Trainer(max_steps=1, logger=False, enable_progress_bar=False, accelerator="cpu",
                                enable_model_summary=False, default_root_dir=tmp_path)
    data = [MaskedLMCollator(MASK, VOCAB)([{"tokens": torch.randint(10, VOCAB, (16,)), "mask": torch.ones(16)}] * 2)]
    trainer.fit(model, train_dataloaders=torch.utils.data.DataLoader(data, batch_size=None))
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)
    loaded = InstructionTraceTransformerEncoderForMaskedLM.load_from_checkpoint(path)
    assert loaded.hparams.lr == 3e-4
    tokens = torch.randint(10, VOCAB, (2, 16))
    model.eval(), loaded.eval()
    assert torch.equal(model(tokens), loaded(tokens))


def test_bad_input_raises_value_error_naming_the_value():
    model = tiny_model()
    with pytest.raises(ValueError, match=r"shape \(2, 3, 4\)"):
        model(torch.zeros(2, 3, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="length 17"):
        model(torch.zeros(1, 17, dtype=torch.long))
    with pytest.raises(ValueError, match=r"mask shape \(1, 5\)"):
        model(torch.zeros(1, 4, dtype=torch.long), torch.ones(1, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="token id 64"):
        model(torch.tensor([[1, 64]]))
    with pytest.raises(ValueError, match="token id -1"):
        model(torch.tensor([[1, -1]]))
    with pytest.raises(ValueError, match=r"heads \(5\) must divide hidden_dimensions \(32\)"):
        tiny_model(heads=5)
    with pytest.raises(ValueError, match=r"shape \(4,\)"):
        InstructionTraceTransformerEncoder(1, 32, VOCAB, 16, 4, 64, NEXT, 0.0, 1e-12)(torch.zeros(4, dtype=torch.long))


def test_medium_size_and_parameter_count():
    assert dict(**Sizes.medium) == {
        "sequence_length": 512, "depth": 12, "heads": 12, "hidden_dimensions": 768,
        "intermediate_dimensions": 3072, "dropout": 0.1, "eps": 1e-12, "attention_dropout": None,
    }
    assert Sizes.from_name("large") is Sizes.options["large"] is Sizes.large
    assert (Sizes.large["depth"], Sizes.large["hidden_dimensions"], Sizes.large["heads"]) == (24, 1024, 16)
    encoder = InstructionTraceTransformerEncoder(**Sizes.medium, vocab_size=5120, next_token_id=NEXT)
    layers = count_parameters(encoder, ["layers"])
    # per layer: fused QKV + output (4h^2 + 4h), FFN (2hi + i + h), two norms (4h)
    h, i = 768, 3072
    assert layers == 12 * (4 * h * h + 4 * h + 2 * h * i + i + h + 4 * h)
    assert 84e6 < layers < 86e6


def test_sizes_are_frozen_and_validated():
    with pytest.raises(dataclasses.FrozenInstanceError):
        Sizes.tiny.depth = 3
    with pytest.raises(ValueError, match=r"heads \(5\) must divide hidden_dimensions \(128\)"):
        Sizes.tiny.replace(heads=5)
    with pytest.raises(ValueError, match="sequence_length must be at most"):
        Sizes.tiny.replace(sequence_length=100_000)
    with pytest.raises(ValueError, match="depth must be a positive integer, got 'abc'"):
        Sizes.tiny.replace(depth="abc")
    with pytest.raises(KeyError, match="choose from tiny, small, medium, large, xl"):
        Sizes.from_name("huge")
    with pytest.raises(ValueError, match="attention_dropout must be within"):
        Sizes.tiny.replace(attention_dropout=1.0)


def test_attention_dropout_is_separate_from_the_hidden_dropout():
    """attention_dropout drops attention weights alone; None follows dropout (BERT's two probabilities)."""
    tokens = torch.randint(6, VOCAB, (2, 16))

    def outputs_in_training(dropout, attention_dropout):
        torch.manual_seed(0)
        encoder = InstructionTraceTransformerEncoder(2, 32, VOCAB, 16, 4, 64, NEXT, dropout, 1e-12,
                                                     attention_dropout=attention_dropout)
        encoder.train()
        return encoder(tokens), encoder(tokens), encoder

    first, second, encoder = outputs_in_training(0.0, 0.5)
    assert not torch.allclose(first, second)  # only the attention weights were dropped
    encoder.eval()
    assert torch.equal(encoder(tokens), encoder(tokens))  # no dropout at inference (embeddings, evaluation)
    assert {m.p for m in encoder.modules() if isinstance(m, torch.nn.Dropout)} == {0.0}
    first, second, encoder = outputs_in_training(0.3, 0.0)
    assert {layer.attention.dropout for layer in encoder.layers} == {0.0}
    assert {m.p for m in encoder.modules() if isinstance(m, torch.nn.Dropout)} == {0.3}
    first, second, _ = outputs_in_training(0.0, None)
    assert torch.equal(first, second)  # None: the hidden dropout, 0 here
    _, _, encoder = outputs_in_training(0.2, None)
    assert {layer.attention.dropout for layer in encoder.layers} == {0.2}


def test_published_defaults_and_original_constants():
    """The model's optimizer defaults are the settings object's; the original tests read PROBABILITY."""
    assert MaskedLMCollator.PROBABILITY == 0.15
    signature = inspect.signature(InstructionTraceTransformerEncoderForMaskedLM)
    assert signature.parameters["lr"].default == OptimizerSettings().lr == 1e-4
    assert list(signature.parameters)[:10] == [
        "depth", "hidden_dimensions", "vocab_size", "sequence_length", "heads", "intermediate_dimensions",
        "next_token_id", "mask_token_id", "dropout", "eps",
    ]
    assert list(inspect.signature(MaskedLMCollator).parameters) == [
        "mask_token_id", "vocab_size", "probability", "mask_fraction", "random_fraction", "exclude_ids",
    ]
    with pytest.raises(ValueError, match="lr must be positive"):
        tiny_model(lr=-1.0)


def test_tiny_model_overfits_a_fixed_batch():
    torch.manual_seed(0)
    model = tiny_model(hidden_dimensions=64, intermediate_dimensions=128, sequence_length=32)
    batch = MaskedLMCollator(MASK, VOCAB, probability=0.3)(
        [{"tokens": torch.randint(10, VOCAB, (32,)), "mask": torch.ones(32)} for _ in range(8)]
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(200):
        logits, labels = model.masked_logits(batch)
        loss = torch.nn.functional.cross_entropy(logits, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 2, (losses[0], losses[-1])


def test_bf16_autocast_forward_is_finite_and_close():
    torch.manual_seed(0)
    model = tiny_model().eval()
    tokens = torch.randint(10, VOCAB, (2, 16))
    mask = torch.ones_like(tokens)
    mask[1, 10:] = 0
    full = model(tokens, mask)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        half = model(tokens, mask)
    assert torch.isfinite(half).all()
    assert (half.float() - full).abs().max() < 0.1


@pytest.mark.slow
def test_compiled_encoder_gives_the_same_losses_without_recompiling():
    """torch.compile on or off: the same loss curve (float noise only); no graph break from the input checks,
    and no recompilation when packed batches change their function boundaries from step to step."""
    from torch._dynamo.utils import counters

    def losses(compiled: bool) -> tuple[list[float], list[int]]:
        torch.manual_seed(0)
        model = tiny_model(hidden_dimensions=64, intermediate_dimensions=128, sequence_length=32)
        if compiled:
            torch._dynamo.reset()
            counters.clear()
            model.encoder.compile(fullgraph=True)  # fullgraph: any graph break is an error
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        generator = torch.Generator().manual_seed(1)
        values, graphs = [], []
        for step in range(6):
            tokens = torch.randint(10, VOCAB, (8, 32), generator=generator)
            # packed rows: a different number and placement of functions each step, some padding at the end
            boundaries = torch.randint(1, 31, (8, 2), generator=generator).sort(dim=1).values
            positions = torch.arange(32)
            mask = 1 + (positions >= boundaries[:, :1]).long() + (positions >= boundaries[:, 1:]).long()
            mask[:, 28:] = 0
            torch.manual_seed(100 + step)
            logits, labels = model.masked_logits(MaskedLMCollator(MASK, VOCAB, 0.3)({"tokens": tokens, "mask": mask}))
            loss = torch.nn.functional.cross_entropy(logits, labels)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            values.append(loss.item())
            graphs.append(counters["stats"]["unique_graphs"])
        return values, graphs

    compiled, graphs = losses(True)
    eager, _ = losses(False)
    assert compiled == pytest.approx(eager, rel=1e-4)
    assert graphs[0] >= 1 and graphs[-1] == graphs[0], f"recompiled after the first step: {graphs}"


def test_spec_peaks_tell_the_h100_variants_apart():
    """train/mfu divides by the card's spec peak: the PCIe H100 is not the SXM one."""
    from undertale.runtime.environment import peak_bf16_flops

    assert peak_bf16_flops("NVIDIA H100 PCIe") == 756e12
    assert peak_bf16_flops("NVIDIA H100 80GB HBM3") == 989e12
    assert peak_bf16_flops("NVIDIA H100 NVL") == 835e12
    assert peak_bf16_flops("NVIDIA A100-SXM4-80GB") == 312e12
    assert peak_bf16_flops("Some Future Card") is None

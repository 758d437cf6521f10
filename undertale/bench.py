"""Training-throughput benchmark, everything measured side by side in one process.

    python -m undertale.bench                      # tiny on CPU, medium on a GPU
    python -m undertale.bench model=medium data.batch_size=32 bench.steps=30   # settings: conf/bench.yaml

Prints one table: the device's measured matmul ceiling; this project's training step
(dense); HuggingFace ``BertForMaskedLM`` at the same shape (when
``transformers`` is installed); padded vs packed training on the real function
lengths of the configured corpus; and the data loader alone. Ratios are taken
between rows of the same run. The ``ceiling`` column is model FLOP/s over that
*measured* ceiling; the training run's ``train/mfu`` divides by the card's *spec*
peak instead, so the two are not comparable.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import DictConfig

from undertale.settings.store import CONF, register_configs, sizes_of
from undertale.data.config import DataConfig
from undertale.data.packing import pack_rows
from undertale.data.tokenizer import MASK, NEXT, SPECIAL_TOKEN_IDS
from undertale.runtime.environment import describe_machine, resolve_compile
from undertale.settings.model import attention_dropout_of
from undertale.models.flops import training_flops_per_token
from undertale.models.maskedlm import MaskedLMCollator

MASK_ID, NEXT_ID = SPECIAL_TOKEN_IDS[MASK], SPECIAL_TOKEN_IDS[NEXT]


@dataclass
class Row:
    name: str
    tokens_per_second: float
    step_seconds: float
    peak_memory_gb: Optional[float] = None
    ceiling_fraction: Optional[float] = None  # model FLOP/s over the measured matmul ceiling
    note: str = ""


def _synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_ceiling(device: torch.device) -> float:
    """Measured matmul FLOP/s: bf16 8192^3 on a GPU, fp32 2048^3 on CPU."""
    size, dtype, repeats = (8192, torch.bfloat16, 20) if device.type == "cuda" else (2048, torch.float32, 5)
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    _synchronise(device)
    started = time.perf_counter()
    for _ in range(repeats):
        a @ b
    _synchronise(device)
    return 2 * size**3 * repeats / (time.perf_counter() - started)


def time_steps(step: Callable[[], None], device: torch.device, steps: int, warmup: int) -> float:
    for _ in range(warmup):
        step()
    _synchronise(device)
    started = time.perf_counter()
    for _ in range(steps):
        step()
    _synchronise(device)
    return (time.perf_counter() - started) / steps


def synthetic_batch(batch: int, length: int, vocab: int, probability: float,
                    device: torch.device) -> dict[str, torch.Tensor]:
    """A dense batch shaped like instruction traces: a [NEXT] every few tokens, 15% targets."""
    generator = torch.Generator().manual_seed(0)
    tokens = torch.randint(10, vocab, (batch, length), generator=generator)
    tokens[torch.rand(batch, length, generator=generator) < 0.25] = NEXT_ID
    collated = MaskedLMCollator(MASK_ID, vocab, probability)({"tokens": tokens, "mask": torch.ones_like(tokens)})
    return {name: value.to(device) for name, value in collated.items()}


def project_step(cfg: DictConfig, vocab: int, device: torch.device, compile_model: bool):
    """A training-step closure of this project's model (masked-position head, fused AdamW, bf16 on GPU)."""
    model = instantiate(cfg.model)(vocab_size=vocab, next_token_id=NEXT_ID, mask_token_id=MASK_ID).to(device)
    model.train()
    if compile_model:
        model.encoder.compile()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    holder: dict[str, dict] = {}

    def step() -> None:
        with autocast:
            logits, labels = model.masked_logits(holder["batch"])
            loss = torch.nn.functional.cross_entropy(logits.float(), labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step, holder


def huggingface_step(cfg: DictConfig, vocab: int, device: torch.device, compile_model: bool):
    """The same shape as ``BertForMaskedLM`` (sdpa attention), full-vocabulary head; None without transformers."""
    try:
        from transformers import BertConfig, BertForMaskedLM
    except ImportError:
        return None
    size = cfg.model
    attention_dropout = attention_dropout_of(size.dropout, size.get("attention_dropout"))
    config = BertConfig(
        vocab_size=vocab, hidden_size=size.hidden_dimensions, num_hidden_layers=size.depth,
        num_attention_heads=size.heads, intermediate_size=size.intermediate_dimensions,
        max_position_embeddings=size.sequence_length, hidden_dropout_prob=size.dropout,
        attention_probs_dropout_prob=attention_dropout, layer_norm_eps=size.eps, attn_implementation="sdpa",
    )
    model = BertForMaskedLM(config).to(device)
    model.train()
    if compile_model:
        model = torch.compile(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    holder: dict[str, dict] = {}

    def step() -> None:
        batch = holder["batch"]
        with autocast:
            loss = model(input_ids=batch["tokens"], attention_mask=batch["mask"], labels=batch["labels"]).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step, holder


def corpus_lengths(cfg: DictConfig) -> tuple[np.ndarray, str]:
    """Token lengths of the corpus's functions at the model's sequence length (built and cached if needed).

    Always the unpacked shards: with ``data.packing`` on, the packed rows' lengths would all be near full.
    """
    import pyarrow.parquet as pq

    from undertale.data.encode import tokenized_files

    data: DataConfig = instantiate(cfg.data, packing=False, _convert_="all")
    prepared = data.prepare(cfg.model.sequence_length, progress=True)
    lengths = np.concatenate([pq.read_table(path, columns=["length"]).column(0).to_numpy()
                              for path in tokenized_files(prepared.tokenized, "train")])
    return lengths, str(prepared.tokenized)


def padded_and_packed_batches(lengths: np.ndarray, batch: int, length: int, vocab: int, probability: float,
                              device: torch.device) -> tuple[dict, dict, int, int]:
    """Two batches of the same shape from the same length distribution: one function per row, and packed."""
    rng = np.random.default_rng(0)
    sample = rng.choice(lengths, size=batch * 16)
    tokens = np.zeros((len(sample), length), dtype=np.int64)
    for row, real in enumerate(sample):
        tokens[row, :real] = rng.integers(10, vocab, real)
        tokens[row, :real][rng.random(real) < 0.25] = NEXT_ID
    mask = (np.arange(length) < sample[:, None]).astype(np.int64)
    packed, segments = pack_rows(tokens, sample)
    collate = MaskedLMCollator(MASK_ID, vocab, probability)
    padded_batch = collate({"tokens": tokens[:batch], "mask": mask[:batch]})
    chosen = rng.choice(len(packed), size=batch, replace=False)  # rows from the whole packing, tail included
    packed, segments = packed[chosen], segments[chosen]
    packed_batch = collate({"tokens": packed, "mask": segments.astype(np.int64)})
    move = lambda values: {name: value.to(device) for name, value in values.items()}  # noqa: E731
    return move(padded_batch), move(packed_batch), int(mask[:batch].sum()), int((segments != 0).sum())


def loader_throughput(cfg: DictConfig, batches: int, packing: bool) -> tuple[float, float]:
    """Tokens/s (all positions, real tokens) the data module delivers with its configured workers."""
    from undertale.data.tokenizer import load_tokenizer
    from undertale.models.masking import build_collator

    data: DataConfig = instantiate(cfg.data, packing=packing, pin_memory=False, _convert_="all")
    prepared = data.prepare(cfg.model.sequence_length, progress=False)
    module = data.datamodule(prepared, build_collator(cfg.masking, load_tokenizer(prepared.tokenizer,
                                                                                   cfg.model.sequence_length)))
    module.setup("fit")
    iterator = iter(module.train_dataloader())
    next(iterator)  # worker start-up is not throughput
    positions = real = count = 0
    started = time.perf_counter()
    for batch in iterator:
        positions += batch["tokens"].numel()
        real += int((batch["mask"] != 0).sum())
        count += 1
        if count >= batches:
            break
    elapsed = time.perf_counter() - started
    return positions / elapsed, real / elapsed


def run(cfg: DictConfig) -> list[Row]:
    settings = cfg.bench
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    compile_model = resolve_compile(cfg.compile, "cuda" if device.type == "cuda" else "cpu")
    vocab, batch, length = settings["vocab_size"], cfg.data.batch_size, cfg.model.sequence_length
    probability = cfg.masking.probability
    flops = training_flops_per_token(**sizes_of(cfg.model), vocab_size=vocab)  # full-vocabulary head, as usually counted
    ceiling = matmul_ceiling(device)

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"machine: {describe_machine()}")
    print(f"device: {name}; torch {torch.__version__}; measured matmul ceiling {ceiling / 1e12:.2f} TFLOP/s")
    print(f"shape: model {cfg.model.depth}x{cfg.model.hidden_dimensions} (heads {cfg.model.heads}), "
          f"vocab {vocab}, batch {batch} x {length}, compile {compile_model}")
    rows: list[Row] = []

    def measure(label: str, built, batch_values: dict, real_tokens: int, note: str = "") -> Optional[Row]:
        if built is None:
            return None
        step, holder = built
        holder["batch"] = batch_values
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        seconds = time_steps(step, device, settings["steps"], settings["warmup"])
        memory = torch.cuda.max_memory_allocated(device) / 1e9 if device.type == "cuda" else None
        rate = real_tokens / seconds
        fraction = rate * flops / ceiling if device.type == "cuda" else None  # a CPU has no meaningful matmul peak here
        row = Row(label, rate, seconds, memory, fraction, note)
        rows.append(row)
        # each row as soon as it is measured: a bench cut short still tells what it measured
        print(f"measured {label}: {rate:,.0f} tokens/s, {seconds * 1e3:.1f} ms/step"
              + (f", {fraction:.1%} of the ceiling" if fraction is not None else ""), flush=True)
        return row

    dense = synthetic_batch(batch, length, vocab, probability, device)
    ours = measure("undertale (dense)", project_step(cfg, vocab, device, compile_model), dense, batch * length)
    hf = None
    if settings["baseline"]:
        built = huggingface_step(cfg, vocab, device, compile_model)
        if built is None:
            print("HuggingFace baseline skipped: `transformers` is not installed (pip install -e '.[bench]')")
        hf = measure("HF BertForMaskedLM (dense, sdpa)", built, dense, batch * length)

    lengths, source = corpus_lengths(cfg)
    padded, packed, padded_real, packed_real = padded_and_packed_batches(lengths, batch, length, vocab, probability, device)
    print(f"corpus lengths: {len(lengths):,} functions from {source}; mean {lengths.mean():.0f} tokens, "
          f"median {np.median(lengths):.0f}; padded rows are {padded_real / (batch * length):.0%} real tokens, "
          f"packed rows {packed_real / (batch * length):.0%}")
    step = project_step(cfg, vocab, device, compile_model)
    padded_row = measure("undertale padded (real tokens)", step, padded, padded_real)
    packed_row = measure("undertale packed (real tokens)", step, packed, packed_real)

    for packing in (False, True):
        positions, real = loader_throughput(cfg, settings["loader_batches"], packing)
        rows.append(Row(f"loader, {cfg.data.num_workers} workers{' (packed)' if packing else ''}", positions,
                        float("nan"), note=f"{real:,.0f} real tokens/s"))

    print(f"\n{'':<36}{'tokens/s':>14}{'step ms':>10}{'peak GB':>10}{'ceiling':>8}  note")
    for row in rows:
        memory = f"{row.peak_memory_gb:.1f}" if row.peak_memory_gb is not None else "-"
        fraction = f"{row.ceiling_fraction:.1%}" if row.ceiling_fraction is not None else "-"
        step_ms = f"{row.step_seconds * 1e3:.1f}" if not math.isnan(row.step_seconds) else "-"
        print(f"{row.name:<36}{row.tokens_per_second:>14,.0f}{step_ms:>10}{memory:>10}{fraction:>8}  {row.note}")
    print()
    if hf is not None:
        print(f"undertale / HuggingFace (dense tokens/s): {ours.tokens_per_second / hf.tokens_per_second:.2f}x")
    print(f"packed / padded (real tokens/s): {packed_row.tokens_per_second / padded_row.tokens_per_second:.2f}x")
    return rows


def main(argv: Optional[list[str]] = None) -> int:
    overrides = list(sys.argv[1:] if argv is None else argv)
    if not any(item.startswith("model=") for item in overrides):
        overrides.insert(0, "model=medium" if torch.cuda.is_available() else "model=tiny")
    register_configs()
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose("bench", overrides=overrides)
    run(cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main())

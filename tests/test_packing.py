"""Packing several functions per row: same outputs and loss as unpacked, denser rows."""

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from undertale.data.packing import assign_bins, pack_directory, pack_rows
from undertale.data.parquet import fixed_list, matrix
from undertale.data.pipeline import prepare
from undertale.data.tokenizer import train_tokenizer
from undertale.models.maskedlm import IGNORE_INDEX, InstructionTraceTransformerEncoderForMaskedLM

VOCAB, MASK, NEXT, LENGTH = 64, 4, 5, 32


def random_functions(count, seed=0):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(2, LENGTH + 1, count)
    lengths[:3] = [LENGTH, 1, 7]
    tokens = np.zeros((count, LENGTH), dtype=np.int64)
    for row, length in enumerate(lengths):
        body = rng.integers(10, VOCAB, length)
        body[rng.random(length) < 0.25] = NEXT  # instructions of a few tokens
        tokens[row, :length] = body
    return tokens, lengths


def test_packed_rows_hold_every_token_once_within_capacity():
    tokens, lengths = random_functions(200)
    packed, segments = pack_rows(tokens, lengths)
    lower_bound = int(np.ceil(lengths.sum() / LENGTH))
    assert packed.shape[1] == LENGTH and lower_bound <= len(packed) <= 1.1 * lower_bound
    assert (segments != 0).sum() == lengths.sum()
    assert sorted(packed[segments != 0].tolist()) == sorted(tokens[tokens != 0].tolist())
    bins, offsets, count = assign_bins(lengths, LENGTH)
    for b in range(count):
        items = np.flatnonzero(bins == b)
        assert lengths[items].sum() <= LENGTH


def test_packed_loss_equals_unpacked_loss():
    torch.manual_seed(0)
    model = InstructionTraceTransformerEncoderForMaskedLM(
        depth=2, hidden_dimensions=32, vocab_size=VOCAB, sequence_length=LENGTH, heads=4,
        intermediate_dimensions=64, next_token_id=NEXT, mask_token_id=MASK, dropout=0.0, eps=1e-12,
    ).eval()
    tokens, lengths = random_functions(24, seed=1)
    labels = np.where(np.random.default_rng(2).random(tokens.shape) < 0.3, tokens, IGNORE_INDEX)
    labels[tokens == 0] = IGNORE_INDEX
    mask = (np.arange(LENGTH) < lengths[:, None]).astype(np.int64)

    # pack the labels alongside the tokens: the same scatter, applied to (tokens, labels) pairs
    packed_tokens, segments = pack_rows(tokens, lengths)
    packed_labels, _ = pack_rows(np.where(labels == IGNORE_INDEX, 0, labels + 1), lengths)
    packed_labels = np.where(packed_labels == 0, IGNORE_INDEX, packed_labels - 1)
    assert len(packed_tokens) < len(tokens)

    def loss(batch_tokens, batch_mask, batch_labels):
        logits, targets = model.masked_logits({
            "tokens": torch.as_tensor(batch_tokens), "mask": torch.as_tensor(batch_mask),
            "labels": torch.as_tensor(batch_labels),
        })
        return torch.nn.functional.cross_entropy(logits, targets, reduction="sum"), len(targets)

    with torch.no_grad():
        unpacked, unpacked_count = loss(tokens, mask, labels)
        packed, packed_count = loss(packed_tokens, segments.astype(np.int64), packed_labels)
    assert packed_count == unpacked_count
    assert packed.item() == pytest.approx(unpacked.item(), rel=1e-4)


def test_pack_directory_writes_denser_shards(tmp_path):
    import pyarrow as pa

    tokens, lengths = random_functions(300)
    (tmp_path / "tokens" / "train").mkdir(parents=True)
    mask = (np.arange(LENGTH) < lengths[:, None]).astype(np.int8)
    pq.write_table(pa.table({"tokens": fixed_list(tokens.astype(np.int32)), "mask": fixed_list(mask),
                             "length": pa.array(lengths)}), tmp_path / "tokens" / "train" / "shard-00000.parquet")
    counts = pack_directory(tmp_path / "tokens", tmp_path / "packed", progress=False)
    table = pq.read_table(tmp_path / "packed" / "train" / "shard-00000.parquet")
    assert counts["functions"] == 300 and counts["rows"] == table.num_rows < 300
    assert counts["density"] > 0.9 > lengths.mean() / LENGTH
    assert (tmp_path / "packed" / "packing.json").is_file()


def write_functions(path, tokens, lengths):
    import pyarrow as pa

    path.parent.mkdir(parents=True, exist_ok=True)
    mask = (np.arange(LENGTH) < lengths[:, None]).astype(np.int8)
    pq.write_table(pa.table({"tokens": fixed_list(tokens.astype(np.int32)), "mask": fixed_list(mask),
                             "length": pa.array(lengths)}), path)


def packed_tokens(directory):
    """Every real token of the packed shards under ``directory``, sorted."""
    tables = [pq.read_table(path) for path in sorted(directory.rglob("*.parquet"))]
    return sorted(value for table in tables
                  for value in matrix(table.column("tokens"))[matrix(table.column("mask")) != 0].tolist())


def test_pretokenized_shards_rewritten_in_place_are_packed_again(tmp_path):
    tokenizer = tmp_path / "tokenizer.json"
    train_tokenizer(["push rbp [NEXT] ret"] * 2, merges=16, sequence_length=LENGTH).save(str(tokenizer))
    shard = tmp_path / "tokens" / "train" / "shard-00000.parquet"
    packed = []
    for seed in (0, 1):
        tokens, lengths = random_functions(100, seed=seed)
        write_functions(shard, tokens, lengths)
        packed.append(prepare("parquet", tmp_path / "cache", directory=str(tmp_path / "tokens"),
                              tokenizer=str(tokenizer), packing=True, progress=False).tokenized)
        assert packed_tokens(packed[-1]) == sorted(tokens[np.arange(LENGTH) < lengths[:, None]].tolist())
    assert packed[0] != packed[1]


def test_training_with_packing_runs_end_to_end(cache, tmp_path, capsys):
    """data.packing=true trains from packed shards and counts only real tokens."""
    import json

    from helpers import small, train_in_process

    run_dir = tmp_path / "run"
    train_in_process(*small(cache, steps=6, logger="csv"), "data.packing=true", f"hydra.run.dir={run_dir}")
    stdout = capsys.readouterr().out
    assert "/packed/" in stdout and "(packed)" in stdout
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["global_step"] == 6 and metrics["train/tokens_per_sec"] > 0


def test_bench_prints_the_table_and_ratios(cache, capsys):
    """``python -m undertale.bench``'s main, in this process; the smoke data on this machine's own trainer."""
    from helpers import small
    from undertale.bench import main

    overrides = [item for item in small(cache, logger=None) if not item.startswith("trainer.max_steps=")]
    assert main(["model=tiny", *overrides, "trainer=default", "bench.steps=2", "bench.warmup=1",
                 "bench.loader_batches=5", "data.num_workers=2", "bench.vocab_size=512"]) == 0
    stdout = capsys.readouterr().out
    for text in ("matmul ceiling", "undertale (dense)", "undertale padded", "undertale packed", "loader, 2 workers",
                 "packed / padded (real tokens/s):"):
        assert text in stdout, text


def test_bench_lengths_are_single_functions_even_with_packing_on(cache):
    from hydra import compose, initialize_config_dir

    from conftest import prepare_small
    from helpers import ROOT, small
    from undertale.bench import corpus_lengths
    from undertale.data.encode import tokenized_files

    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("bench", overrides=[*small(cache), "data.packing=true"])
    lengths, _ = corpus_lengths(cfg)
    functions = sum(pq.read_metadata(path).num_rows for path in tokenized_files(prepare_small(cache).tokenized, "train"))
    assert len(lengths) == functions
    assert lengths.mean() < 0.95 * cfg.model.sequence_length

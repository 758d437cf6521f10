"""task=similarity: contrastive fine-tuning for function search, on pairs compiled from generated C projects."""

import csv
import json
import math
import shutil
from pathlib import Path

import lightning
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from torch.nn import functional as F

from undertale.data.pairs.dataset import GroupPairsDataset, pack_functions
from undertale.models.similarity import (InstructionTraceTransformerEncoderForSimilarity, info_nce,
                                         load_pretrained_encoder, pool_functions)
from undertale.runtime.runs import RunDirectory
from undertale.training.checks import ConfigError, check_config, compose_command_line

from helpers import (app_in_process, exit_code, one_line_error, run_script, train_in_process,
                     validation_mrr_before_and_after)

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")

@pytest.fixture(scope="module")
def pairs(generated_pairs) -> Path:
    return generated_pairs


def finetune_overrides(pairs: Path, pretrained: Path, steps: int) -> list[str]:
    return ["task=similarity", f"pretrained={pretrained}", f"data.pairs={pairs}", "data.levels=[O0,O3]",
            "data.batch_size=8", "data.max_tokens=128", "trainer=cpu", "callbacks=none", f"trainer.max_steps={steps}",
            "trainer.val_check_interval=4", "trainer.log_every_n_steps=1", "optimizer.lr=1e-3", "optimizer.warmup=0"]


def test_info_nce_equals_the_hand_computed_value():
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    b = torch.tensor([[0.6, 0.8], [0.0, 1.0]])
    t = 0.5
    # a0 vs b: similarities 0.6, 0.0 (own first); a1: 0.8, 1.0 (own second)
    forward = (-math.log(math.exp(0.6 / t) / (math.exp(0.6 / t) + math.exp(0.0 / t)))
               - math.log(math.exp(1.0 / t) / (math.exp(0.8 / t) + math.exp(1.0 / t)))) / 2
    # b0 vs a: 0.6, 0.8 (own first); b1: 0.0, 1.0 (own second)
    backward = (-math.log(math.exp(0.6 / t) / (math.exp(0.6 / t) + math.exp(0.8 / t)))
                - math.log(math.exp(1.0 / t) / (math.exp(0.0 / t) + math.exp(1.0 / t)))) / 2
    assert info_nce(a, b, t).item() == pytest.approx((forward + backward) / 2, rel=1e-6)
    # a rank's rows among gathered candidates: the same value when the other rank's rows are far away
    far = -torch.ones(2, 2) / math.sqrt(2)
    gathered = info_nce(a, b, t, a_all=torch.cat([far, a]), b_all=torch.cat([far, b]), offset=2)
    assert gathered.item() > info_nce(a, b, t).item()  # more negatives: a larger loss
    assert gathered.item() == pytest.approx(info_nce(a, b, t, a_all=torch.cat([a, far]), b_all=torch.cat([b, far])).item())


@pytest.mark.parametrize("neighbours", [0.0, 0.5])
def test_a_batch_never_holds_a_group_twice_and_pairs_two_different_variants(neighbours):
    rng = np.random.default_rng(0)
    variants = [[[group * 10 + variant] * 3 for variant in range(rng.integers(2, 5))] for group in range(101)]
    seen = []
    for rank in range(2):
        dataset = GroupPairsDataset(variants, groups_per_batch=8, length=16, pad_id=0, rank=rank, world_size=2,
                                    neighbours=neighbours)
        assert len(dataset) == 101 // 8 // 2
        for batch in dataset:
            owner, tokens = batch["owner"], batch["tokens"]
            first = [int(tokens[owner == index][0]) for index in range(int(batch["functions"]))]
            groups_a, groups_b = [token // 10 for token in first[:8]], [token // 10 for token in first[8:]]
            assert len(set(groups_a)) == 8 and groups_a == groups_b, "K distinct groups, a and b of the same group"
            assert all(x % 10 != y % 10 for x, y in zip(first[:8], first[8:])), "two different variants"
            seen.extend(groups_a)
    assert len(seen) == len(set(seen)), "a group is in one batch of the epoch, across ranks"
    runs = [batch for rank in range(2) for batch in
            GroupPairsDataset(variants, 8, 16, 0, rank=rank, world_size=2, neighbours=neighbours).batch_groups()
            if np.all(np.diff(np.sort(batch)) == 1)]
    assert len(runs) == round(neighbours * 12), "the asked fraction of batches are runs of neighbouring groups"
    dataset = GroupPairsDataset(variants, groups_per_batch=8, length=16, pad_id=0, neighbours=neighbours)
    full = [batch["tokens"] for batch in dataset]
    dataset.resume_at(3)
    resumed = [batch["tokens"] for batch in dataset]
    assert len(resumed) == len(full) - 3 and all(torch.equal(x, y) for x, y in zip(resumed, full[3:]))
    dataset.set_epoch(1)
    assert not torch.equal(next(iter(dataset))["tokens"], full[0]), "each epoch pairs other groups"


def test_more_variants_per_group_make_blocks_of_the_same_groups_with_distinct_variants_first():
    rng = np.random.default_rng(1)
    variants = [[[group * 10 + variant] * 3 for variant in range(rng.integers(2, 5))] for group in range(40)]
    dataset = GroupPairsDataset(variants, groups_per_batch=8, length=16, pad_id=0, variants_per_group=4)
    repeats = 0
    for batch in dataset:
        owner, tokens, chosen = batch["owner"], batch["tokens"], batch["variant"]
        first = [int(tokens[owner == index][0]) for index in range(int(batch["functions"]))]
        assert len(first) == 32 and chosen.shape == (4, 8)
        blocks = np.array(first).reshape(4, 8)
        assert (blocks // 10 == blocks[0] // 10).all(), "each block holds the same 8 groups, in the same order"
        assert np.array_equal(blocks % 10, chosen.numpy()), "variant names the variant each function is"
        for column in range(8):
            count = len(variants[blocks[0, column] // 10])
            picked = chosen[:, column].tolist()
            assert len(set(picked[:min(4, count)])) == min(4, count), "all different as far as the group has them"
            repeats += 4 - len(set(picked))
    assert repeats > 0, "groups of 2 or 3 variants repeat some"
    two = GroupPairsDataset(variants, groups_per_batch=8, length=16, pad_id=0)
    assert next(iter(two))["variant"].shape == (2, 8)
    with pytest.raises(ValueError, match="variants_per_group must be >= 2"):
        GroupPairsDataset(variants, 8, 16, 0, variants_per_group=1)


def test_the_loss_of_more_variants_is_the_mean_over_every_two_blocks_without_repeats():
    torch.manual_seed(0)
    model = InstructionTraceTransformerEncoderForSimilarity(depth=1, hidden_dimensions=16, vocab_size=50,
                                                            sequence_length=16, heads=2, intermediate_dimensions=32,
                                                            next_token_id=5, dropout=0.0, eps=1e-12, temperature=0.1)
    embeddings = F.normalize(torch.randn(12, 8), dim=-1)                       # 3 blocks of 4 groups
    a, b, c = embeddings[:4], embeddings[4:8], embeddings[8:]
    variant = torch.tensor([[0, 0, 1, 2], [1, 2, 0, 0], [2, 0, 3, 0]])   # group 1: c repeats a; group 3: c repeats b
    loss, accuracy, candidates = model._contrast(embeddings, variant)
    keep_ac, keep_bc = torch.tensor([True, False, True, True]), torch.tensor([True, True, True, False])
    # the mean over every kept query: 4 of a-b, 3 of a-c, 3 of b-c
    expected = (4 * info_nce(a, b, 0.1) + 3 * info_nce(a, c, 0.1, keep=keep_ac)
                + 3 * info_nce(b, c, 0.1, keep=keep_bc)) / 10
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6) and candidates == 4.0
    assert info_nce(a, c, 0.1, keep=torch.zeros(4, dtype=torch.bool)).item() == 0.0  # nothing kept: no NaN

    class OtherRank:  # rank 1 of 2; all_gather puts the other rank's rows first
        world_size, global_rank = 2, 1
    far = F.normalize(torch.randn(4, 8), dim=-1)
    model._trainer = OtherRank()
    model.all_gather = lambda tensor, sync_grads: torch.stack([far, tensor])
    try:
        gathered_loss, _, gathered_candidates = model._contrast(embeddings, variant)
    finally:
        model._trainer = None
        del model.all_gather

    def ranked(x, y, keep=None):
        return info_nce(x, y, 0.1, torch.cat([far, x]), torch.cat([far, y]), offset=4, keep=keep)
    expected = (4 * ranked(a, b) + 3 * ranked(a, c, keep_ac) + 3 * ranked(b, c, keep_bc)) / 10
    assert gathered_candidates == 8.0 and gathered_loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert gathered_loss.item() > loss.item(), "the other rank's rows are negatives of every block"
    assert model._contrast(embeddings[:8], variant[:2])[0].item() == pytest.approx(info_nce(a, b, 0.1).item())
    assert model._contrast(embeddings[:8])[0].item() == pytest.approx(info_nce(a, b, 0.1).item())
    # a row left out is a query no more, but still a candidate for the others
    rows = [0, 2, 3]
    forward = F.cross_entropy(a[rows] @ c.T / 0.1, torch.tensor(rows))
    backward = F.cross_entropy(c[rows] @ a.T / 0.1, torch.tensor(rows))
    assert info_nce(a, c, 0.1, keep=keep_ac).item() == pytest.approx(((forward + backward) / 2).item(), rel=1e-6)
    # a training step on batches of four variants, with the entry view
    groups = [[list(rng_ids) for rng_ids in np.random.default_rng(group).integers(6, 50, (count, 20))]
              for group, count in enumerate([4, 2, 3, 4] * 4)]
    model.hparams.entry_weight = 0.5
    trainer = lightning.Trainer(accelerator="cpu", max_steps=2, logger=False, enable_checkpointing=False,
                                enable_progress_bar=False, enable_model_summary=False)
    batches = GroupPairsDataset(groups, groups_per_batch=8, length=16, pad_id=0, variants_per_group=4)
    trainer.fit(model.train(), train_dataloaders=torch.utils.data.DataLoader(batches, batch_size=None))
    logged = {key: float(value) for key, value in trainer.callback_metrics.items()}
    assert trainer.global_step == 2 and math.isfinite(logged["train/loss"]) and logged["train/candidates"] == 8


def test_packed_rows_keep_each_function_and_pooling_matches_one_function_per_row():
    functions = [list(range(1, 40)), list(range(50, 55)), list(range(60, 130)), [7]]
    packed = pack_functions(functions, 32, pad_id=0, packing=True)
    plain = pack_functions(functions, 32, pad_id=0, packing=False)
    assert packed["tokens"].shape[0] < plain["tokens"].shape[0]
    for batch in (packed, plain):
        for index, ids in enumerate(functions):
            assert sorted(batch["tokens"][batch["owner"] == index].tolist()) == sorted(ids)
    hidden = torch.randn(1, 8, 4)
    owner = torch.tensor([[0, 0, 1, 1, 1, 0, -1, -1]])
    mean = pool_functions(hidden, owner, 2)
    assert torch.allclose(mean[0], hidden[0, [0, 1, 5]].mean(0)) and torch.allclose(mean[1], hidden[0, 2:5].mean(0))
    assert torch.equal(pool_functions(hidden, owner, 2, "first"), hidden[0, [0, 2]])
    both = pool_functions(hidden, owner, 3, "mean+max")                 # function 2 has no tokens
    assert both.shape == (3, 8) and torch.equal(both[:, :4], pool_functions(hidden, owner, 3))
    assert torch.equal(both[0, 4:], hidden[0, [0, 1, 5]].amax(0)) and torch.equal(both[1, 4:], hidden[0, 2:5].amax(0))
    assert torch.equal(both[2], torch.zeros(8))


def test_the_entry_view_is_each_functions_first_window_and_takes_its_share_of_the_loss():
    functions = [list(range(6, 45)), list(range(50, 55)), list(range(60, 130)), [7]] * 2
    packed = pack_functions(functions, 32, pad_id=0, packing=True)
    for index, ids in enumerate(functions):
        assert packed["entry"][packed["owner"] == index].sum() == min(len(ids), 32)
    torch.manual_seed(0)
    model = InstructionTraceTransformerEncoderForSimilarity(depth=1, hidden_dimensions=32, vocab_size=200,
                                                            sequence_length=32, heads=2, intermediate_dimensions=64,
                                                            next_token_id=5, dropout=0.0, eps=1e-12,
                                                            entry_weight=0.25).eval()
    whole, entry = model.views({key: torch.as_tensor(value) for key, value in packed.items()})
    first_windows = pack_functions([ids[:32] for ids in functions], 32, pad_id=0, packing=True)
    assert torch.allclose(entry, model({key: torch.as_tensor(value) for key, value in first_windows.items()}),
                          atol=1e-5)
    assert not torch.allclose(whole[0], entry[0], atol=1e-3) and torch.allclose(whole[1], entry[1], atol=1e-5)

    batches = [{key: torch.as_tensor(value) for key, value in packed.items()}]
    trainer = lightning.Trainer(accelerator="cpu", max_steps=1, logger=False, enable_checkpointing=False,
                                enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model.train(), train_dataloaders=torch.utils.data.DataLoader(batches, batch_size=None))
    logged = {key: float(value) for key, value in trainer.callback_metrics.items()}
    assert logged["train/entry_loss"] != pytest.approx(logged["train/whole_loss"])
    assert logged["train/loss"] == pytest.approx(0.75 * logged["train/whole_loss"] + 0.25 * logged["train/entry_loss"])


@pytest.mark.parametrize("pooling", ["mean", "mean+max"])
def test_validation_searches_with_the_vector_embed_writes(trained_run, pooling):
    from undertale.data.tokenizer import NEXT, PAD, load_tokenizer
    from undertale.inference.embedding import FunctionEncoder

    tokenizer = load_tokenizer(trained_run / "tokenizer.json", 32)
    torch.manual_seed(0)
    model = InstructionTraceTransformerEncoderForSimilarity(
        depth=1, hidden_dimensions=32, vocab_size=tokenizer.get_vocab_size(), sequence_length=32, heads=2,
        intermediate_dimensions=64, next_token_id=tokenizer.token_to_id(NEXT), dropout=0.0, eps=1e-12,
        pooling=pooling).eval()
    encoder = FunctionEncoder(model.encoder, tokenizer, pooling, projection=model.projection,
                              device=torch.device("cpu"))
    texts = [" [NEXT] ".join(["mov rax rbx", "add rax 1", "push rbp", "pop rbp"] * 12),
             "push rbp [NEXT] mov rbp rsp [NEXT] pop rbp [NEXT] ret"]
    ids = [encoder.tokenizer.encode(text).ids for text in texts]
    assert len(ids[0]) > 64 and len(ids[1]) < 32                      # three windows and more; one window
    batch = pack_functions(ids, 32, pad_id=tokenizer.token_to_id(PAD)) | {"pair": np.array([0, 0]),
                                                                          "side": np.array([0, 1])}
    with torch.no_grad():
        model.validation_step({key: torch.as_tensor(value) for key, value in batch.items()}, 0)
    validated = model._validation[0][0].numpy()
    assert validated.shape == (2, 256)
    assert np.allclose(validated, encoder.embed(texts), atol=1e-5)


def test_a_few_steps_raise_validation_mrr_above_its_start(pairs, trained_run):
    from hydra.utils import instantiate

    cfg = compose_command_line(finetune_overrides(pairs, trained_run, steps=24))
    task = instantiate(cfg.task)
    task.check(cfg)
    lightning.seed_everything(0)
    parts = task.build(cfg, progress=False)
    before, after = validation_mrr_before_and_after(parts, 24)
    assert after > before + 0.05, (before, after)


def test_task_dropout_overrides_the_pretrained_runs_dropout_and_keeps_its_sizes(pairs, trained_run):
    from hydra.utils import instantiate

    cfg = compose_command_line(finetune_overrides(pairs, trained_run, steps=2) + ["task.dropout=0.25"])
    task = instantiate(cfg.task)
    resolved = task.resolve(cfg)
    saved = OmegaConf.load(trained_run / "config.yaml").model
    assert resolved.model.dropout == 0.25 and saved.dropout != 0.25
    assert resolved.model.hidden_dimensions == saved.hidden_dimensions and resolved.model.depth == saved.depth
    module = task.build(resolved, progress=False).module
    assert {layer.p for layer in module.modules() if isinstance(layer, torch.nn.Dropout)} == {0.25}
    assert task.resolve(resolved).model.dropout == 0.25  # resolving twice (resume) keeps it
    with pytest.raises(ConfigError, match="task.dropout must be within"):
        check_config(compose_command_line(finetune_overrides(pairs, trained_run, 2) + ["task.dropout=1.5"]))

    cfg = compose_command_line(finetune_overrides(pairs, trained_run, steps=2) + ["task.attention_dropout=0"])
    task = instantiate(cfg.task)
    resolved = task.resolve(cfg)
    assert resolved.model.attention_dropout == 0.0 and resolved.model.dropout == saved.dropout
    module = task.build(resolved, progress=False).module
    assert {layer.attention.dropout for layer in module.encoder.layers} == {0.0}
    with pytest.raises(ConfigError, match="task.attention_dropout must be within"):
        check_config(compose_command_line(finetune_overrides(pairs, trained_run, 2) + ["task.attention_dropout=-1"]))


def test_a_pretraining_run_saved_before_attention_dropout_existed_still_fine_tunes(pairs, trained_run, tmp_path):
    """Its config lacks model.attention_dropout: the field takes its default, and a model override of the same
    sizes is not a mismatch."""
    from hydra.utils import instantiate

    old = tmp_path / "old-run"
    shutil.copytree(trained_run, old, ignore=shutil.ignore_patterns("wandb", "similarity*", "evaluation*"))
    config = OmegaConf.load(old / "config.yaml")
    del config.model["attention_dropout"]
    OmegaConf.save(config, old / "config.yaml")
    depth = config.model.depth
    sizes = [f"model.{key}={value}" for key, value in config.model.items() if not key.startswith("_")]

    same = finetune_overrides(pairs, old, 2) + sizes  # the run's own sizes, given again
    check_config(compose_command_line(same), same)
    other = same + [f"model.depth={depth + 1}"]
    with pytest.raises(ConfigError, match=f"depth {depth + 1} vs {depth}\\)"):
        check_config(compose_command_line(other), other)

    cfg = compose_command_line(finetune_overrides(pairs, old, 2) + ["task.attention_dropout=0"])
    task = instantiate(cfg.task)
    module = task.build(task.resolve(cfg), progress=False).module
    assert {layer.attention.dropout for layer in module.encoder.layers} == {0.0}


def run_train(*arguments: str):
    return run_script("train.py", *arguments, check=False)


def test_a_pretrained_run_of_another_size_or_tokenizer_fails_in_one_line(pairs, trained_run, tmp_path, capsys):
    other = json.loads((trained_run / "tokenizer.json").read_text())
    other["added_tokens"] = other["added_tokens"][:-1]
    (tmp_path / "other.json").write_text(json.dumps(other))
    cases = {
        "model=small": "model sizes differ from pretrained",
        f"data.tokenizer={tmp_path / 'other.json'}": "differs from the tokenizer of pretrained",
        f"pretrained={tmp_path}": "has no config.yaml",
        "data.pairs=/nonexistent": "data.pairs: /nonexistent does not exist",
        f"data.tokenizer={tmp_path / 'missing.json'}": "does not exist",
        "data.batch_size=100000": "lower data.batch_size",
        "data.compilers=[clang]": "data.compilers holds 'clang'",
        "data.neighbour_batches=2": "neighbour_batches must be within [0, 1]",
        "data.variants_per_group=1": "variants_per_group must be an integer >= 2, got 1",
        "data.variants_per_group=3": "data.variants_per_group=3, but a group has at most 2 variants",
        "task.entry_weight=1.5": "entry_weight must be within [0, 1], got 1.5",
    }
    for index, (override, message) in enumerate(cases.items()):  # train.py's work, in this process
        code = exit_code(train_in_process, *finetune_overrides(pairs, trained_run, 2), override,
                         f"hydra.run.dir={tmp_path / 'runs' / str(index)}")
        lines = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and message in lines[0], (code, lines)
    small = InstructionTraceTransformerEncoderForSimilarity(depth=1, hidden_dimensions=32, vocab_size=50,
                                                            sequence_length=64, heads=2, intermediate_dimensions=64,
                                                            next_token_id=5, dropout=0.0, eps=1e-12)
    with pytest.raises(ValueError, match="does not fit this model"):
        load_pretrained_encoder(small, RunDirectory(trained_run))


@pytest.mark.e2e
def test_a_fine_tuning_mistake_is_one_line_and_exit_code_2_from_the_command(pairs, trained_run, tmp_path):
    result = run_train(*finetune_overrides(pairs, trained_run, 2), "data.variants_per_group=3",
                       f"hydra.run.dir={tmp_path / 'run'}")
    assert "data.variants_per_group=3, but a group has at most 2 variants" in one_line_error(result)


@pytest.fixture(scope="module")
def ddp_run(pairs, trained_run, tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("finetuned") / "run"
    result = run_train(*finetune_overrides(pairs, trained_run, steps=4), "trainer=ddp_cpu", "data.batch_size=4",
                       "task.pooling=mean+max", "logger=csv", f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "TF-IDF" in result.stdout
    return run_dir


@pytest.mark.e2e
@pytest.mark.xdist_group("finetuned")  # its module fixture is built once, on one worker
def test_ddp_cpu_gathers_negatives_from_both_ranks(ddp_run):
    metrics = json.loads((ddp_run / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["global_step"] == 4 and metrics["status"] == "finished"
    assert metrics["val/mrr"] is not None and metrics["baseline/tfidf_mrr"] is not None
    rows = list(csv.DictReader((ddp_run / "csv" / "metrics.csv").open()))
    candidates = {float(row["train/candidates"]) for row in rows if row.get("train/candidates")}
    assert candidates == {8.0}, "each query meets the 4 groups of both ranks"
    assert (ddp_run / "checkpoints" / "last.ckpt").is_file()


@pytest.mark.e2e
@pytest.mark.xdist_group("finetuned")  # its module fixture is built once, on one worker
def test_evaluate_a_fine_tuned_run_beside_its_pretrained_encoder(ddp_run, pairs, trained_run, capsys):
    from undertale.evaluation.entry import before_hydra, run_task

    app_in_process("evaluate", run_task, "task=similarity", f"run={ddp_run}", f"pairs={pairs}", "split=validation",
                   "logger=none", before=before_hydra)  # evaluate.py's work, in this process
    systems = json.loads((ddp_run / "similarity.json").read_text())["comparisons"]["O0-O3 (gcc)"]["systems"]
    assert list(systems) == ["model", "pretrained", "untrained", "tf-idf", "model+tf-idf"]
    assert systems["model"]["32"]["mrr"] != systems["pretrained"]["32"]["mrr"]
    assert "is ignored" not in capsys.readouterr().err  # each encoder embeds with its own pooling, unasked


@pytest.mark.e2e
@pytest.mark.xdist_group("finetuned")  # its module fixture is built once, on one worker
def test_a_fine_tuned_run_embeds_with_the_pooling_it_was_trained_with(ddp_run, capsys):
    from undertale.inference.embedding import FunctionEncoder

    encoder = FunctionEncoder.from_run(ddp_run)
    assert encoder.pooling == "mean+max" and capsys.readouterr().err == ""
    assert encoder.embed(["push rbp [NEXT] ret"]).shape == (1, 2 * 128)          # all+first: two unit vectors
    assert FunctionEncoder.from_run(ddp_run, pooling="first").pooling == "mean+max"
    assert "was fine-tuned with mean+max pooling; pooling=first is ignored" in capsys.readouterr().err


@pytest.mark.e2e
@pytest.mark.xdist_group("finetuned")  # its module fixture is built once, on one worker
def test_a_fine_tuning_run_resumes_where_it_stopped(ddp_run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(ddp_run, copy)
    result = run_train(f"resume={copy}", "trainer.max_steps=6")
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((copy / "metrics.json").read_text())
    assert metrics["global_step"] == 6 and metrics["world_size"] == 2 and metrics["status"] == "finished"
    steps = [int(row["step"]) for row in csv.DictReader((copy / "csv" / "metrics.csv").open()) if row.get("train/loss")]
    assert steps == [0, 1, 2, 3, 5, 6], ("the rows before the resume are kept, and the resumed run adds only its own "
                                        "two steps (Lightning counts them 5 and 6), not 1-4 again")

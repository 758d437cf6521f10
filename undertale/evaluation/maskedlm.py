"""Masked-LM evaluation of a trained run: ``python evaluate.py run=<run dir>``.

Loads the run's ``config.yaml``, its checkpoint (``last.ckpt`` when intact, else the newest intact one:
:meth:`~undertale.runtime.runs.RunDirectory.checkpoint`) and its own ``tokenizer.json``; prepares the
data to evaluate with that tokenizer (:mod:`.data`); masks every batch as the run did (its masking
settings, one seed per batch, no shuffling, so two evaluations give the same numbers); and reports loss,
accuracy and perplexity overall and per target class beside two frequency baselines (:mod:`.baselines`):
a table on stdout, ``evaluation.json`` in the run directory and a W&B run (job type ``evaluate``).
"""

from __future__ import annotations

import dataclasses
import json
import sys
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Sequence

from omegaconf import DictConfig, OmegaConf

from undertale.runtime.errors import UsageError
from undertale.runtime.outputs import check_cache_writable
from undertale.runtime.runs import RunDirectory
from undertale.evaluation.runlog import log_evaluation
from undertale.evaluation.data import DataChoice, cached_tokenized, choose_data, run_data, split_files

if TYPE_CHECKING:  # torch loads once the command has passed its checks
    import numpy as np
    import torch

    from undertale.models.maskedlm import InstructionTraceTransformerEncoderForMaskedLM

TRAINING_SPLIT = "the run's training split"


def checked_run(path: Optional[str]) -> RunDirectory:
    """The run directory named by ``run=``, with its config and tokenizer.

    Raises:
        UsageError: when ``run=`` is missing or names no run directory of ``train.py``.
    """
    if not path:
        raise UsageError("run=<run directory> is required: the directory train.py printed as 'run directory:'")
    run = RunDirectory(path)
    if not run.path.is_dir():
        raise UsageError(f"run directory {run} does not exist; pass the directory train.py printed as 'run directory:'")
    if not run.config.is_file():
        raise UsageError(f"{run} has no {run.config.name}; it is not a run directory written by train.py")
    if not run.tokenizer.is_file():
        raise UsageError(f"{run} has no {run.tokenizer.name}; evaluate.py needs the tokenizer the run was trained with")
    return run


def run_config(run: RunDirectory) -> DictConfig:
    """The run's ``config.yaml``.

    Raises:
        UsageError: when it lacks the model, masking or data settings.
    """
    try:
        config = OmegaConf.load(run.config)
    except Exception as error:  # OmegaConf and yaml raise several kinds for a broken file
        raise UsageError(f"cannot read {run.config}: {str(error).splitlines()[0]}") from None
    missing = [key for key in ("model", "masking", "data") if not isinstance(config.get(key), DictConfig)]
    if missing or "sequence_length" not in config.model:
        raise UsageError(f"{run.config} lacks {', '.join(missing) or 'model.sequence_length'}; it is not a "
                         "training config")
    return config


def checked_batches(value: Any) -> Optional[int]:
    """``batches=`` as a limit (None: every batch).

    Raises:
        UsageError: for anything but a positive integer or null.
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UsageError(f"batches must be a positive integer or null (every batch), got {value!r}")
    return value


def load_model(run: RunDirectory, checkpoint: Path, vocab_size: int,
               device: "torch.device") -> tuple["InstructionTraceTransformerEncoderForMaskedLM", int]:
    """The trained model in evaluation mode on ``device`` (:meth:`~undertale.runtime.runs.RunDirectory.load`),
    and the step it was saved at.

    Raises:
        UsageError: when the checkpoint is not one of an undertale model or does not fit the tokenizer.
    """
    from undertale.models.maskedlm import InstructionTraceTransformerEncoderForMaskedLM as Model

    loaded = run.load(Model, checkpoint, device)
    model = loaded.module
    if model.hparams.vocab_size != vocab_size:
        raise UsageError(f"{checkpoint} was trained with {model.hparams.vocab_size} token ids but the run's "
                         f"tokenizer.json has {vocab_size}; the run directory mixes two runs")
    return model, loaded.step


def autocast(precision: Optional[str], device: "torch.device") -> Any:
    """The run's mixed precision on a GPU (``bf16-mixed``, ``16-mixed``); full precision elsewhere."""
    import torch

    from undertale.runtime.environment import resolve_precision

    if device.type != "cuda":
        return nullcontext()
    precision = resolve_precision(precision, "gpu")
    dtype = torch.bfloat16 if "bf16" in precision else torch.float16 if precision.startswith("16") else None
    return torch.autocast("cuda", dtype=dtype) if dtype is not None else nullcontext()


def evaluate_batches(model: "InstructionTraceTransformerEncoderForMaskedLM", collator: Any, files: Sequence[Path],
                     choice: DataChoice, limit: Optional[int], precision: Optional[str]) -> tuple[dict, "np.ndarray", int]:
    """Run the model over the batches of ``files``, masked as the run masks them.

    Returns:
        The metric values (:meth:`~undertale.models.maskedlm.MaskedLMMetrics.compute`), the targets counted by
        class and token (classes x vocabulary), and the number of batches.
    """
    import torch
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    from undertale.data.dataset import TokenizedParquetDataset
    from undertale.models.maskedlm import MaskedLMMetrics
    from undertale.metrics.token_classes import CLASSES, METRIC_NAMES

    data, device = choice.data, model.device
    try:
        dataset = TokenizedParquetDataset(files, data.batch_size, shuffle=False, seed=choice.seed,
                                          shuffle_buffer=data.shuffle_buffer, drop_last=False, even_ranks=False)
    except ValueError as error:  # no rows: e.g. a held-out binary that all went to the train split
        raise UsageError(f"{choice.describe()} holds no functions ({str(error).splitlines()[0]}); "
                         "choose another split (split=all: every split)") from None
    dataset.loader_workers = max(1, data.num_workers)
    loader = DataLoader(dataset, batch_size=None, collate_fn=collator, num_workers=data.num_workers,
                        pin_memory=device.type == "cuda", prefetch_factor=4 if data.num_workers else None)
    total = len(dataset) if limit is None else min(limit, len(dataset))
    vocab_size = model.hparams.vocab_size
    metrics = MaskedLMMetrics(METRIC_NAMES).to(device)
    targets = torch.zeros(len(CLASSES) * vocab_size, dtype=torch.long, device=device)
    done = 0
    with torch.no_grad(), autocast(precision, device):
        for batch in tqdm(loader, total=total, desc="evaluate", unit="batch", dynamic_ncols=True, file=sys.stderr):
            if done == total:
                break
            batch = {name: value.to(device, non_blocking=True) for name, value in batch.items()}
            logits, labels = model.masked_logits(batch)
            classes = model.classify_targets(batch)
            metrics.update(logits, labels, classes)
            targets += torch.bincount(classes * vocab_size + labels, minlength=len(targets))
            done += 1
    values = metrics.compute()
    return values, targets.view(len(CLASSES), vocab_size).cpu().numpy(), done


def baseline_files(choice: DataChoice, prepared: Path, evaluated: list[Path], config: DictConfig,
                   run: RunDirectory) -> tuple[list[Path], str]:
    """The shards whose token counts give the baselines, and where they come from in words."""
    from undertale.data.encode import tokenized_files

    if choice.own:
        directory: Optional[Path] = prepared
    else:
        settings = run_data(config, run)
        directory = cached_tokenized(settings, run.tokenizer, int(config.model.sequence_length)) if settings else None
    if directory is not None:
        try:
            return tokenized_files(directory, "train"), TRAINING_SPLIT
        except FileNotFoundError:
            pass
    return evaluated, "the evaluated data (the run's training split is not in the cache)"


def unpacked_files(choice: DataChoice, files: list[Path], sequence_length: int) -> list[Path]:
    """The shards of ``files`` before packing (packed rows mix functions, so they keep no ``architecture``)."""
    if not choice.data.packing:
        return files
    unpacked = dataclasses.replace(choice.data, packing=False).prepare(sequence_length, progress=False)
    return split_files(unpacked.tokenized, choice.split)


def evaluate(cfg: DictConfig, overrides: Sequence[str]) -> dict:
    """Evaluate the run named by ``cfg.run``; print the table, write ``evaluation.json``, log a W&B run.

    Arguments:
        cfg: the composed ``conf/evaluate.yaml``.
        overrides: the command-line overrides (to tell the run's own data from other data).

    Returns:
        The contents of ``evaluation.json``.

    Raises:
        UsageError: for a mistake in the command or a run that cannot be evaluated, before any work.
    """
    run = checked_run(cfg.get("run"))
    config = run_config(run)
    checkpoint = run.checkpoint()
    choice = choose_data(cfg, config, run, overrides)
    limit = checked_batches(cfg.get("batches"))
    check_cache_writable(choice.data.cache)

    import torch

    from undertale.data.tokenizer import load_tokenizer, special_ids
    from undertale.models.masking import build_collator
    from undertale.evaluation.baselines import Baselines, class_token_counts
    from undertale.evaluation.architectures import architecture_table, files_by_architecture
    from undertale.evaluation.report import flat_metrics, summarise, table
    from undertale.metrics.token_classes import token_class_table

    sequence_length = int(config.model.sequence_length)
    try:
        tokenizer = load_tokenizer(run.tokenizer, sequence_length)
        collator = build_collator(config.masking, tokenizer)
    except Exception as error:  # a broken tokenizer.json, or a masking.exclude token it lacks
        raise UsageError(f"{run.tokenizer}: {str(error).splitlines()[0]}") from None
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model, step = load_model(run, checkpoint, special_ids(tokenizer)["vocab_size"], device)
    table_of_classes = token_class_table(tokenizer)
    model.set_token_classes(table_of_classes)
    try:
        prepared = choice.data.prepare(sequence_length)
    except (ValueError, FileNotFoundError) as error:
        raise UsageError(str(error).splitlines()[0]) from None
    files = split_files(prepared.tokenized, choice.split)
    counted, source = baseline_files(choice, prepared.tokenized, files, config, run)
    baselines = Baselines.from_counts(class_token_counts(counted, table_of_classes, collator.exclude_ids.tolist()), source)

    print(f"evaluate: {run} at step {step} ({checkpoint.name}) on {choice.describe()}")
    values, targets, batches = evaluate_batches(model, collator, files, choice, limit,
                                                OmegaConf.select(config, "trainer.precision"))
    result = {
        **summarise(values, targets, baselines, tokenizer.id_to_token),
        "run": str(run.path), "checkpoint": str(checkpoint), "step": step, "split": choice.split,
        "data": {"own": choice.own, "source": choice.data.source, "paths": list(choice.data.paths or []) or None,
                 "directory": choice.data.directory, "prepared": str(prepared.tokenized),
                 "description": choice.describe()},
        "batches": batches, "batch_size": choice.data.batch_size, "seed": choice.seed,
        "masking": OmegaConf.to_container(config.masking, resolve=True),
        "baseline_counts": source,
    }
    print(table(result))
    print(f"{batches:,} batches of {choice.data.batch_size}; baselines: token counts of {source}")
    with files_by_architecture(unpacked_files(choice, files, sequence_length)) as by_architecture:
        for name, own in by_architecture.items():  # a split of several instruction sets: each one alone too
            values, targets, _ = evaluate_batches(model, collator, own, choice, limit,
                                                  OmegaConf.select(config, "trainer.precision"))
            result.setdefault("architectures", {})[name] = summarise(values, targets, baselines, tokenizer.id_to_token)
    if "architectures" in result:
        print(f"\nper instruction set (each evaluated alone, one function per row, "
              f"{f'at most {limit}' if limit else 'all'} batches):")
        print(architecture_table(result))
    run.evaluation.write_text(json.dumps(result, indent=2, allow_nan=False))
    print(f"written: {run.evaluation}")
    log_run(cfg, run, result, flat_metrics(result))
    return result


def log_run(cfg: DictConfig, run: RunDirectory, result: dict, metrics: dict[str, float]) -> None:
    """The evaluation as a run in the training run's group (job type ``evaluate``), files under ``<run>/evaluation/``."""
    config = {key: result[key] for key in ("run", "checkpoint", "step", "split", "data", "batches", "batch_size",
                                           "seed", "masking", "baseline_counts")}
    log_evaluation(cfg, run, "evaluation", "evaluate", f"evaluate {result['split']} step {result['step']}", config, metrics,
                   result["step"])

"""Callbacks of the training entry: data epochs, throughput/MFU, summary, progress, divergence, preemption."""

from __future__ import annotations

import datetime
import logging
import math
import os
import signal
import sys
import threading
import time
from contextlib import nullcontext
from typing import Any, Callable, ContextManager, Optional

import lightning
import torch
from lightning.pytorch.callbacks import ModelSummary as LightningModelSummary
from lightning.pytorch.callbacks import RichProgressBar
from lightning.pytorch.utilities.rank_zero import rank_zero_info

from undertale.data.workers import STOP_SIGNALS
from undertale.runtime.environment import peak_bf16_flops
from undertale.models.flops import count_parameters, training_flops_per_token
from undertale.training.checkpointing import RunCheckpoint


def peak_flops(device: torch.device) -> Optional[float]:
    """Known dense bf16 peak of a CUDA device in FLOP/s, or None (CPU, unknown card)."""
    if device.type != "cuda":
        return None
    return peak_bf16_flops(torch.cuda.get_device_name(device))


log = logging.getLogger(__name__)


class DataEpoch(lightning.Callback):
    """Tell the data module which epoch starts, so its streaming dataset reshuffles.

    When training ends inside an epoch (``max_steps``, a stop signal), Lightning counts that epoch as done:
    the run would report the next epoch, and a run continued from its last checkpoint with more steps would
    skip the epoch's remaining batches. The epoch is kept unfinished instead, as in a checkpoint written
    mid-epoch, so ``metrics.json``, ``last.ckpt`` and a continued run agree with the step count.
    """

    def on_train_epoch_start(self, trainer: lightning.Trainer, pl_module: lightning.LightningModule) -> None:
        datamodule = getattr(trainer, "datamodule", None)
        if datamodule is not None and hasattr(datamodule, "on_train_epoch_start"):
            datamodule.on_train_epoch_start()

    def on_train_end(self, trainer: lightning.Trainer, pl_module: lightning.LightningModule) -> None:
        # runs before the checkpoint callbacks' on_train_end (Lightning puts them last), so last.ckpt has it too
        fit = trainer.fit_loop
        epochs, batches = fit.epoch_progress, fit.epoch_loop.batch_progress
        if epochs.current.completed == epochs.current.started > 0 and batches.current.completed > 0 \
                and not batches.is_last_batch:
            for counts in (epochs.total, epochs.current):  # started, not processed: as a run stopped mid-epoch
                counts.processed -= 1
                counts.completed -= 1


class ThroughputMonitor(lightning.Callback):
    """Log ``train/tokens_per_sec`` (real, non-padding tokens, all ranks) and ``train/mfu``.

    ``train/mfu`` is model FLOPs over the card's dense bf16 *spec* peak (see
    :data:`undertale.runtime.environment.PEAK_BF16_TFLOPS`), on cards with a known peak.
    Tokens are counted on the device and read back only every
    ``log_every_n_steps`` optimizer steps (the steps at which Lightning writes to the loggers), so the hot
    loop never waits on the host.

    Arguments:
        flops_per_token: training FLOPs per token of the model (for MFU).
    """

    def __init__(self, flops_per_token: Optional[float] = None):
        self.flops_per_token = flops_per_token
        self.tokens: Optional[torch.Tensor] = None
        self.started: Optional[float] = None
        self.peak: Optional[float] = None
        self._logged_step: Optional[int] = None

    def on_train_start(self, trainer: lightning.Trainer, pl_module: lightning.LightningModule) -> None:
        self.peak = peak_flops(pl_module.device)
        self._reset(pl_module.device)

    def _reset(self, device: torch.device) -> None:
        self.tokens = torch.zeros((), dtype=torch.long, device=device)
        self.started = time.perf_counter()

    def on_train_batch_end(self, trainer: lightning.Trainer, pl_module: lightning.LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        self.tokens += (batch["mask"] != 0).sum()
        step = trainer.global_step
        if step == self._logged_step or (step % max(1, trainer.log_every_n_steps) and not trainer.is_last_batch):
            return
        self._logged_step = step
        elapsed = time.perf_counter() - self.started
        tokens = trainer.strategy.reduce(self.tokens.float(), reduce_op="sum")
        rate = float(tokens) / max(elapsed, 1e-9)
        metrics = {"train/tokens_per_sec": rate}
        if self.peak and self.flops_per_token:
            metrics["train/mfu"] = rate * self.flops_per_token / (self.peak * trainer.world_size)
        pl_module.log_dict(metrics, rank_zero_only=True)
        self._reset(pl_module.device)

    def on_validation_end(self, trainer: lightning.Trainer, pl_module: lightning.LightningModule) -> None:
        if self.tokens is not None:  # validation time is not training throughput
            self._reset(pl_module.device)


class ModelSummary(LightningModelSummary):
    """One line instead of Lightning's table: parameters, size and training FLOPs per token."""

    def on_fit_start(self, trainer: lightning.Trainer, pl_module: lightning.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        total = count_parameters(pl_module)
        trainable = sum(p.numel() for p in pl_module.parameters() if p.requires_grad)
        line = f"model: {type(pl_module).__name__}, {total / 1e6:.1f}M parameters ({trainable / 1e6:.1f}M trainable)"
        hparams = dict(pl_module.hparams)
        if {"depth", "hidden_dimensions", "intermediate_dimensions", "vocab_size", "sequence_length"} <= hparams.keys():
            line += f", {training_flops_per_token(**hparams) / 1e9:.3f} GFLOP per token to train"
        rank_zero_info(line)


def _duration(seconds: float) -> str:
    return str(datetime.timedelta(seconds=round(seconds))) if math.isfinite(seconds) else "?"


class StepLog(lightning.Callback):
    """One line every ``trainer.log_every_n_steps`` steps: step, loss, tokens/s, elapsed time and ETA; and one
    after each validation with its metrics.

    The lines go to the run's log (``train.log``) and to stdout when no progress bar is drawn there: stdout is
    not a terminal (``nohup``, SLURM, CI), or the run has none (``callbacks.progress_bar=null``). Tokens per
    second are :class:`ThroughputMonitor`'s (listed before this callback); the ETA extrapolates this process's
    seconds per step over the steps left.
    """

    def __init__(self):
        self.started: Optional[float] = None
        self.first_step = 0
        self.total: float = math.inf
        self._last_step: Optional[int] = None
        self._to_stdout = False

    def on_train_start(self, trainer: lightning.Trainer, pl_module: lightning.LightningModule) -> None:
        self.started = time.monotonic()
        self.first_step = trainer.global_step  # a resumed run counts on from its checkpoint's step
        self.total = trainer.estimated_stepping_batches
        self._to_stdout = not sys.stdout.isatty() or trainer.progress_bar_callback is None

    def _write(self, line: str) -> None:
        log.info(line)
        if self._to_stdout:
            print(line, flush=True)

    def on_train_batch_end(self, trainer: lightning.Trainer, pl_module: lightning.LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        step = trainer.global_step
        if step == self._last_step or step % max(1, trainer.log_every_n_steps) or self.started is None:
            return
        self._last_step = step
        if not trainer.is_global_zero:
            return
        metrics = trainer.callback_metrics
        total = self.total
        elapsed = time.monotonic() - self.started
        per_step = elapsed / max(1, step - self.first_step)
        parts = [f"step {step}/{total if math.isfinite(total) else '?'}"]
        if "train/loss" in metrics:
            parts.append(f"loss {float(metrics['train/loss']):.4f}")
        if "train/tokens_per_sec" in metrics:
            parts.append(f"{float(metrics['train/tokens_per_sec']):,.0f} tokens/s")
        parts += [f"elapsed {_duration(elapsed)}", f"ETA {_duration(per_step * max(0.0, total - step))}"]
        self._write("  ".join(parts))

    def on_validation_end(self, trainer: lightning.Trainer, pl_module: lightning.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero or self.started is None:
            return
        metrics = {key: float(value) for key, value in trainer.callback_metrics.items() if key.startswith("val/")}
        if metrics:
            shown = "  ".join(f"{key} {value:.4f}" for key, value in sorted(metrics.items()))
            self._write(f"validation at step {trainer.global_step}: {shown}")


class ProgressBar(RichProgressBar):
    """Lightning's rich progress bar, without the ``Epoch 1/-2`` of step-bounded runs (``max_epochs=-1``)
    and without the logger's version number (``v_num``); on a resumed run it counts this epoch's batches from
    where the run stopped, to the last batch this run will train in it.
    """

    @property
    def total_train_batches(self) -> int | float:
        trainer = self.trainer
        batches = trainer.num_training_batches
        if trainer.max_steps is None or trainer.max_steps <= 0:
            return batches
        # Lightning's own is the steps left, counted from batch 0 even when a resumed run starts mid-epoch
        fit = trainer.fit_loop
        starting = fit.epoch_progress.current.ready > fit.epoch_progress.current.started  # on_train_epoch_start
        done = 0 if starting else fit.epoch_loop.batch_progress.current.processed
        left = (trainer.max_steps - trainer.global_step) * trainer.accumulate_grad_batches
        return min(batches, done + left)

    def get_metrics(self, trainer: lightning.Trainer, pl_module: lightning.LightningModule) -> dict[str, Any]:
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)
        return metrics

    def _get_train_description(self, current_epoch: int) -> str:
        description = f"Epoch {current_epoch}"
        max_epochs = self.trainer.max_epochs
        if max_epochs is not None and max_epochs > 0:
            description += f"/{max_epochs - 1}"
        if len(self.validation_description) > len(description):
            description = f"{description:{len(self.validation_description)}}"
        return description


POLICIES = ("stop", "skip")  # NonFiniteLossGuard's; checked before torch loads by undertale.training.checks


class NonFiniteLossGuard(lightning.Callback):
    """Stop (or skip steps) when the loss or gradients are not finite, before the weights are touched.

    Before each optimizer step the gradients' norms are checked (one device
    sync per step). A non-finite step never updates the weights: its gradients
    are dropped. With ``policy="stop"`` training stops at once; with
    ``policy="skip"`` it goes on and stops after ``max_skips`` such steps in a
    row. After ``fit``, :attr:`diverged` holds the message.

    Arguments:
        policy: ``stop`` or ``skip``.
        max_skips: with ``skip``, non-finite steps in a row before stopping.

    Raises:
        ValueError: for an unknown policy or a negative ``max_skips``.
    """

    def __init__(self, policy: str = "stop", max_skips: int = 10):
        if policy not in POLICIES:
            raise ValueError(f"policy must be one of {', '.join(POLICIES)}, got {policy!r}")
        if isinstance(max_skips, bool) or not isinstance(max_skips, int) or max_skips < 0:
            raise ValueError(f"max_skips must be an integer >= 0, got {max_skips!r}")
        self.policy = policy
        self.max_skips = max_skips
        self.in_a_row = 0
        self.skipped = 0
        self.diverged: Optional[str] = None
        self._dropped = False

    def on_before_optimizer_step(self, trainer: lightning.Trainer, pl_module: lightning.LightningModule,
                                 optimizer: torch.optim.Optimizer) -> None:
        if str(trainer.precision).startswith("16"):  # fp16's grad scaler skips overflowing steps itself
            return
        parameters = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if not parameters:
            return
        norms = torch._foreach_norm([p.grad for p in parameters])
        if bool(torch.isfinite(torch.stack(norms)).all()):
            return
        for parameter in parameters:  # AdamW skips parameters without gradients: no update, no decay
            parameter.grad = None
        self._dropped = True

    def on_train_batch_end(self, trainer: lightning.Trainer, pl_module: lightning.LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        value = float(loss) if isinstance(loss, torch.Tensor) and self._dropped else None
        if not self._dropped:
            self.in_a_row = 0
            return
        self._dropped = False
        self.in_a_row += 1
        self.skipped += 1
        step = trainer.global_step
        what = f"loss {value}" if value is not None and not math.isfinite(value) else f"non-finite gradients (loss {value})"
        if self.policy == "stop" or self.in_a_row > self.max_skips:
            reason = "" if self.policy == "stop" else f" after {self.in_a_row} non-finite steps in a row"
            self.diverged = (
                f"training diverged at step {step}: {what}{reason}; the weights of step {step - self.in_a_row} "
                "were kept (lower optimizer.lr, or set callbacks.divergence.policy=skip)"
            )
            trainer.should_stop = True
        else:
            rank_zero_info(f"step {step}: {what}; step skipped ({self.in_a_row} in a row)")


class StopTraining(Exception):
    """Raised by :class:`Preemption` to leave ``fit`` at once, from inside a validation; the checkpoint is saved,
    and the training entry ends the run as preempted."""


class Preemption(lightning.Callback):
    """On SIGTERM, SIGUSR1 or Ctrl-C (SIGINT), save ``last.ckpt`` at the next step boundary and stop at once.

    SLURM sends SIGTERM before it kills a job, and SIGUSR1 ahead of the time
    limit with ``#SBATCH --signal=USR1@<seconds>``. The signal is forwarded to
    the other local ranks, and the ranks agree at each step so that all of them
    save together. Nothing runs after the save: no validation, no probes. A signal that arrives
    during a validation ends it at its next batch, unfinished and not redone on resume (one process;
    DDP ranks finish it, then stop at the next step). A second Ctrl-C aborts at once, without saving.

    After ``fit``, :attr:`signum` is the signal that stopped training (None if none) and
    :attr:`aborted` whether a second Ctrl-C aborted it.
    """

    SIGNALS = STOP_SIGNALS  # the loader workers let the first one pass (undertale.data.workers)

    def __init__(self):
        self.signum: Optional[int] = None
        self.saved: Optional[str] = None
        self.aborted = False
        self._received: Optional[int] = None
        self._previous: dict[int, Any] = {}
        self._launcher: Any = None
        self._announce = False

    def on_train_start(self, trainer: lightning.Trainer, pl_module: lightning.LightningModule) -> None:
        self._launcher = trainer.strategy.launcher
        self._announce = trainer.is_global_zero
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in self.SIGNALS:  # replaces Lightning's handlers, which save nothing and exit 0 (or 1 on Ctrl-C)
            self._previous[signum] = signal.getsignal(signum)
            signal.signal(signum, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        if signum == signal.SIGINT and self._received == signal.SIGINT:
            self.aborted = True  # a second Ctrl-C: abort now, as Python does
            signal.signal(signal.SIGINT, signal.default_int_handler)
            raise KeyboardInterrupt
        if self._received is None:
            if signum == signal.SIGINT and self._announce:  # a raw write: the handler may have interrupted a print
                os.write(sys.stderr.fileno(), b"\nCtrl-C: saving at the end of this step, then stopping "
                                              b"(Ctrl-C again aborts at once, without saving)\n")
            if self._launcher is not None and hasattr(self._launcher, "kill"):
                self._launcher.kill(signum)  # the other local ranks, when this process started them
        self._received = signum

    def _stop(self, trainer: lightning.Trainer) -> None:
        self.signum = self._received or signal.SIGTERM
        checkpoint = trainer.checkpoint_callback
        if isinstance(checkpoint, RunCheckpoint) and checkpoint.write_last(trainer):
            self.saved = str(checkpoint.last_path)

    def on_train_batch_end(self, trainer: lightning.Trainer, pl_module: lightning.LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        received = self._received is not None
        if trainer.world_size > 1:
            received = trainer.strategy.reduce_boolean_decision(received, all=False)
        if not received:
            return
        self._stop(trainer)
        trainer.should_stop = True
        trainer.limit_val_batches = 0  # Lightning validates once more before it stops: not now

    def on_validation_batch_end(self, trainer: lightning.Trainer, pl_module: lightning.LightningModule,
                                outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        # one process only: DDP ranks may hold different numbers of validation batches, so they could not agree
        # on one batch to stop at
        if self._received is None or trainer.world_size > 1 or trainer.sanity_checking or trainer.state.fn != "fit":
            return
        self._stop(trainer)  # the weights are those of the last step; this validation is dropped, not redone
        raise StopTraining(self.message(trainer.global_step))

    def teardown(self, trainer: lightning.Trainer, pl_module: lightning.LightningModule, stage: str) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        self._previous = {}

    def message(self, step: int) -> str:
        """What stopped training and what was saved, in one line."""
        name = signal.Signals(self.signum).name if self.signum else "signal"
        what = "interrupted by SIGINT (Ctrl-C)" if self.signum == signal.SIGINT else f"preempted by {name}"
        where = f"saved {self.saved}" if self.saved else "no checkpoint saved (checkpointing is off)"
        return f"{what} at step {step}: {where}"


def slurm_requeue() -> Optional[str]:
    """Requeue this SLURM job (``scontrol requeue``); what was done, or None outside SLURM."""
    import subprocess

    job = os.environ.get("SLURM_JOB_ID")
    if not job:
        return None
    if os.environ.get("SLURM_ARRAY_JOB_ID"):
        job = f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ.get('SLURM_ARRAY_TASK_ID', '')}"
    try:
        result = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as error:
        return f"could not requeue SLURM job {job}: {error}"
    if result.returncode != 0:
        return f"could not requeue SLURM job {job}: {result.stderr.strip() or result.returncode}"
    return f"requeued SLURM job {job}"


class Probes(lightning.Callback):
    """Fill a list of probe texts at each validation; log them to W&B as a table and print them at the end.

    Each ``[MASK]`` gets the most likely token that is not a special token
    (as ``infer.py`` fills it), and the ``top`` candidates with probabilities.

    Arguments:
        probes: ``{name: text}`` (each text with at least one ``[MASK]``).
        tokenizer: the run's ``tokenizer.json`` (supplied by the training entry).
        top: candidates listed per ``[MASK]``.
    """

    COLUMNS = ["step", "probe", "text", "prediction", "top"]

    def __init__(self, probes: dict[str, str], tokenizer: Optional[str] = None, top: int = 3):
        from undertale.data.tokenizer import MASK

        empty = [name for name, text in probes.items() if MASK not in text]
        if empty:
            raise ValueError(f"probes {empty} have no {MASK} to fill")
        self.probes = dict(probes)
        self.tokenizer_path = tokenizer
        self.top = top
        self.rows: list[list[Any]] = []
        self._tokenizer = None

    def fill(self, pl_module: lightning.LightningModule,
             precision: Callable[[], ContextManager] = nullcontext) -> list[list[Any]]:
        """One row per probe: step, name, text, filled text, and the candidates of each ``[MASK]``.

        ``precision`` is the trainer's forward context (``trainer.precision_plugin.forward_context``): under
        FSDP's mixed precision the layers hold bf16 weights and the model only runs inside it.
        """
        from undertale.data.tokenizer import load_tokenizer
        from undertale.inference.fill_mask import encode, fill

        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(self.tokenizer_path)
            self._tokenizer.no_padding()
            self._tokenizer.no_truncation()
        was_training = pl_module.training
        pl_module.eval()
        rows = []
        try:
            with precision():
                for name, text in self.probes.items():
                    masked = encode(self._tokenizer, text, pl_module.hparams.sequence_length)
                    filled, found = fill(pl_module, self._tokenizer, masked, self.top)
                    top = " | ".join(", ".join(f"{token} {probability:.3f}" for token, probability in options)
                                     for options in found)
                    rows.append([pl_module.global_step, name, text, filled, top])
        finally:
            pl_module.train(was_training)
        return rows

    def on_validation_end(self, trainer: lightning.Trainer, pl_module: lightning.LightningModule) -> None:
        if trainer.sanity_checking or self.tokenizer_path is None:
            return
        # every rank runs the model: a sharded (FSDP) forward gathers its weights from all ranks
        rows = self.fill(pl_module, trainer.precision_plugin.forward_context)
        if not trainer.is_global_zero:
            return
        self.rows += rows
        for logger in trainer.loggers:
            if type(logger).__name__ == "WandbLogger":
                import wandb

                logger.experiment.log({"probes": wandb.Table(columns=self.COLUMNS, data=self.rows)},
                                      step=trainer.global_step)

    def on_train_end(self, trainer: lightning.Trainer, pl_module: lightning.LightningModule) -> None:
        if not trainer.is_global_zero or not self.rows:
            return
        last = max(row[0] for row in self.rows)
        width = max(len(row[1]) for row in self.rows)
        lines = [f"probes at step {last}:"] + [f"  {row[1]:<{width}}  {row[3]}" for row in self.rows if row[0] == last]
        print("\n".join(lines))

"""Function embeddings: one fixed-size vector per function from a trained encoder.

    encoder = FunctionEncoder.from_run("outputs/train/runs/<time>")
    vectors = encoder.embed(["push rbp [NEXT] mov rbp rsp [NEXT] ret", ...])   # (n, hidden) float32

Pooling is ``mean`` (the average of the final hidden states over the
function's tokens; default), ``first`` (the state of its first token) or
``mean+max`` (the average and the element-wise maximum side by side: twice the
width; a fine-tuned model's own pooling when it was trained with it). A
function longer than the model's sequence length is cut into consecutive
windows of that length, and each window is embedded on its own. ``windows``
says which windows make the vector:

- ``all``: the window vectors averaged, weighted by their token counts (the
  whole function); the encoder's width.
- ``first``: the first window only (the function's entry).
- ``all+first`` (default): both, each scaled to unit length, side by side and
  scaled by 1/sqrt(2). The vector has unit length and twice the width, and the
  cosine of two such vectors is the mean of the two cosines (whole function and
  entry). On held-out projects this searches better than either alone
  (``docs/results.md``). A function of one window gives the ``all`` cosine.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from tokenizers import Tokenizer
from tqdm.auto import tqdm

from undertale.data.tokenizer import PAD, load_tokenizer
from undertale.models.encoder import InstructionTraceTransformerEncoder
from undertale.models.heads import ProjectionHead
from undertale.models.pooling import pool_functions, search_vectors
from undertale.settings.similarity import POOLINGS, pooled_width
from undertale.runtime.errors import UsageError, first_line
from undertale.runtime.runs import RunDirectory

WINDOWS = ("all", "first", "all+first")
DEFAULT_WINDOWS = "all+first"


class FunctionEncoder:
    """Embed instruction-trace texts with a trained (or untrained) encoder.

    Arguments:
        encoder: an :class:`~undertale.models.encoder.InstructionTraceTransformerEncoder`.
        tokenizer: the tokenizer it was trained with.
        pooling: ``mean``, ``first`` or ``mean+max``.
        batch_size: windows per forward pass.
        device: where to run (default: a GPU when present).
        projection: a head applied to each function's pooled vector (a fine-tuned similarity model's), whose
            output is scaled to unit length.
        windows: ``all``, ``first`` or ``all+first`` (the module docstring).

    Raises:
        UsageError: for an unknown pooling or windows (a ``ValueError``).
    """

    def __init__(self, encoder: torch.nn.Module, tokenizer: Tokenizer, pooling: str = "mean", batch_size: int = 64,
                 device: Optional[torch.device] = None, projection: Optional[torch.nn.Module] = None,
                 windows: str = DEFAULT_WINDOWS):
        if pooling not in POOLINGS:
            raise UsageError(f"pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}")
        if windows not in WINDOWS:
            raise UsageError(f"windows must be one of {', '.join(WINDOWS)}, got {windows!r}")
        self.device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.encoder = encoder.to(self.device).eval()
        self.length = encoder.sequence_length
        self.tokenizer = Tokenizer.from_str(tokenizer.to_str())  # a copy: no padding or truncation of its own
        self.tokenizer.no_padding()
        self.tokenizer.no_truncation()
        self.pad_id = tokenizer.token_to_id(PAD)
        self.pooling = pooling
        self.which_windows = windows
        self.batch_size = batch_size
        self.projection = None if projection is None else projection.to(self.device).eval()

    @classmethod
    def from_run(cls, run: str | Path, pooling: Optional[str] = None, batch_size: int = 64,
                 device: Optional[torch.device] = None, untrained: bool = False, seed: int = 0,
                 windows: str = DEFAULT_WINDOWS) -> "FunctionEncoder":
        """The encoder of a run directory's checkpoint, with the run's tokenizer.

        The checkpoint is the one every command loads (:meth:`~undertale.runtime.runs.RunDirectory.checkpoint`:
        ``last.ckpt`` when intact, else the newest intact one, with a warning), into the module class the run
        trained (``model._target_`` of its ``config.yaml``).

        A fine-tuned similarity run (``task=similarity``) embeds with its projection head and its own pooling.

        Arguments:
            pooling: None for the run's own (a fine-tuned run's ``task.pooling``; ``mean`` for a pretraining
                run); a fine-tuned run ignores any other, with a note.
            untrained: the same architecture with freshly initialised weights (seeded), as a baseline.

        Raises:
            UsageError: naming what the run lacks.
        """
        directory = RunDirectory(run)
        checkpoint = directory.checkpoint()
        if not directory.tokenizer.is_file():
            raise UsageError(f"run directory {directory.path} has no tokenizer.json")
        model = directory.load(checkpoint=checkpoint).module
        if untrained:
            torch.manual_seed(seed)
            model = type(model)(**model.hparams)
        tokenizer = load_tokenizer(directory.tokenizer, model.hparams.sequence_length)
        projection = getattr(model, "projection", None)
        if projection is not None:  # a similarity model searches with the pooling it was trained with
            if pooling not in (None, model.hparams.pooling):
                print(f"note: {directory.path} was fine-tuned with {model.hparams.pooling} pooling; "
                      f"pooling={pooling} is ignored", file=sys.stderr)
            pooling = model.hparams.pooling
        pooling = pooling or "mean"
        return cls(model.encoder, tokenizer, pooling, batch_size, device, projection, windows)

    @classmethod
    def from_pretrained(cls, directory: str | Path, pooling: Optional[str] = None, batch_size: int = 64,
                        device: Optional[torch.device] = None, windows: Optional[str] = None) -> "FunctionEncoder":
        """The encoder of a directory ``export.py`` wrote (``config.json``, ``model.safetensors``,
        ``tokenizer.json``): the same vectors as :meth:`from_run` on the run it came from, without Lightning.

        Arguments:
            pooling: as for :meth:`from_run` (a fine-tuned similarity model keeps its own).
            windows: None: the exported model's own (``windows`` of ``config.json``).

        Raises:
            UsageError: for a directory that is not an export, or weights that do not fit its config.
        """
        import json

        from safetensors.torch import load_file

        directory = Path(directory).expanduser()
        missing = [name for name in ("config.json", "model.safetensors", "tokenizer.json")
                   if not (directory / name).is_file()]
        if missing:
            raise UsageError(f"{directory} is not an exported model (it has no {missing[0]}); "
                             "write one with python export.py run=<run dir> output=<dir>")
        try:
            config = json.loads((directory / "config.json").read_text())
            state = load_file(str(directory / "model.safetensors"))
            encoder = InstructionTraceTransformerEncoder(
                **{key: config[key] for key in ("depth", "hidden_dimensions", "vocab_size", "sequence_length",
                                                "heads", "intermediate_dimensions", "next_token_id", "dropout",
                                                "eps", "attention_dropout")})
            encoder.load_state_dict({key.removeprefix("encoder."): value for key, value in state.items()
                                     if key.startswith("encoder.")})
            projection = None
            if config.get("task") == "similarity":
                width = config["hidden_dimensions"]
                projection = ProjectionHead(width, config["projection_size"], pooled_width(width, config["pooling"]))
                projection.load_state_dict({key.removeprefix("projection."): value for key, value in state.items()
                                            if key.startswith("projection.")})
            tokenizer = load_tokenizer(directory / "tokenizer.json", config["sequence_length"])
        except (KeyError, ValueError, RuntimeError, OSError) as error:  # a config or weights of something else
            raise UsageError(f"cannot load the exported model in {directory}: {first_line(error)}") from None
        if projection is not None:
            if pooling not in (None, config["pooling"]):
                print(f"note: {directory} was fine-tuned with {config['pooling']} pooling; pooling={pooling} is "
                      "ignored", file=sys.stderr)
            pooling = config["pooling"]
        return cls(encoder.eval(), tokenizer, pooling or "mean", batch_size, device, projection,
                   windows or config.get("windows") or DEFAULT_WINDOWS)

    def windows(self, text: str) -> list[list[int]]:
        """The text's token ids, cut into windows of the model's sequence length."""
        return self._cut(self.tokenizer.encode(text).ids)

    def _cut(self, ids: list[int]) -> list[list[int]]:
        ids = ids or [self.pad_id]
        return [ids[start:start + self.length] for start in range(0, len(ids), self.length)]

    @torch.no_grad()
    def embed(self, texts: Sequence[str], progress: bool = False) -> np.ndarray:
        """One float32 vector per text: (len(texts), width), twice the width for ``all+first``."""
        windows, owners, firsts = [], [], []
        encodings = self.tokenizer.encode_batch(list(texts))  # one parallel call, not one per text
        for index, encoding in enumerate(encodings):
            cut = self._cut(encoding.ids)
            for position, window in enumerate(cut[:1] if self.which_windows == "first" else cut):
                windows.append(window)
                owners.append(index)
                firsts.append(position == 0)
        width = self.encoder.norm.normalized_shape[0]
        sums = np.zeros((len(texts), width), dtype=np.float64)  # the mean part: weighted by window length
        maxima = np.full((len(texts), width), -np.inf) if self.pooling == "mean+max" else None
        weights = np.zeros(len(texts), dtype=np.float64)
        entries = np.zeros((len(texts), pooled_width(width, self.pooling)), dtype=np.float64)  # first windows
        order = np.argsort([len(window) for window in windows], kind="stable")  # similar lengths together
        bar = tqdm(total=len(windows), unit="window", desc="embed", disable=not progress, dynamic_ncols=True)
        for start in range(0, len(order), self.batch_size):
            chosen = order[start:start + self.batch_size]
            longest = max(len(windows[i]) for i in chosen)
            tokens = torch.full((len(chosen), longest), self.pad_id, dtype=torch.long)
            mask = torch.zeros((len(chosen), longest), dtype=torch.long)
            for row, i in enumerate(chosen):
                tokens[row, :len(windows[i])] = torch.tensor(windows[i])
                mask[row, :len(windows[i])] = 1
            vectors = self._pool(self.encoder(tokens.to(self.device), mask.to(self.device)), mask.to(self.device))
            for row, i in enumerate(chosen):
                weight = len(windows[i])
                sums[owners[i]] += weight * vectors[row, :width]
                weights[owners[i]] += weight
                if maxima is not None:
                    maxima[owners[i]] = np.maximum(maxima[owners[i]], vectors[row, width:])
                if firsts[i]:
                    entries[owners[i]] = vectors[row]
            bar.update(len(chosen))
        bar.close()
        pooled = sums / np.maximum(weights, 1)[:, None]
        if maxima is not None:
            pooled = np.concatenate([pooled, maxima], axis=1)
        embedded = self._head(pooled)  # the windows embedded: all, or the first
        if self.which_windows != "all+first":
            return embedded
        return search_vectors(torch.from_numpy(embedded), torch.from_numpy(self._head(entries))).numpy()

    def _head(self, pooled: np.ndarray) -> np.ndarray:
        """Pooled vectors through the projection head (unit length) when there is one, float32."""
        vectors = pooled.astype(np.float32)
        if self.projection is not None and len(vectors):
            projected = self.projection(torch.from_numpy(vectors).to(self.device))
            vectors = torch.nn.functional.normalize(projected.float(), dim=-1).cpu().numpy()
        return vectors

    def _pool(self, hidden: torch.Tensor, mask: torch.Tensor) -> np.ndarray:
        """One vector per window (row), pooled as in training: :func:`~undertale.models.pooling.pool_functions`."""
        rows = torch.arange(len(hidden), device=mask.device).unsqueeze(1)
        return pool_functions(hidden, torch.where(mask.bool(), rows, -1), len(hidden), self.pooling).cpu().numpy()


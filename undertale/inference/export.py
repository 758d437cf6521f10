"""``export.py``: a run as a Hugging Face-style directory that loads without undertale or Lightning.

    python export.py run=outputs/train/runs/<time> output=undertale-model

writes, into a temporary directory beside ``output`` renamed into place at the end (nothing half-written)::

    config.json                  sizes, special token ids, the task (pooling, projection, windows), auto_map,
                                 the training steps and corpus when the run records them
    model.safetensors            the weights: encoder.*, and head.* (masked LM) or projection.* (similarity)
    tokenizer.json               the run's tokenizer, with tokenizer_config.json and special_tokens_map.json
                                 for transformers' AutoTokenizer
    README.md                    the model card
    configuration_undertale.py   remote code for AutoConfig / AutoModel / AutoModelForMaskedLM: the wrapper of
    modeling_undertale.py        undertale/inference/hub_template/, and undertale's own source files copied
    encoder.py positions.py ...  beside it (their ``from undertale...`` imports rewritten to relative ones)

Loading it three ways (``docs/export.md``): ``FunctionEncoder.from_pretrained(dir)``,
``transformers.AutoModel.from_pretrained(dir, trust_remote_code=True)``, or ``safetensors`` into
``InstructionTraceTransformerEncoder`` built from ``config.json``. ``transformers`` is not needed to export.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Optional, Sequence

from omegaconf import DictConfig

from undertale.runtime.errors import UsageError, first_line, report_usage_error
from undertale.runtime.runs import RunDirectory

PACKAGE = Path(__file__).resolve().parents[1]  # the undertale package directory
TEMPLATE = Path(__file__).resolve().parent / "hub_template"
MODEL_TYPE = "undertale"
WEIGHTS = "model.safetensors"
# the parts of a module the export keeps: its encoder, heads and pooling (weights of nothing else)
WEIGHT_PREFIXES = ("encoder.", "head.", "projection.")
# the files of the remote code: each is undertale source, whole (None) or only some of its top-level names
SOURCES: dict[str, list[tuple[str, Optional[tuple[str, ...]]]]] = {
    "positions.py": [("undertale.data.positions", None)],
    "model_settings.py": [("undertale.settings.model", ("attention_dropout_of",))],
    "encoder.py": [("undertale.models.encoder", None)],
    "pooling.py": [("undertale.models.pooling", None)],
    "heads.py": [("undertale.models.heads", None)],
    "similarity_settings.py": [("undertale.settings.similarity", ("pooled_width",))],
}
# imports an extracted part may keep (the copied files need torch and the standard library only)
KEPT_IMPORTS = ("__future__", "typing", "math", "torch")
# the encoder's keyword arguments, as config.json names them
ENCODER_ARGUMENTS = ("depth", "hidden_dimensions", "vocab_size", "sequence_length", "heads",
                     "intermediate_dimensions", "next_token_id", "dropout", "eps", "attention_dropout")
SPECIAL_TOKENS = {"pad_token": "[PAD]", "unk_token": "[UNK]", "sep_token": "[SEP]", "cls_token": "[CLS]",
                  "mask_token": "[MASK]"}


# --- the remote code: undertale's own files, copied --------------------------------------------------


def _source_path(module: str) -> Path:
    return PACKAGE.joinpath(*module.split(".")[1:]).with_suffix(".py")


def _provider(module: str) -> tuple[str, Optional[tuple[str, ...]]]:
    """The copied file that holds ``module`` (whole, or some of its names)."""
    for file, parts in SOURCES.items():
        for name, names in parts:
            if name == module:
                return file, names
    raise ValueError(f"the exported code imports {module}, which export copies nowhere; add it to SOURCES")


def _relative_import(node: ast.ImportFrom) -> str:
    """``from undertale.x.y import a, b`` as ``from .<copied file> import a, b``."""
    file, provided = _provider(node.module)
    names = [alias.name for alias in node.names]
    missing = [name for name in names if provided is not None and name not in provided]
    if missing:
        raise ValueError(f"the exported code imports {missing[0]} from {node.module}, which export does not copy")
    aliases = ", ".join(alias.name + (f" as {alias.asname}" if alias.asname else "") for alias in node.names)
    return f"from .{Path(file).stem} import {aliases}"


def _is_undertale(node: ast.AST) -> bool:
    if isinstance(node, ast.ImportFrom):
        return node.level == 0 and (node.module or "").split(".")[0] == "undertale"
    return isinstance(node, ast.Import) and any(alias.name.split(".")[0] == "undertale" for alias in node.names)


def copied_source(module: str, names: Optional[Sequence[str]]) -> tuple[list[str], list[str], str]:
    """One module's part of a copied file: its ``__future__`` imports, its other kept imports and its code.

    Whole (``names`` None): every line, each ``from undertale...`` import rewritten into a relative one.
    Some names: those top-level definitions only, with the module's torch and standard-library imports.
    """
    path = _source_path(module)
    text = path.read_text()
    tree = ast.parse(text, str(path))
    lines = text.splitlines()
    futures, imports = [], []
    if names is None:
        replaced = {}
        for node in ast.walk(tree):
            if _is_undertale(node):
                if isinstance(node, ast.Import):
                    raise ValueError(f"{path}: `import undertale...` cannot be copied; use `from ... import`")
                replaced[node.lineno - 1] = (node.end_lineno, _relative_import(node))
        kept, index = [], 0
        while index < len(lines):
            if index in replaced:
                end, line = replaced[index]
                indent = lines[index][: len(lines[index]) - len(lines[index].lstrip())]
                kept.append(indent + line)
                index = end
            else:
                kept.append(lines[index])
                index += 1
        return futures, imports, "\n".join(kept) + "\n"
    parts, found = [], set()
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)) and not _is_undertale(node):
            root = (node.module if isinstance(node, ast.ImportFrom) else node.names[0].name) or ""
            if root.split(".")[0] in KEPT_IMPORTS:
                (futures if root == "__future__" else imports).append(ast.get_source_segment(text, node))
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name in names:
            start = min([node.lineno] + [decorator.lineno for decorator in node.decorator_list]) - 1
            parts.append("\n".join(lines[start:node.end_lineno]))
            found.add(node.name)
    missing = [name for name in names if name not in found]
    if missing:
        raise ValueError(f"{path} defines no {missing[0]} (export copies it)")
    return futures, imports, "\n\n\n".join(parts) + "\n"


def remote_code_files() -> dict[str, str]:
    """Every file of the remote code: the hub template's wrapper and the copies of undertale's source files."""
    from undertale import __version__ as version

    files = {}
    for file, parts in SOURCES.items():
        futures, imports, bodies = [], [], []
        origins = []
        for module, names in parts:
            more_futures, more_imports, body = copied_source(module, names)
            futures += [line for line in more_futures if line not in futures]
            imports += [line for line in more_imports if line not in imports]
            bodies.append(body)
            origins.append(f"{_source_path(module).relative_to(PACKAGE.parent)}"
                           + ("" if names is None else f" ({', '.join(names)})"))
        header = (f"# Copied by `python export.py` (undertale {version}) from {'; '.join(origins)}.\n"
                  "# Its undertale imports point to the files beside it. Do not edit: export again instead.\n")
        if parts[0][1] is None:  # a whole file: its own imports stand where they were
            files[file] = header + "".join(bodies)
        else:
            head = "\n".join(futures + ([""] if futures else []) + imports)
            files[file] = header + "\n" + head + "\n\n\n" + "\n\n".join(bodies)
    for template in sorted(TEMPLATE.glob("*.py")):
        files[template.name] = template.read_text()
    return files


# --- what the run records ----------------------------------------------------------------------------


def _read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _read_config(run: RunDirectory) -> dict:
    if not run.config.is_file():
        return {}
    try:
        from omegaconf import OmegaConf

        value = OmegaConf.to_container(OmegaConf.load(run.config), resolve=False)
    except Exception:  # a broken config is only a missing record here: the checkpoint holds the sizes
        return {}
    return value if isinstance(value, dict) else {}


def corpus_record(config: dict, metrics: dict) -> dict:
    """The corpus the run trained on, as far as it is recorded: its fingerprint, key and counts (best effort).

    Looked for in ``metrics.json`` and ``config.yaml`` (a ``corpus`` entry), then in the ``manifest.json`` of
    the run's ``data.directory`` (``data=parquet``) or ``data.corpus``.
    """
    record = {}
    for source in (metrics.get("corpus"), config.get("corpus"), (config.get("data") or {}).get("corpus")):
        if isinstance(source, dict):
            record.update(source)
    data = config.get("data") if isinstance(config.get("data"), dict) else {}
    for key in ("directory", "corpus", "pairs"):
        directory = data.get(key)
        if isinstance(directory, str) and (Path(directory) / "manifest.json").is_file():
            manifest = _read_json(Path(directory) / "manifest.json")
            record.setdefault("directory", directory)
            record.setdefault("kind", "pairs" if key == "pairs" else "corpus")
            for field in ("fingerprint", "key", "created", "undertale_version"):
                if manifest.get(field) is not None:
                    record.setdefault(field, manifest[field])
            if isinstance(manifest.get("counts"), dict):
                record.setdefault("statistics", manifest["counts"])
            break
    if isinstance(metrics.get("corpus_fingerprint"), str):
        record.setdefault("fingerprint", metrics["corpus_fingerprint"])
    return record


def evaluations(run: RunDirectory) -> dict:
    """The run's evaluation files that exist (``evaluation*.json``, ``similarity*.json``), by file name."""
    found = {}
    for path in sorted(run.path.glob("evaluation*.json")) + sorted(run.path.glob("similarity*.json")):
        value = _read_json(path)
        if value:
            found[path.name] = value
    return found


# --- the model card ------------------------------------------------------------------------------------


def _number(value: Any, digits: int = 4) -> str:
    return f"{value:.{digits}f}" if isinstance(value, (int, float)) and not isinstance(value, bool) else "n/a"


def _evaluation_lines(found: dict, run_path: str) -> list[str]:
    """The headline numbers of ``evaluation*.json`` and ``similarity*.json``, each with its command."""
    lines = []
    for name, result in found.items():
        if name.startswith("evaluation") and isinstance(result.get("overall"), dict):
            overall = result["overall"]
            command = f"python evaluate.py run={result.get('run', run_path)}"
            if result.get("split") not in (None, "validation"):
                command += f" split={result['split']}"
            lines += [f"Masked-LM evaluation (`{name}`, step {result.get('step', 'n/a')}, "
                      f"{(result.get('data') or {}).get('description', 'its data')}), from `{command}`:", "",
                      "| targets | accuracy | loss | perplexity | most-frequent-token baseline |",
                      "| --- | --- | --- | --- | --- |",
                      f"| {overall.get('count', 'n/a')} | {_number(overall.get('accuracy'))} | "
                      f"{_number(overall.get('loss'))} | {_number(overall.get('perplexity'), 2)} | "
                      f"{_number(overall.get('baseline_most_frequent'))} |", ""]
        elif name.startswith("similarity") and isinstance(result.get("comparisons"), dict):
            command = (f"python evaluate.py task=similarity run={result.get('run', run_path)} "
                       f"pairs={result.get('pairs', '<pairs>')} split={result.get('split', 'validation')}")
            lines += [f"Function search (`{name}`: MRR and Recall@1 of each query among a pool of candidates, "
                      f"windows={result.get('windows', 'n/a')}), from `{command}`:", "",
                      "| comparison | system | pool | MRR | Recall@1 | queries |", "| --- | --- | --- | --- | --- | --- |"]
            for comparison, entry in result["comparisons"].items():
                for system, pools in (entry.get("systems") or {}).items():
                    for pool, scores in (pools or {}).items():
                        if isinstance(scores, dict):
                            lines.append(f"| {comparison} | {system} | {pool} | {_number(scores.get('mrr'))} | "
                                         f"{_number(scores.get('recall@1'))} | {scores.get('queries', 'n/a')} |")
            lines.append("")
    return lines


def model_card(description: dict, metrics: dict, found: dict, name: str) -> str:
    """``README.md``: what the model is, how it was trained and measured, how to load it, what it is not for."""
    task = description["task"]
    training, corpus = description.get("training", {}), description.get("corpus") or {}
    run = description["undertale"]["run"]
    kind = ("a masked-language model of instruction traces (pretraining, `task=maskedlm`)" if task == "maskedlm" else
            "a function-search encoder: a pretrained encoder fine-tuned contrastively across optimisation levels "
            "(`task=similarity`)")
    lines = [
        "---", "license: mit", "library_name: transformers", "tags:", "- undertale", "- binary-code",
        "- instruction-traces", f"- {'fill-mask' if task == 'maskedlm' else 'feature-extraction'}",
        f"pipeline_tag: {'fill-mask' if task == 'maskedlm' else 'feature-extraction'}", "---", "",
        f"# {name}", "",
        f"An [undertale](https://github.com/) model: {kind}, exported from the run `{run}` by `python export.py`.", "",
        "## Model", "",
        "| | |", "| --- | --- |",
        f"| layers | {description['depth']} |",
        f"| hidden width | {description['hidden_dimensions']} |",
        f"| attention heads | {description['heads']} |",
        f"| feed-forward width | {description['intermediate_dimensions']} |",
        f"| sequence length (tokens per window) | {description['sequence_length']} |",
        f"| vocabulary | {description['vocab_size']} tokens |",
        f"| task | {task} |",
        f"| pooling | {description['pooling']} |",
    ]
    if task == "similarity":
        lines.append(f"| projection (search vector width per view) | {description['projection_size']} |")
    lines += [f"| windows | {description['windows']} |",
              "| weights | float32, `model.safetensors` |", ""]
    lines += ["## Training", "",
              f"- steps: {training.get('steps', 'n/a')} (checkpoint `{training.get('checkpoint', 'n/a')}`"
              + (f", status {training['status']}" if training.get("status") else "") + ")"]
    if training.get("pretrained"):
        lines.append(f"- fine-tuned from the pretraining run `{training['pretrained']}`")
    if corpus:
        lines.append(f"- {corpus.get('kind', 'corpus')}: `{corpus.get('directory', 'n/a')}`, fingerprint "
                     f"`{corpus.get('fingerprint', 'not recorded')}`")
        statistics = corpus.get("statistics") or {}
        if statistics:
            flat = {key: value for key, value in statistics.items() if isinstance(value, (int, float, str))}
            lines.append(f"- {corpus.get('kind', 'corpus')} statistics: " + ", ".join(
                f"{key} {value:,}" if isinstance(value, int) else f"{key} {value}" for key, value in flat.items()))
    else:
        lines.append("- corpus: not recorded by the run")
    final = {key: value for key, value in metrics.items() if key.startswith("val/") and isinstance(value, (int, float))}
    if final:
        lines += ["", "Final validation metrics of the run (`metrics.json`):", "", "| metric | value |", "| --- | --- |"]
        lines += [f"| {key} | {_number(value)} |" for key, value in final.items()]
    lines += ["", "## Evaluation", ""]
    evaluation = _evaluation_lines(found, run)
    lines += evaluation or ["No `evaluate.py` results were recorded in the run when it was exported.", ""]
    lines += [
        "## Input", "",
        "One function is one instruction-trace string: tokens separated by spaces, `[NEXT]` between instructions, "
        "numbers in decimal, commas dropped (undertale's `docs/design.md`):", "",
        "```", "push rbp [NEXT] mov rbp rsp [NEXT] mov dword ptr [ rbp - 20 ] edi [NEXT] ret", "```", "",
        "## Loading", "",
        "```python", "from undertale.inference.embedding import FunctionEncoder", "",
        "encoder = FunctionEncoder.from_pretrained(\"<this directory>\")   # no Lightning needed",
        "vectors = encoder.embed([\"push rbp [NEXT] mov rbp rsp [NEXT] pop rbp [NEXT] ret\"])", "```", "",
        "```python", "from transformers import AutoModel, AutoTokenizer", "",
        "tokenizer = AutoTokenizer.from_pretrained(\"<this directory>\", trust_remote_code=True)",
        "model = AutoModel.from_pretrained(\"<this directory>\", trust_remote_code=True).eval()",
        "inputs = tokenizer([\"push rbp [NEXT] mov rbp rsp [NEXT] ret\"], return_tensors=\"pt\", padding=True)",
        "hidden = model(**inputs).last_hidden_state   # pooler_output: one vector per window", "```", "",
    ]
    if task == "maskedlm":
        lines += ["```python", "from transformers import pipeline", "",
                  "fill = pipeline(\"fill-mask\", model=\"<this directory>\", trust_remote_code=True)",
                  "fill(\"push rbp [NEXT] mov rbp [MASK] [NEXT] ret\")", "```", ""]
    lines += [
        "Without transformers: `safetensors.torch.load_file(\"model.safetensors\")` holds `encoder.*` (the state "
        "of undertale's `InstructionTraceTransformerEncoder`, built from the sizes in `config.json`), and "
        + ("`head.*` (the masked-LM head)." if task == "maskedlm" else "`projection.*` (the projection head)."), "",
        "## Intended use", "",
        "Research on binary code: embedding functions of ELF binaries for function search and similarity, "
        "filling masked instruction tokens, and as a starting point for fine-tuning on instruction traces produced "
        "by undertale's disassembly (capstone, normalised as above).", "",
        "## Limitations", "",
        "- Trained only on the corpus named above; functions from other compilers, architectures or obfuscated code "
        "may embed poorly.",
        f"- A window holds {description['sequence_length']} tokens; longer functions are cut into windows "
        "(`FunctionEncoder` combines them; the transformers classes see one window per row and reject longer rows).",
        "- Text must follow undertale's instruction-trace format; other disassembly syntaxes give many `[UNK]` tokens.",
        "- The remote code (`modeling_undertale.py` and the files beside it) runs with `trust_remote_code=True`: "
        "read it first; it is undertale's own encoder source.",
        "- Not a security tool: similarity scores are evidence, not proof, of shared code.", "",
        "## Licence", "", "MIT, as undertale.", "",
    ]
    return "\n".join(lines)


# --- the export ----------------------------------------------------------------------------------------


def model_config(hparams: dict, task: str, special: dict, step: int, run: RunDirectory, config: dict,
                 metrics: dict, environment: dict, windows: str) -> dict:
    """``config.json``: what ``UndertaleConfig`` reads, and the run's record (training, corpus, versions)."""
    from undertale import __version__ as version

    architectures = ["UndertaleForMaskedLM"] if task == "maskedlm" else ["UndertaleModel"]
    auto_map = {"AutoConfig": "configuration_undertale.UndertaleConfig",
                "AutoModel": "modeling_undertale.UndertaleModel"}
    if task == "maskedlm":
        auto_map["AutoModelForMaskedLM"] = "modeling_undertale.UndertaleForMaskedLM"
    sizes = {key: hparams.get(key) for key in ENCODER_ARGUMENTS}
    result: dict[str, Any] = {
        "model_type": MODEL_TYPE,
        "architectures": architectures,
        "auto_map": auto_map,
        "torch_dtype": "float32",
        **sizes,
        "mask_token_id": special["[MASK]"],
        "pad_token_id": special["[PAD]"],
        "unk_token_id": special["[UNK]"],
        "sep_token_id": special["[SEP]"],
        "cls_token_id": special["[CLS]"],
        "special_tokens": special,
        "task": task,
        "pooling": str(hparams.get("pooling") or "mean") if task == "similarity" else "mean",
        "projection_size": hparams.get("projection_size") if task == "similarity" else None,
        "windows": windows,
        "tie_word_embeddings": False,
    }
    training = {"steps": int(step)}
    for key in ("status", "seconds", "world_size", "epoch"):
        if metrics.get(key) is not None:
            training[key] = metrics[key]
    if task == "similarity":
        for key in ("temperature", "entry_weight"):
            if hparams.get(key) is not None:
                training[key] = hparams[key]
    if isinstance(config.get("pretrained"), str):
        training["pretrained"] = config["pretrained"]
    result["training"] = training
    corpus = corpus_record(config, metrics)
    if corpus:
        result["corpus"] = corpus
    git = environment.get("git") if isinstance(environment.get("git"), dict) else {}
    result["undertale"] = {"version": version, "run": str(run.path.resolve()),
                           **({"git_commit": git["commit"]} if git.get("commit") else {}),
                           **({"trained_with": environment["versions"].get("undertale")}
                              if isinstance(environment.get("versions"), dict) else {})}
    return result


def exported_tokenizer(text: str) -> str:
    """The run's ``tokenizer.json`` with ``[NEXT]`` no longer flagged special: it encodes the same ids, and
    transformers' ``decode(skip_special_tokens=True)`` (the ``sequence`` of the fill-mask pipeline) keeps it."""
    saved = json.loads(text)
    for token in saved.get("added_tokens") or []:
        if token.get("content") == "[NEXT]":
            token["special"] = False
    return json.dumps(saved, ensure_ascii=False, indent=2) + "\n"


def tokenizer_files(sequence_length: int) -> dict[str, dict]:
    """``tokenizer_config.json`` and ``special_tokens_map.json``: ``AutoTokenizer`` loads ``tokenizer.json`` with them."""
    tokens = dict(SPECIAL_TOKENS)
    return {
        "tokenizer_config.json": {
            "tokenizer_class": "PreTrainedTokenizerFast", **tokens, "model_max_length": sequence_length,
            "model_input_names": ["input_ids", "attention_mask"], "clean_up_tokenization_spaces": False,
            "padding_side": "right", "truncation_side": "right",
        },
        "special_tokens_map.json": tokens,
    }


def export_run(run_path: str | os.PathLike, output: str | os.PathLike, overwrite: bool = False) -> Path:
    """Export a run into ``output`` (module docstring); the directory written.

    Raises:
        UsageError: for a directory that is not a run, an output that exists and is not empty (unless
            ``overwrite``), an output that cannot be written.
    """
    run = RunDirectory(run_path)
    if not run.path.is_dir():
        raise UsageError(f"run directory {run.path} does not exist; pass the directory train.py printed as "
                         "'run directory:'")
    if not run.config.is_file() and not run.checkpoints.is_dir():
        raise UsageError(f"{run.path} is not a run directory (it has no config.yaml and no checkpoints/)")
    if not run.tokenizer.is_file():
        raise UsageError(f"run directory {run.path} has no tokenizer.json")
    output = Path(output).expanduser()
    if output.exists() and not output.is_dir():
        raise UsageError(f"output {output} exists and is not a directory")
    if output.is_dir() and any(output.iterdir()) and not overwrite:
        raise UsageError(f"output {output} exists and is not empty; pass overwrite=true to replace it")
    if output.resolve() == run.path.resolve() or run.path.resolve() in output.resolve().parents:
        raise UsageError(f"output {output} is inside the run directory {run.path}; export somewhere else")
    checkpoint = run.checkpoint()
    loaded = run.load(checkpoint=checkpoint)
    module = loaded.module
    hparams = dict(module.hparams)
    task = "similarity" if getattr(module, "projection", None) is not None else "maskedlm"
    if task == "maskedlm" and getattr(module, "head", None) is None:
        raise UsageError(f"{checkpoint} holds neither a masked-LM head nor a projection head; cannot export it")

    from tokenizers import Tokenizer

    from undertale.data.tokenizer import SPECIAL_TOKENS as TOKENS
    from undertale.inference.embedding import DEFAULT_WINDOWS

    try:
        tokenizer = Tokenizer.from_file(str(run.tokenizer))
    except Exception as error:  # tokenizers raises its own exception kinds
        raise UsageError(f"cannot read {run.tokenizer}: {first_line(error)}") from None
    special = {token: tokenizer.token_to_id(token) for token in TOKENS}
    missing = [token for token, index in special.items() if index is None]
    if missing:
        raise UsageError(f"{run.tokenizer} lacks the special token {missing[0]}; it is not an undertale tokenizer")
    if tokenizer.get_vocab_size() != hparams.get("vocab_size"):
        raise UsageError(f"{run.tokenizer} has {tokenizer.get_vocab_size()} tokens, the model "
                         f"{hparams.get('vocab_size')}: not the tokenizer the run trained with")
    config, metrics = _read_config(run), _read_json(run.metrics)
    environment = _read_json(run.environment)
    found = evaluations(run)
    windows = DEFAULT_WINDOWS
    if task == "similarity" and isinstance(found.get("similarity.json", {}).get("windows"), str):
        windows = found["similarity.json"]["windows"]
    description = model_config(hparams, task, special, loaded.step, run, config, metrics, environment, windows)
    description["training"]["checkpoint"] = checkpoint.name

    import torch
    from safetensors.torch import save_file

    state = {key: value.detach().to(torch.float32).contiguous().clone()
             for key, value in module.state_dict().items() if key.startswith(WEIGHT_PREFIXES)}
    code = remote_code_files()
    card = model_card(description, metrics, found, output.name)

    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        temporary = Path(tempfile.mkdtemp(prefix=f".{output.name}.", suffix=".export", dir=output.parent))
    except OSError as error:
        raise UsageError(f"cannot write output {output}: {first_line(error)}") from None
    try:
        (temporary / "config.json").write_text(json.dumps(description, indent=2) + "\n")
        save_file(state, str(temporary / WEIGHTS), metadata={"format": "pt"})
        (temporary / "tokenizer.json").write_text(exported_tokenizer(run.tokenizer.read_text()))
        for name, value in tokenizer_files(int(hparams["sequence_length"])).items():
            (temporary / name).write_text(json.dumps(value, indent=2) + "\n")
        for name, text in code.items():
            (temporary / name).write_text(text)
        (temporary / "README.md").write_text(card)
        os.chmod(temporary, 0o755)  # mkdtemp makes it private; an export is to be shared
        _replace(temporary, output)
    except OSError as error:
        shutil.rmtree(temporary, ignore_errors=True)
        raise UsageError(f"cannot write output {output}: {first_line(error)}") from None
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    return output


def _replace(temporary: Path, output: Path) -> None:
    """Rename the written directory into place; an existing ``output`` (empty, or ``overwrite``) is replaced."""
    if not output.exists():
        os.rename(temporary, output)
        return
    old = output.with_name(f".{output.name}.old-{os.getpid()}")
    os.rename(output, old)
    try:
        os.rename(temporary, output)
    except OSError:
        os.rename(old, output)
        raise
    shutil.rmtree(old, ignore_errors=True)


def export_command(cfg: DictConfig) -> int:
    """Run ``export.py``; the exit code (2, after one ``error:`` line, for a mistake in the arguments)."""
    try:
        if not cfg.run:
            raise UsageError("run=<run directory> is required (a training run with a checkpoint and tokenizer.json)")
        if not cfg.output:
            raise UsageError("output=<directory> is required (the directory to write the exported model into)")
        written = export_run(cfg.run, cfg.output, overwrite=bool(cfg.overwrite))
    except UsageError as error:
        return report_usage_error(error)
    files = sorted(path.name for path in written.iterdir())
    print(f"export: {cfg.run} -> {written} ({len(files)} files: {', '.join(files)})", file=sys.stderr)
    return 0

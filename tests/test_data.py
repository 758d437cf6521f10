"""Data package: disassembly of real binaries, corpus, tokenizer, tokenized shards, streaming dataset."""

import fcntl
import json
import shutil
import subprocess
from pathlib import Path

import lightning
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from torch.utils.data import DataLoader

from undertale.data.corpus.build import CorpusOptions, build_corpus, split_of
from undertale.data.corpus.read import read_file
from undertale.data.dataset import TokenizedParquetDataset, batches_already_taken
from undertale.data.corpus.disassembly import disassemble, disassemble_many, normalise
from undertale.data.corpus import disassembly as disassembly_module
from undertale.data.datamodule import InstructionTraceDataModule
from undertale.data.encode import tokenized_files
from undertale.data.parquet import fixed_list
from undertale.data.__main__ import main as data_main
from undertale.data import pipeline
from undertale.data.tokenizer import NEXT, UNK, load_tokenizer, train_tokenizer

SYSTEM_BINARIES = ["/usr/bin/ls", "/usr/bin/cp", "/usr/bin/grep", "/usr/bin/sort"]

PROGRAM = r"""
int add_scaled(int a, int b) { return a + b * 3; }
int main(int argc, char **argv) { return add_scaled(argc, (int)(long)argv[0][0]); }
"""


def compile_program(directory: Path, optimisation: str, strip: bool = False) -> Path:
    source = directory / "program.c"
    source.write_text(PROGRAM)
    binary = directory / f"program{optimisation}{'-stripped' if strip else ''}"
    subprocess.run(["gcc", optimisation, "-fno-inline", "-o", str(binary), str(source)], check=True)
    if strip:
        subprocess.run(["strip", str(binary)], check=True)
    return binary


def rows_of(corpus: Path) -> list[dict]:
    return [row for path in sorted(corpus.rglob("*.parquet")) for row in pq.read_table(path).to_pylist()]


@pytest.fixture(scope="module")
def system_corpus(tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("corpus")
    build_corpus(output, SYSTEM_BINARIES, CorpusOptions(validation_fraction=0.25), workers=2, progress=False)
    return output


def test_normalise_follows_the_text_format():
    assert normalise(["push rbp", "mov rbp, rsp", "mov dword ptr [rbp - 0x14], edi", "ret "]) == (
        "push rbp [NEXT] mov rbp rsp [NEXT] mov dword ptr [ rbp - 20 ] edi [NEXT] ret"
    )
    assert normalise(["mov rax, qword ptr fs:[0x28]", "lea rax, [rax + rbx*8 + 0x10]"]) == (
        "mov rax qword ptr fs : [ 40 ] [NEXT] lea rax [ rax + rbx * 8 + 16 ]"
    )


def test_undecodable_bytes_are_skipped_and_counted_not_truncated():
    # push rbp; mov rbp,rsp; <0x06: push es, undecodable in 64-bit mode>; ret
    code = bytes.fromhex("554889e5") + b"\x06" + bytes.fromhex("c3")
    result = disassemble(code, 0x1000)
    assert result.skipped_bytes == 1
    assert result.text == "push rbp [NEXT] mov rbp rsp [NEXT] ret"
    assert result.instructions == 3


def test_array_decoder_matches_the_python_binding():
    from undertale.data.corpus.elf import file_functions

    [(_, architecture, functions)] = list(file_functions("/usr/bin/ls"))
    jobs = [(function.code, function.address) for function in functions]
    fast = disassemble_many(jobs, architecture)
    slow_lines = [disassembly_module.decode(code, address, architecture) for code, address in jobs]
    slow = disassembly_module.normalise_many([lines for lines, _ in slow_lines])
    assert [item.text for item in fast] == slow
    assert [item.instructions for item in fast] == [len(lines) for lines, _ in slow_lines]


@pytest.mark.parametrize("optimisation", ["-O0", "-O2"])
def test_compiled_program_has_the_expected_function(tmp_path, optimisation):
    binary = compile_program(tmp_path, optimisation)
    result = read_file(str(binary))
    assert result.error is None
    functions = {row["name"]: row for row in result.rows}
    assert "add_scaled" in functions and "main" in functions
    text = functions["add_scaled"]["disassembly"]
    if optimisation == "-O0":
        assert text.startswith("push rbp [NEXT] mov rbp rsp [NEXT] mov dword ptr [ rbp - 4 ] edi [NEXT]")
        assert text.endswith("pop rbp [NEXT] ret")
    else:
        assert text == "lea eax [ rsi + rsi * 2 ] [NEXT] add eax edi [NEXT] ret"
    assert functions["add_scaled"]["instructions"] == text.count(NEXT) + 1


def test_stripped_binary_functions_come_from_the_unwind_table(tmp_path):
    plain = {row["address"]: row for row in read_file(str(compile_program(tmp_path, "-O2"))).rows}
    stripped = read_file(str(compile_program(tmp_path, "-O2", strip=True)))
    assert stripped.error is None and stripped.rows
    named = [row for row in plain.values() if row["name"] == "add_scaled"][0]
    recovered = {row["address"]: row for row in stripped.rows}
    assert recovered[named["address"]]["name"] == f"sub_{named['address']:x}"
    assert recovered[named["address"]]["disassembly"] == named["disassembly"]
    # a real stripped system binary still yields hundreds of functions
    assert len(read_file("/usr/bin/ls").rows) > 200


def test_object_files_and_archives(tmp_path):
    source = tmp_path / "unit.c"
    source.write_text(PROGRAM)
    subprocess.run(["gcc", "-O2", "-c", "-o", str(tmp_path / "unit.o"), str(source)], check=True)
    subprocess.run(["ar", "rcs", str(tmp_path / "libunit.a"), str(tmp_path / "unit.o")], check=True)
    for path, source_name in [(tmp_path / "unit.o", str(tmp_path / "unit.o")), (tmp_path / "libunit.a", "libunit.a(unit.o)")]:
        rows = {row["name"]: row for row in read_file(str(path)).rows}
        assert rows["add_scaled"]["disassembly"] == "lea eax [ rsi + rsi * 2 ] [NEXT] add eax edi [NEXT] ret"
        assert rows["add_scaled"]["source"].endswith(source_name)


def test_bad_files_are_skipped_with_reasons_and_good_ones_kept(tmp_path):
    truncated = tmp_path / "truncated"
    truncated.write_bytes(Path("/usr/bin/ls").read_bytes()[:3000])
    text = tmp_path / "notes.txt"
    text.write_text("not a binary\n")
    output = tmp_path / "corpus"
    manifest = build_corpus(output, [str(truncated), str(text), "/usr/bin/ls"], CorpusOptions(), workers=1, progress=False)
    assert manifest["skipped_files"][str(text)] == "not an ELF file"
    assert "corrupt" in manifest["skipped_files"][str(truncated)]
    assert manifest["counts"]["functions"] > 200


def test_empty_directory_fails_with_the_path(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match=str(empty)):
        build_corpus(tmp_path / "out", [str(empty)], progress=False)
    assert data_main(["corpus", str(tmp_path / "out"), str(tmp_path / "missing")]) == 2


def test_corpus_shards_manifest_dedup_and_split(system_corpus):
    manifest = json.loads((system_corpus / "manifest.json").read_text())
    rows = rows_of(system_corpus)
    assert len(rows) == manifest["counts"]["functions"] > 1000
    assert len({row["id"] for row in rows}) == len(rows), "functions are deduplicated by content"
    assert manifest["counts"]["duplicates"] > 0
    columns = set(pq.read_schema(next(system_corpus.rglob("*.parquet"))).names)
    assert {"id", "source", "name", "address", "size", "instructions", "disassembly"} <= columns
    train = {row["source"] for row in pq.read_table(system_corpus / "train").to_pylist()}
    validation = {row["source"] for row in pq.read_table(system_corpus / "validation").to_pylist()}
    assert train and validation and not train & validation, "split is by binary"
    assert manifest["parameters"]["seed"] == 0 and manifest["undertale_version"]
    assert split_of(SYSTEM_BINARIES, 0, 0.25) == split_of(list(reversed(SYSTEM_BINARIES)), 0, 0.25)


def test_second_build_reuses_and_interrupted_build_is_not_complete(system_corpus, tmp_path):
    before = (system_corpus / "manifest.json").stat().st_mtime_ns
    build_corpus(system_corpus, SYSTEM_BINARIES, CorpusOptions(validation_fraction=0.25), progress=False)
    assert (system_corpus / "manifest.json").stat().st_mtime_ns == before
    # a copy without its manifest (as after an interruption) is rebuilt, not trusted
    copy = tmp_path / "copy"
    shutil.copytree(system_corpus, copy)
    (copy / "manifest.json").unlink()
    (copy / "train" / "shard-00000.parquet").write_bytes(b"partial")
    build_corpus(copy, SYSTEM_BINARIES, CorpusOptions(validation_fraction=0.25), progress=False)
    assert len(rows_of(copy)) == len(rows_of(system_corpus))


def test_max_functions_is_exact(tmp_path):
    manifest = build_corpus(tmp_path, SYSTEM_BINARIES, CorpusOptions(max_functions=300), workers=2, progress=False)
    assert manifest["counts"]["functions"] == 300 == len(rows_of(tmp_path))


def test_tokenizer_round_trip_unknown_tokens_and_numbers(system_corpus, tmp_path):
    texts = [row["disassembly"] for row in pq.read_table(system_corpus / "train").to_pylist()]
    tokenizer = train_tokenizer(texts, merges=512, sequence_length=4096)
    text = texts[0]
    encoding = tokenizer.encode(text)
    assert tokenizer.decode(encoding.ids[: sum(encoding.attention_mask)], skip_special_tokens=False) == text
    for word in ("mov", "rbp", "[NEXT]", "qword", "ptr", "["):
        assert word in tokenizer.get_vocab(), word
    assert tokenizer.encode("mov rax 98765432101234").tokens[2].isdigit()
    assert all(t.startswith("__") for t in tokenizer.encode("mov rax 98765432101234").tokens[3:6] if t != "[PAD]")
    assert tokenizer.decode(tokenizer.encode("xor rax 98765432101234").ids) == "xor rax 98765432101234"
    assert tokenizer.encode("frobnicate rax").tokens[:2] == [UNK, "rax"]
    path = tmp_path / "tokenizer.json"
    tokenizer.save(str(path))
    assert load_tokenizer(path, sequence_length=16).encode(text).ids == encoding.ids[:16]
    assert len(load_tokenizer(path, 8).encode("ret").ids) == 8


def test_tokenize_and_commands(system_corpus, tmp_path):
    tokenizer_path = tmp_path / "tokenizer.json"
    assert data_main(["tokenizer", str(system_corpus), str(tokenizer_path), "--sequence-length", "64"]) == 0
    assert data_main(["tokenize", str(system_corpus), str(tokenizer_path), str(tmp_path / "tokens")]) == 0
    table = pq.read_table(tmp_path / "tokens" / "train")
    assert {"tokens", "mask", "length", "disassembly", "id"} <= set(table.column_names)
    tokens = np.stack(table.column("tokens").to_numpy(zero_copy_only=False))
    assert tokens.shape[1] == 64
    assert table.num_rows == pq.read_table(system_corpus / "train").num_rows


def write_tokenized(directory: Path, rows: int, length: int = 8, shards: int = 3, row_group: int = 7) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    ids = np.arange(rows)
    for shard, part in enumerate(np.array_split(ids, shards)):
        tokens = np.zeros((len(part), length), dtype=np.int32)
        tokens[:, 0] = part
        mask = np.ones_like(tokens, dtype=np.int8)
        table = pa.table({"tokens": fixed_list(tokens), "mask": fixed_list(mask)})
        pq.write_table(table, directory / f"shard-{shard:05d}.parquet", row_group_size=row_group)


def consume(dataset, workers):
    loader = DataLoader(dataset, batch_size=None, num_workers=workers)
    return [batch["tokens"][:, 0].tolist() for batch in loader]


def test_two_ranks_two_workers_see_every_row_exactly_once(tmp_path):
    write_tokenized(tmp_path, rows=203)
    files = tokenized_files(tmp_path)
    seen = []
    for rank in range(2):
        dataset = TokenizedParquetDataset(files, 5, shuffle=True, seed=3, shuffle_buffer=16, even_ranks=False,
                                          rank=rank, world_size=2)
        seen.extend(row for batch in consume(dataset, 2) for row in batch)
    assert sorted(seen) == list(range(203))
    assert seen != sorted(seen), "rows are shuffled"


def test_epochs_reshuffle_and_ranks_get_equal_batches(tmp_path):
    write_tokenized(tmp_path, rows=203)
    files = tokenized_files(tmp_path)
    epochs = []
    for epoch in range(2):
        ranks = []
        for rank in range(2):
            dataset = TokenizedParquetDataset(files, 5, seed=3, shuffle_buffer=16, rank=rank, world_size=2)
            dataset.loader_workers = 2
            dataset.set_epoch(epoch)
            ranks.append(consume(dataset, 2))
            assert len(ranks[-1]) == len(dataset), "len() matches what the loader yields"
        assert len(ranks[0]) == len(ranks[1]), "DDP ranks run the same number of steps"
        rows = [row for batches in ranks for batch in batches for row in batch]
        assert len(rows) == len(set(rows)) == 202, "equal shares drop at most world - 1 rows"
        epochs.append(ranks[0])
    assert epochs[0] != epochs[1], "each epoch is shuffled anew"


def test_resume_continues_at_the_next_unseen_batch(tmp_path):
    write_tokenized(tmp_path, rows=157)
    files = tokenized_files(tmp_path)
    for workers in (2, 3):  # 3 workers: 13, 13 and 14 batches, so one stream outlives the others
        dataset = TokenizedParquetDataset(files, 4, seed=1, shuffle_buffer=12)
        full = consume(dataset, workers)
        for delivered in range(len(full)):
            dataset.resume_at(delivered)
            assert consume(dataset, workers) == full[delivered:], (workers, delivered)
        dataset.resume_at(0)
    assert batches_already_taken([3, 1, 2], 5) == ([2, 1, 2], 0)
    assert batches_already_taken([3, 1, 2], 4) == ([2, 1, 1], 2)


def test_resume_skips_only_in_the_epoch_it_was_asked_for(tmp_path):
    write_tokenized(tmp_path, rows=157)
    dataset = TokenizedParquetDataset(tokenized_files(tmp_path), 4, seed=1, shuffle_buffer=12)
    in_process = consume(dataset, 0)
    dataset.resume_at(5)
    assert consume(dataset, 0) == in_process[5:]
    assert consume(dataset, 0) == in_process, "the pass that took the skip dropped it"
    epochs = []
    for epoch in (0, 1):
        dataset.set_epoch(epoch)
        epochs.append(consume(dataset, 2))
    dataset.set_epoch(0)
    dataset.resume_at(5)
    assert consume(dataset, 2) == epochs[0][5:]
    dataset.set_epoch(1)  # workers took the skip from copies: moving on drops it from this one
    assert consume(dataset, 2) == epochs[1] != epochs[0]


def as_is(batch):
    return batch


class RecordRows(lightning.LightningModule):
    """Records the row ids (first token, as ``write_tokenized`` writes them) of each training batch, per epoch."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(()))
        self.epochs: dict[int, list[list[int]]] = {}

    def training_step(self, batch, batch_idx):
        self.epochs.setdefault(self.current_epoch, []).append(batch["tokens"][:, 0].tolist())
        return self.weight * 0

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


def test_data_module_without_the_epoch_callback_resumes_once_and_reshuffles(tmp_path):
    """No DataEpoch callback: the resumed epoch skips what was trained on, the next one reads everything anew."""
    write_tokenized(tmp_path / "data" / "train", rows=48, shards=2, row_group=8)
    write_tokenized(tmp_path / "data" / "validation", rows=8, shards=1)

    def fit(ckpt_path=None, **options) -> dict[int, list[list[int]]]:
        model = RecordRows()
        data = InstructionTraceDataModule(str(tmp_path / "data"), as_is, batch_size=4, num_workers=2, shuffle_buffer=8)
        trainer = lightning.Trainer(**{"max_epochs": 2, "accelerator": "cpu", "logger": False, "limit_val_batches": 0,
                                       "enable_progress_bar": False, "enable_model_summary": False,
                                       "enable_checkpointing": False} | options)
        trainer.fit(model, datamodule=data, ckpt_path=ckpt_path)
        return model.epochs

    full = fit()
    assert len(full[0]) == len(full[1]) == 12
    assert sorted(row for batch in full[1] for row in batch) == list(range(48)), "every row, once"
    assert full[1] != full[0], "the second epoch is shuffled anew"
    fit(max_steps=7, enable_checkpointing=True,
        callbacks=[lightning.pytorch.callbacks.ModelCheckpoint(tmp_path / "checkpoints", "mid", every_n_train_steps=5)])
    resumed = fit(ckpt_path=tmp_path / "checkpoints" / "mid.ckpt")
    assert resumed[0] == full[0][5:]
    assert resumed[1] == full[1]


def test_tokenized_files_of_a_missing_split_names_it(tmp_path):
    write_tokenized(tmp_path / "validation", rows=10)
    assert tokenized_files(tmp_path) == tokenized_files(tmp_path, "validation")
    with pytest.raises(FileNotFoundError, match=rf"{tmp_path} has no train/ folder"):
        tokenized_files(tmp_path, "train")


def test_binaries_without_paths_fail_before_any_work(tmp_path):
    with pytest.raises(ValueError, match=r"data=binaries needs data\.paths=.*\(got paths=None\)"):
        pipeline.prepare("binaries", tmp_path / "cache", progress=False)
    assert not (tmp_path / "cache").exists()


@pytest.mark.timeout(60)
def test_prepare_holds_the_cache_lock_while_it_builds(tmp_path, monkeypatch):
    def locked_out() -> bool:
        """Whether another open file (as another process would) is refused the lock."""
        with open(tmp_path / ".prepare.lock", "a") as other:
            try:
                fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(other, fcntl.LOCK_UN)
            return False

    def build_corpus(*args, **kwargs):
        assert locked_out()
        raise RuntimeError("stop here")

    monkeypatch.setattr(pipeline, "build_corpus", build_corpus)
    with pytest.raises(RuntimeError, match="stop here"):
        pipeline.prepare("binaries", tmp_path, paths=["/usr/bin/ls"], progress=False)
    assert not locked_out()
    with pipeline.cache_lock(tmp_path), pytest.raises(RuntimeError, match="stop here"):
        pipeline.prepare("binaries", tmp_path, paths=["/usr/bin/ls"], progress=False)  # nested: no deadlock


def test_format_versions_key_the_caches(tmp_path, monkeypatch):
    corpus = tmp_path / "corpus"
    for split in ("train", "validation"):
        (corpus / split).mkdir(parents=True)
        texts = ["push rbp [NEXT] mov dword ptr [ rbp - 20 ] edi [NEXT] pop rbp [NEXT] ret"] * 8
        pq.write_table(pa.table({"disassembly": texts}), corpus / split / "shard-00000.parquet")

    def prepared(packing: bool = False) -> pipeline.PreparedData:
        return pipeline.prepare("parquet", tmp_path / "cache", directory=str(corpus), sequence_length=8, merges=16,
                                tokenizer_functions=8, packing=packing, progress=False)

    base, packed = prepared(), prepared(packing=True).tokenized
    with monkeypatch.context() as patch:
        patch.setattr(pipeline, "TOKENIZER_FORMAT", pipeline.TOKENIZER_FORMAT + 1)
        assert prepared().tokenizer != base.tokenizer
    with monkeypatch.context() as patch:
        patch.setattr(pipeline, "TOKENIZED_FORMAT", pipeline.TOKENIZED_FORMAT + 1)
        again = prepared()
        assert again.tokenizer == base.tokenizer and again.tokenized != base.tokenized
    with monkeypatch.context() as patch:
        patch.setattr(pipeline, "PACKING_FORMAT", pipeline.PACKING_FORMAT + 1)
        assert prepared(packing=True).tokenized != packed
    assert prepared() == base and prepared(packing=True).tokenized == packed


def test_bad_parquet_names_the_file_and_column(tmp_path):
    write_tokenized(tmp_path / "good", rows=10)
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(ValueError, match="broken.parquet"):
        TokenizedParquetDataset([broken], 2)
    schemaless = tmp_path / "schemaless.parquet"
    pq.write_table(pa.table({"disassembly": ["ret"]}), schemaless)
    with pytest.raises(ValueError, match=r"schemaless.parquet: missing column\(s\) \['tokens', 'mask'\]"):
        TokenizedParquetDataset([schemaless], 2)
    empty = tmp_path / "empty.parquet"
    pq.write_table(pa.table({"tokens": fixed_list(np.zeros((0, 4), np.int32)),
                             "mask": fixed_list(np.zeros((0, 4), np.int8))}), empty)
    with pytest.raises(ValueError, match="no rows"):
        TokenizedParquetDataset([empty], 2)
    assert isinstance(next(iter(TokenizedParquetDataset(tokenized_files(tmp_path / "good"), 4)))["tokens"], torch.Tensor)


def test_existing_parquet_disassembly_is_used_directly(system_corpus, tmp_path):
    from undertale.data.datamodule import InstructionTraceDataModule
    from undertale.data.pipeline import prepare
    from undertale.models.maskedlm import MaskedLMCollator

    cache = tmp_path / "cache"
    prepared = prepare("parquet", cache, directory=str(system_corpus), sequence_length=32, tokenizer_functions=500,
                       progress=False)
    assert prepared.corpus == system_corpus
    assert {"tokens", "mask"} <= set(pq.read_schema(tokenized_files(prepared.tokenized, "train")[0]).names)
    with pytest.raises(ValueError, match="data.tokenizer"):
        prepare("parquet", cache, directory=str(prepared.tokenized), progress=False)
    again = prepare("parquet", cache, directory=str(prepared.tokenized), tokenizer=str(prepared.tokenizer),
                    progress=False)
    assert again.tokenized == prepared.tokenized
    flat = tmp_path / "flat"
    flat.mkdir()
    shutil.copy(tokenized_files(prepared.tokenized, "train")[0], flat / "shard.parquet")
    module = InstructionTraceDataModule(str(flat), MaskedLMCollator(4, 100), batch_size=4, num_workers=0)
    with pytest.raises(ValueError, match="no train/ folder"):
        module.setup("fit")


def relocatable_elf(elf_class: int, machine: int, code: bytes, name: bytes) -> bytes:
    """A minimal relocatable ELF (little endian): .text holding ``code``, one global function symbol."""
    import struct

    wide = elf_class == 64
    header_size, section_size, symbol_size = (64, 64, 24) if wide else (52, 40, 16)
    strtab = b"\0" + name + b"\0"
    shstrtab = b"\0.text\0.symtab\0.strtab\0.shstrtab\0"
    names = {section: shstrtab.index(section.encode() + b"\0") for section in (".text", ".symtab", ".strtab", ".shstrtab")}
    if wide:
        symbols = struct.pack("<IBBHQQ", 0, 0, 0, 0, 0, 0) + struct.pack("<IBBHQQ", 1, 0x12, 0, 1, 0, len(code))
    else:
        symbols = struct.pack("<IIIBBH", 0, 0, 0, 0, 0, 0) + struct.pack("<IIIBBH", 1, 0, len(code), 0x12, 0, 1)
    body, offsets = b"", {}
    for section, data in ((".text", code), (".symtab", symbols), (".strtab", strtab), (".shstrtab", shstrtab)):
        offsets[section] = header_size + len(body)
        body += data + b"\0" * (-len(data) % 8)
    section_offset = header_size + len(body)
    pack = (lambda *fields: struct.pack("<IIQQQQIIQQ", *fields)) if wide else (lambda *fields: struct.pack("<10I", *fields))
    sections = pack(0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
    sections += pack(names[".text"], 1, 0x6, 0, offsets[".text"], len(code), 0, 0, 4, 0)
    sections += pack(names[".symtab"], 2, 0, 0, offsets[".symtab"], len(symbols), 3, 1, 8, symbol_size)
    sections += pack(names[".strtab"], 3, 0, 0, offsets[".strtab"], len(strtab), 0, 0, 1, 0)
    sections += pack(names[".shstrtab"], 3, 0, 0, offsets[".shstrtab"], len(shstrtab), 0, 0, 1, 0)
    identity = b"\x7fELF" + bytes([2 if wide else 1, 1, 1]) + b"\0" * 9
    layout = "<16sHHIQQQIHHHHHH" if wide else "<16sHHIIIIIHHHHHH"
    header = struct.pack(layout, identity, 1, machine, 1, 0, 0, section_offset, 0, header_size, 0, 0, section_size, 5, 4)
    return header + body + sections


@pytest.mark.parametrize(
    "elf_class, machine, code, architecture, expected",
    [
        (32, 3, bytes.fromhex("5589e58b45085dc3"), "x86",
         "push ebp [NEXT] mov ebp esp [NEXT] mov eax dword ptr [ ebp + 8 ] [NEXT] pop ebp [NEXT] ret"),
        (64, 183, bytes.fromhex("00040091c0035fd6"), "aarch64", "add x0 x0 1 [NEXT] ret"),
    ],
)
def test_other_architectures_are_decoded(tmp_path, elf_class, machine, code, architecture, expected):
    path = tmp_path / f"{architecture}.o"
    path.write_bytes(relocatable_elf(elf_class, machine, code, b"increment"))
    result = read_file(str(path))
    assert result.error is None
    [row] = result.rows
    assert (row["name"], row["architecture"], row["disassembly"]) == ("increment", architecture, expected)


def test_unsupported_architecture_is_skipped_with_its_name(tmp_path):
    path = tmp_path / "riscv.o"
    path.write_bytes(relocatable_elf(64, 243, b"\x13\x00\x00\x00", b"nop"))
    assert read_file(str(path)).error == "unsupported architecture EM_RISCV"

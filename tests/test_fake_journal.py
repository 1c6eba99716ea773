"""The fakes' journal: appends made at once are written together (one fsync), in
the order they were made, and each is on disk when its `append` returns."""

from __future__ import annotations

import asyncio
from pathlib import Path

import msgspec

from loadtest.fakes import Journal


class Entry(msgspec.Struct, frozen=True):
    n: int


async def test_concurrent_appends_are_all_durable_and_in_order(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    journal: Journal[Entry] = Journal(path, Entry)
    assert journal.load() == []
    writes = 0
    write = journal._write

    def counting_write(data: bytes) -> None:
        nonlocal writes
        writes += 1
        write(data)

    journal._write = counting_write  # type: ignore[method-assign]
    await asyncio.gather(*(journal.append(Entry(n)) for n in range(200)))
    await journal.close()
    assert [e.n for e in Journal(path, Entry).load()] == list(range(200))
    assert writes < 200  # grouped: one write and fsync carried many records


async def test_an_append_returns_only_once_its_record_is_on_disk(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    journal: Journal[Entry] = Journal(path, Entry)
    journal.load()
    for n in range(3):
        await journal.append(Entry(n))
        assert path.read_bytes().count(b"\n") == n + 1
    await journal.close()

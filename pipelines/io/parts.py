"""Where pass 2 keeps its part files until the finish step: a folder, or memory."""

from __future__ import annotations

from typing import Iterator

import pyarrow as pa


# finish ---------------------------------------------------------------------------------
class PartStore:
    """Where pass 2 leaves its per-unit tables (files on the output filesystem, or memory)."""

    kinds = ("clean", "candidates", "rejected")

    def write(self, kind: str, key: str, table: pa.Table) -> None:  # pragma: no cover
        raise NotImplementedError

    def writer(self, kind: str, key: str):  # pragma: no cover
        """An object with ``write(table)`` and ``close()`` streaming one part."""
        raise NotImplementedError

    def keys(self, kind: str) -> list[str]:  # pragma: no cover
        raise NotImplementedError

    def read(self, kind: str, key: str) -> pa.Table:  # pragma: no cover
        raise NotImplementedError

    def schema(self, kind: str, key: str) -> pa.Schema:
        return self.read(kind, key).schema

    def iter_tables(self, kind: str, key: str, batch_rows: int) -> Iterator[pa.Table]:
        table = self.read(kind, key)
        for batch in table.to_batches(max_chunksize=batch_rows):
            yield pa.Table.from_batches([batch], schema=table.schema)


class MemoryPartStore(PartStore):
    def __init__(self):
        self._tables: dict[str, dict[str, list[pa.Table]]] = {k: {} for k in self.kinds}

    def write(self, kind: str, key: str, table: pa.Table) -> None:
        self._tables[kind].setdefault(key, []).append(table)

    def writer(self, kind: str, key: str) -> "_MemoryWriter":
        return _MemoryWriter(self, kind, key)

    def keys(self, kind: str) -> list[str]:
        return sorted(self._tables[kind])

    def read(self, kind: str, key: str) -> pa.Table:
        return pa.concat_tables(self._tables[kind][key], promote_options="permissive")


class _MemoryWriter:
    def __init__(self, store: MemoryPartStore, kind: str, key: str):
        self.store, self.kind, self.key = store, kind, key

    def write(self, table: pa.Table) -> None:
        if table is not None and table.num_rows:
            self.store.write(self.kind, self.key, table)

    def close(self) -> None:
        pass

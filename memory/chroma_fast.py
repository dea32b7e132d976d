"""chromadb's own compiled bindings, opened without its Python client (issue 16, cold start).

Owns: opening an existing persistent collection through `chromadb_rust_bindings` with exactly
the settings `chromadb.PersistentClient(settings=Settings(allow_reset=True))` would pass
(chromadb/api/rust.py `RustBindingsAPI.start`), and the five collection calls memory/index.py
makes (count, query, upsert, get, delete). Importing chromadb's Python client costs ~0.5 s CPU
and starting it ~0.1 s; the bindings import in ~0.1 s and start in ~5 ms.

It does not create or delete collections, nor report settings: memory/index.py opens the
Python client for those (lazily, dropping this object first) and does all locking. The binding
API is private to chromadb, so `open_fast` only tries it on the chromadb versions it was checked
against and returns None otherwise, or on any failure: the caller then uses the Python client.
No telemetry is sent from here at all.
"""
from __future__ import annotations

import json
import platform
import resource

# The chromadb releases whose private binding signatures this module was read against.
CHECKED_VERSIONS = ("1.5.",)
TENANT, DATABASE = "default_tenant", "default_database"  # chromadb's DEFAULT_TENANT/DATABASE


def chromadb_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("chromadb")
    except PackageNotFoundError:
        return None


def hnsw_cache_size() -> int:
    """As the client computes it: the soft open-file limit / 5 (4 data files + 1 metadata each)."""
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0] // 5


class FastCollection:
    """One existing collection through chromadb's bindings; the subset of Collection we use."""

    def __init__(self, path: str, name: str):
        import chromadb_rust_bindings as rb

        # Settings defaults: migrations="apply", migrations_hash_algorithm="md5".
        cfg = rb.SqliteDBConfig(hash_type=rb.MigrationHash.MD5,
                                migration_mode=rb.MigrationMode.Apply,
                                url=path + "/chroma.sqlite3")
        self._b = rb.Bindings(allow_reset=True, sqlite_db_config=cfg, persist_path=path,
                              hnsw_cache_size=hnsw_cache_size())
        self.id = str(self._b.get_collection(name, TENANT, DATABASE).id)

    def close(self) -> None:
        self._b = None  # the client's stop() likewise just drops its Bindings

    def count(self) -> int:
        return self._b.count(self.id, TENANT, DATABASE)

    def query(self, query_embeddings, n_results, where=None, include=("distances",)):
        import numpy as np
        q = [np.asarray(v, dtype=np.float32) for v in query_embeddings]
        r = self._b.query(self.id, None, q, n_results, json.dumps(where) if where else None,
                          None, list(include), TENANT, DATABASE)
        return {"ids": r.ids, "distances": r.distances}

    def upsert(self, ids, embeddings, metadatas=None):
        import numpy as np
        self._b.upsert(self.id, list(ids), [np.asarray(v, dtype=np.float32) for v in embeddings],
                       metadatas, None, None, TENANT, DATABASE)

    def get(self, ids=None, include=()):
        r = self._b.get(self.id, list(ids) if ids is not None else None, None, None, 0, None,
                        list(include), TENANT, DATABASE)
        if "embeddings" not in include:
            return {"ids": r.ids, "embeddings": None}
        import numpy as np
        return {"ids": r.ids, "embeddings": np.array(r.embeddings)}  # as Collection.get returns

    def delete(self, ids=None, where=None):
        if ids is None and where is None:  # as the client: never "delete everything" by omission
            raise ValueError("At least one of ids or where must be provided")
        self._b.delete(self.id, list(ids) if ids is not None else None,
                       json.dumps(where) if where else None, None, None, TENANT, DATABASE)


def open_fast(path: str, name: str) -> FastCollection | None:
    """The collection through the bindings, or None: the caller falls back to the client."""
    v = chromadb_version()
    if v is None or not v.startswith(CHECKED_VERSIONS) or platform.system() == "Windows":
        return None
    try:
        return FastCollection(path, name)
    except Exception:  # noqa: BLE001 - missing collection, changed private API: use the client
        return None

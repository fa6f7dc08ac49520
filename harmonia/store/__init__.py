"""The results store: SQLite, content-keyed, transactional, resumable."""

from harmonia.store.keys import array_digest, cache_key, dataset_fingerprint, file_digest, files_fingerprint, model_key
from harmonia.store.sqlite import DEFAULT_STORE, ResultStore, Run, StoreError, default_store_path

__all__ = [
    "DEFAULT_STORE",
    "ResultStore",
    "Run",
    "StoreError",
    "array_digest",
    "cache_key",
    "dataset_fingerprint",
    "default_store_path",
    "file_digest",
    "files_fingerprint",
    "model_key",
]

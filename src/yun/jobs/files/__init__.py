"""Uploaded files: the `FileStore` seam and its backends, and the checks of JSONL training and batch files."""

from __future__ import annotations

from yun.jobs.files.local import LocalFileStore
from yun.jobs.files.store import CHUNK_BYTES, FileStore, check_key
from yun.settings import FilesSettings, Settings

__all__ = ["CHUNK_BYTES", "FileStore", "LocalFileStore", "check_key", "file_store"]


def file_store(settings: Settings) -> FileStore:
    """The file store the settings name (`files.backend`)."""
    files: FilesSettings = settings.files
    if files.backend == "local":
        return LocalFileStore(settings.files_dir)
    from yun.jobs.files.s3 import S3FileStore  # boto3 loads only when S3 is used (~0.3 s)

    assert files.s3_bucket is not None  # settings refuse s3 without a bucket
    secret = files.s3_secret_access_key
    return S3FileStore(
        files.s3_bucket,
        endpoint_url=files.s3_endpoint_url,
        region=files.s3_region,
        access_key_id=files.s3_access_key_id,
        secret_access_key=secret.get_secret_value() if secret else None,
    )

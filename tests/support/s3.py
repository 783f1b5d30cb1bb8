"""A local S3-compatible server (moto's server mode) on loopback, for the S3 file store's tests."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator

from tests.support.net import free_port

__all__ = ["S3_CREDENTIALS", "moto_s3", "new_bucket"]

S3_CREDENTIALS = {"access_key_id": "test", "secret_access_key": "test", "region": "us-east-1"}


@contextlib.contextmanager
def moto_s3() -> Iterator[str]:
    """Start moto's S3 server on a free loopback port; yields its endpoint URL."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def new_bucket(endpoint: str) -> str:
    """Create a bucket of a fresh name on the server and return its name."""
    import boto3

    bucket = f"files-{uuid.uuid4().hex[:12]}"
    s3 = boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint,
        region_name=S3_CREDENTIALS["region"],
        aws_access_key_id=S3_CREDENTIALS["access_key_id"],
        aws_secret_access_key=S3_CREDENTIALS["secret_access_key"],
    )
    s3.create_bucket(Bucket=bucket)
    s3.close()
    return bucket

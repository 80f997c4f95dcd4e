"""moto's S3 server on 127.0.0.1: a real S3-compatible endpoint over HTTP, for the archive."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import boto3

#: Dummy credentials the tests use (and check never leak).
ACCESS_KEY = "AKIATESTDONOTLEAK0001"
SECRET_KEY = "secret-DO-NOT-LEAK-b71c"


@dataclass
class S3Server:
    """Where the server listens, and a client for setting up buckets."""

    url: str

    def client(self) -> Any:
        return boto3.client(
            "s3",
            endpoint_url=self.url,
            region_name="us-east-1",
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
        )

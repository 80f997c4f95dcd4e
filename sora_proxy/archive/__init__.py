"""Finished videos' bytes kept after the upstream's copy is gone: pick a backend by URL.

Nothing (the default) keeps them in the Flask instance folder's ``sora_proxy-archive``;
``file:///absolute/path`` or a plain absolute path names another folder;
``s3://bucket/optional/prefix?endpoint_url=http://host:9000&region=us-east-1`` an
S3-compatible bucket, with credentials from boto3's usual chain (``AWS_ACCESS_KEY_ID`` and
``AWS_SECRET_ACCESS_KEY``, a profile, an instance role), never from the URL.
"""

from __future__ import annotations

import os
import re
from urllib.parse import parse_qsl, unquote, urlsplit

from sora_proxy.archive.base import Archive, ArchivedObject, ArchiveError, is_key
from sora_proxy.archive.local import LocalArchive
from sora_proxy.archive.s3 import S3Archive
from sora_proxy.archive.serving import CACHE_CONTROL, archived_response

__all__ = [
    "CACHE_CONTROL",
    "Archive",
    "ArchiveError",
    "ArchivedObject",
    "LocalArchive",
    "S3Archive",
    "archived_response",
    "open_archive",
]

_FORMS = "file:///absolute/path, an absolute path, or s3://bucket/optional/prefix"
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", re.IGNORECASE)
_REGION = re.compile(r"[a-z0-9-]{1,40}")


def open_archive(url: str | None, instance_path: str) -> Archive:
    """The archive ``url`` names; ``None`` or ``""``: ``<instance_path>/sora_proxy-archive``.

    :raises ValueError: ``url`` is none of the accepted forms, or names S3 without boto3
        installed. The message is one line and never repeats the URL or its query values,
        which may be a mistyped secret.
    """
    if not url:
        return LocalArchive(os.path.join(instance_path, "sora_proxy-archive"))
    if os.path.isabs(url):
        return LocalArchive(url)
    parts = urlsplit(url)
    if parts.scheme == "file":
        path = unquote(parts.path)
        if parts.netloc not in {"", "localhost"} or parts.query or not os.path.isabs(path):
            raise ValueError(
                f"a file: archive URL is file:///absolute/path; the forms are {_FORMS}"
            )
        return LocalArchive(path)
    if parts.scheme == "s3":
        return _s3_archive(url)
    raise ValueError(f"not an archive URL; the forms are {_FORMS}")


def _s3_archive(url: str) -> S3Archive:
    """``s3://bucket/optional/prefix?endpoint_url=http://host:9000&region=us-east-1``."""
    parts = urlsplit(url)
    if "@" in parts.netloc:
        raise ValueError(
            "an s3:// URL carries no credentials: set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY (or another source boto3 reads) instead"
        )
    if not _BUCKET.fullmatch(parts.netloc) or parts.fragment:
        raise ValueError("an S3 archive URL is s3://bucket/optional/prefix?options")
    prefix = parts.path.strip("/")
    if prefix and not is_key(prefix):
        raise ValueError("the S3 archive's prefix is not a /-separated relative name")
    options: dict[str, str] = {}
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name not in {"endpoint_url", "region"} or name in options:
            # Only a name that cannot be a key or a secret is repeated back.
            shown = f" {name!r}" if re.fullmatch(r"[a-z_]{1,30}", name) else ""
            raise ValueError(
                f"unknown or repeated s3:// URL option{shown}; the options are endpoint_url "
                "and region"
            )
        options[name] = value
    endpoint = options.get("endpoint_url") or None
    if endpoint is not None:
        target = urlsplit(endpoint)
        if target.scheme not in {"http", "https"} or not target.hostname or "@" in endpoint:
            raise ValueError("endpoint_url is an http:// or https:// URL with no credentials")
    region = options.get("region") or None
    if region is not None and not _REGION.fullmatch(region):
        raise ValueError("region is an S3 region name such as us-east-1")
    return S3Archive(parts.netloc, prefix, endpoint_url=endpoint, region=region)

"""The archive in an S3-compatible bucket (AWS S3, MinIO, Cloudflare R2...), through boto3.

boto3 is imported when an :class:`S3Archive` is made, so the rest of the package works without
it (``pip install 'sora-proxy[s3]'``). Credentials come from boto3's usual chain
(``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, a profile, an instance role), never from the
archive's URL, and never reach a message.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from collections.abc import Iterable, Iterator
from contextlib import suppress
from itertools import chain
from typing import Any, cast

from .base import (
    CHUNK_SIZE,
    DEFAULT_CONTENT_TYPE,
    PARTIAL_MARK,
    Archive,
    ArchivedObject,
    ArchiveError,
    _Entry,
    check_key,
    check_prefix,
    check_span,
    is_key,
    is_partial,
)

#: Size of each part of a multipart upload, and the most of a body held in memory at once.
PART_SIZE = 8 * 1024 * 1024
#: Objects above this are copied into place in parts (S3's single copy stops at 5 GiB).
COPY_PART_SIZE = 512 * 1024 * 1024
_SHA256 = re.compile(r"[0-9a-f]{64}")


class S3Archive(Archive):
    """Keys are objects under ``prefix`` in ``bucket``, each carrying its SHA-256 and
    ``stored_at`` as user metadata (``x-amz-meta-sha256``, ``x-amz-meta-stored-at``).

    **Why a temporary object and a copy.** The hash is known only after the last byte, and
    an object's metadata cannot change once written. A body of one part or less is held
    anyway, so one ``put_object`` carries it with its metadata. A longer one goes up as a
    multipart upload (aborted on any error) to ``<key>.partial-<start>-<random>``, is copied
    server-side onto ``<key>`` with its metadata (``MetadataDirective=REPLACE``; in parts
    above ``copy_part_size``), and the temporary object is deleted. A copy is atomic: ``<key>``
    appears only whole and with its hash, and an older object there stays until then. The
    alternative, a sidecar object written before completing the upload, costs a second
    request on every :meth:`stat` (each download), and a failed upload over an existing key
    would leave the old bytes beside the new bytes' hash. The copy costs server-side time
    only, once per object. A writer killed mid-way leaves a temporary object or an unfinished
    upload; :meth:`sweep` deletes both once older than ``partial_age`` (by the start time in
    their name, our clock). :meth:`sweep` orders objects by the listing's ``LastModified``
    (whole seconds), as a listing carries no user metadata. The prefix belongs to the
    archive: a sweep may delete anything under it.
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        part_size: int = PART_SIZE,
        copy_part_size: int = COPY_PART_SIZE,
    ) -> None:
        try:
            import boto3
            from boto3.exceptions import Boto3Error
            from boto3.s3.transfer import TransferConfig
            from botocore.config import Config
            from botocore.exceptions import BotoCoreError, ClientError
        except ImportError:
            raise ValueError("an s3:// archive needs boto3: pip install 'sora-proxy[s3]'") from None
        self.bucket = bucket
        self.prefix = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
        self.endpoint_url = endpoint_url
        self.part_size = part_size
        self._failures: tuple[type[Exception], ...] = (BotoCoreError, ClientError, Boto3Error)
        config = Config(
            signature_version="s3v4",
            # MinIO and moto serve buckets in the path, not as subdomains.
            s3={"addressing_style": "path"} if endpoint_url else {},
            retries={"mode": "standard", "max_attempts": 4},
            connect_timeout=10,
            read_timeout=60,
            max_pool_connections=32,
        )
        # A session of our own: clients made from boto3's shared default one are not thread-safe.
        session = boto3.session.Session()
        self._client: Any = session.client(
            "s3", endpoint_url=endpoint_url, region_name=region, config=config
        )
        self._copy_config = TransferConfig(
            multipart_threshold=copy_part_size, multipart_chunksize=copy_part_size
        )

    def put(self, key: str, chunks: Iterable[bytes], *, content_type: str) -> ArchivedObject:
        """See :meth:`Archive.put` and the class docstring."""
        name = self._name(key)
        hasher = hashlib.sha256()
        parts = _parts(chunks, self.part_size, hasher)
        body, last = next(parts)
        if last:
            stored = ArchivedObject(key, len(body), hasher.hexdigest(), content_type, time.time())
            self._call("put_object", Key=name, Body=body, ContentType=content_type, **_meta(stored))
            return stored
        temp = f"{name}{PARTIAL_MARK}{int(time.time())}-{secrets.token_hex(6)}"
        upload = self._call("create_multipart_upload", Key=temp, ContentType=content_type)
        done: list[dict[str, Any]] = []
        size = 0
        try:
            for number, (part, _) in enumerate(chain([(body, last)], parts), start=1):
                size += len(part)
                answer = self._call(
                    "upload_part",
                    Key=temp,
                    UploadId=upload["UploadId"],
                    PartNumber=number,
                    Body=part,
                )
                done.append({"ETag": answer["ETag"], "PartNumber": number})
            self._call(
                "complete_multipart_upload",
                Key=temp,
                UploadId=upload["UploadId"],
                MultipartUpload={"Parts": done},
            )
        except BaseException:
            with suppress(ArchiveError):  # the first error is the one to report
                self._call("abort_multipart_upload", Key=temp, UploadId=upload["UploadId"])
            raise
        stored = ArchivedObject(key, size, hasher.hexdigest(), content_type, time.time())
        extra = {"ContentType": content_type, "MetadataDirective": "REPLACE", **_meta(stored)}
        try:
            self._call(
                "copy",
                CopySource={"Bucket": self.bucket, "Key": temp},
                Key=name,
                ExtraArgs=extra,
                Config=self._copy_config,
            )
        finally:
            with suppress(ArchiveError):  # else left for sweep() to find
                self._call("delete_object", Key=temp)
        return stored

    def stat(self, key: str) -> ArchivedObject | None:
        """See :meth:`Archive.stat`. An object not written by this class (no ``sha256``
        metadata) is described with S3's own ETag and ``LastModified``."""
        try:
            head = self._client.head_object(Bucket=self.bucket, Key=self._name(key))
        except self._failures as error:
            if _status(error) == 404:
                return None
            raise ArchiveError(f"S3 head_object failed: {_reason(error)}") from None
        meta = head.get("Metadata", {})
        etag = meta.get("sha256", "")
        if not _SHA256.fullmatch(etag):
            etag = str(head.get("ETag", "")).strip('"')
        try:
            stored_at = float(meta["stored-at"])
        except (KeyError, ValueError):
            stored_at = head["LastModified"].timestamp()
        content_type = head.get("ContentType") or DEFAULT_CONTENT_TYPE
        return ArchivedObject(key, int(head["ContentLength"]), etag, content_type, stored_at)

    def read(self, key: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """See :meth:`Archive.read`: one ``get_object`` with a ``Range`` when not all is read."""
        check_span(start, end)
        return self._chunks(self._name(key), start, end)

    def delete_prefix(self, prefix: str) -> int:
        """See :meth:`Archive.delete_prefix`: a listing, then ``delete_objects`` by 1000."""
        names = [item["Key"] for item in self._list(self.prefix + check_prefix(prefix))]
        self._delete(names)
        return sum(not is_partial(name.rpartition("/")[2]) for name in names)

    def local_path(self, key: str) -> None:
        """Always ``None``: nothing of a bucket is a local file."""
        check_key(key)
        return None

    def ping(self) -> None:
        """See :meth:`Archive.ping`: a one-key listing of the prefix (the sweep needs it)."""
        self._call("list_objects_v2", Prefix=self.prefix, MaxKeys=1)

    def describe(self) -> str:
        """See :meth:`Archive.describe`."""
        at = f" at {self.endpoint_url}" if self.endpoint_url else ""
        return f"s3 bucket {self.bucket} prefix {self.prefix or '/'}{at}"

    def _scan(self, partial_cutoff: float) -> list[_Entry]:
        entries, stale = [], []
        for item in self._list(self.prefix):
            key = item["Key"][len(self.prefix) :]
            modified = item["LastModified"].timestamp()
            if is_partial(key.rpartition("/")[2]):
                if _started(key, modified) < partial_cutoff:
                    stale.append(item["Key"])
            elif is_key(key):
                entries.append(_Entry(key, int(item["Size"]), modified))
        self._delete(stale)
        pages = self._pages("list_multipart_uploads", "Uploads", Prefix=self.prefix)
        for upload in pages:
            if _started(upload["Key"], upload["Initiated"].timestamp()) < partial_cutoff:
                with suppress(ArchiveError):  # finished meanwhile
                    self._call(
                        "abort_multipart_upload", Key=upload["Key"], UploadId=upload["UploadId"]
                    )
        return entries

    def _remove(self, keys: list[str]) -> None:
        self._delete([self.prefix + key for key in keys])

    def _name(self, key: str) -> str:
        return self.prefix + "/".join(check_key(key))

    def _chunks(self, name: str, start: int, end: int | None) -> Iterator[bytes]:
        if end is not None and end < start:
            return
        ranged = {"Range": f"bytes={start}-{'' if end is None else end}"}
        answer = self._call("get_object", Key=name, **(ranged if start or end is not None else {}))
        body = answer["Body"]
        try:
            yield from body.iter_chunks(CHUNK_SIZE)
        except self._failures as error:
            raise ArchiveError(f"S3 get_object broke off: {_reason(error)}") from None
        finally:
            body.close()

    def _list(self, prefix: str) -> Iterator[dict[str, Any]]:
        return self._pages("list_objects_v2", "Contents", Prefix=prefix)

    def _pages(self, operation: str, field: str, **params: Any) -> Iterator[dict[str, Any]]:
        try:
            for page in self._client.get_paginator(operation).paginate(
                Bucket=self.bucket, **params
            ):
                yield from page.get(field, [])
        except self._failures as error:
            raise ArchiveError(f"S3 {operation} failed: {_reason(error)}") from None

    def _delete(self, names: list[str]) -> None:
        for first in range(0, len(names), 1000):
            batch = [{"Key": name} for name in names[first : first + 1000]]
            answer = self._call("delete_objects", Delete={"Objects": batch, "Quiet": True})
            if answer.get("Errors"):
                code = answer["Errors"][0].get("Code", "?")
                raise ArchiveError(f"S3 delete_objects failed: {code}")

    def _call(self, operation: str, **params: Any) -> dict[str, Any]:
        try:
            answer = getattr(self._client, operation)(Bucket=self.bucket, **params)
        except self._failures as error:
            raise ArchiveError(f"S3 {operation} failed: {_reason(error)}") from None
        return cast(dict[str, Any], answer or {})


def _parts(
    chunks: Iterable[bytes], size: int, hasher: hashlib._Hash
) -> Iterator[tuple[bytes, bool]]:
    """``(part, last)``: ``size`` bytes at a time, the last part 1 to ``size`` bytes (empty
    only for an empty body), hashing as it reads; at most a part and a chunk in memory."""
    buffer = bytearray()
    for chunk in chunks:
        hasher.update(chunk)
        buffer += chunk
        # Strictly more: a part is sent only once a byte after it is known to exist.
        while len(buffer) > size:
            yield bytes(buffer[:size]), False
            del buffer[:size]
    yield bytes(buffer), True


def _started(name: str, otherwise: float) -> float:
    """When the write to temporary ``name`` began, by our clock (in its name), else
    ``otherwise`` (some S3-compatible servers report no true upload start)."""
    stamp = name.rpartition(PARTIAL_MARK)[2].partition("-")[0]
    return float(stamp) if stamp.isdigit() else otherwise


def _meta(stored: ArchivedObject) -> dict[str, Any]:
    return {"Metadata": {"sha256": stored.etag, "stored-at": repr(stored.stored_at)}}


def _status(error: Exception) -> int | None:
    response = getattr(error, "response", None) or {}
    return cast(int | None, response.get("ResponseMetadata", {}).get("HTTPStatusCode"))


def _reason(error: Exception) -> str:
    """The error's code and status (never its message: no request details reach a log)."""
    response = getattr(error, "response", None) or {}
    code = response.get("Error", {}).get("Code")
    return f"{code} (HTTP {_status(error)})" if code else type(error).__name__

"""Object storage on S3 (MinIO, or any S3 by endpoint URL) through aioboto3."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from functools import cache
from typing import Any
from urllib.parse import quote

import aioboto3
from aiobotocore.session import get_session
from botocore.config import Config
from botocore.exceptions import ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as EndpointUnreachable
from botocore.loaders import Loader, create_loader

from tenantry.domain.errors import Unavailable

CHUNK = 256 * 1024
MIB = 1024 * 1024


@cache
def _service_descriptions() -> Loader:
    """botocore's reader of its service descriptions, one for the process: each session's own
    parses S3's again, about 60 ms of CPU and 70,000 objects left to the garbage collector
    for every client (every app a test makes)."""
    return create_loader()


def _session() -> aioboto3.Session:
    botocore_session = get_session()
    botocore_session.register_component("data_loader", _service_descriptions())
    return aioboto3.Session(botocore_session=botocore_session)


class S3Storage:
    """Uploads stream as multipart uploads of ``part_size`` bytes: memory holds one part, never
    the file. A failed upload is aborted, so no object and no stray parts remain."""

    def __init__(
        self,
        *,
        bucket: str,
        endpoint_url: str | None,
        region: str,
        access_key_id: str | None,
        secret_access_key: str | None,
        part_size: int = 8 * MIB,
        presign_seconds: int | None = None,
    ) -> None:
        self.bucket = bucket
        self.part_size = max(part_size, 5 * MIB)  # S3's smallest part but the last
        self.presign_seconds = presign_seconds
        self._client_options: dict[str, Any] = {
            "endpoint_url": endpoint_url,
            "region_name": region,
            "aws_access_key_id": access_key_id,
            "aws_secret_access_key": secret_access_key,
            "config": Config(
                retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=5, read_timeout=30
            ),
        }
        self._stack = contextlib.AsyncExitStack()
        self._client: Any = None

    def use_credentials(self, access_key_id: str | None, secret_access_key: str | None) -> None:
        """Replace the configured keys (with Vault's) before ``start`` opens the client."""
        self._client_options["aws_access_key_id"] = access_key_id
        self._client_options["aws_secret_access_key"] = secret_access_key

    def __repr__(self) -> str:
        return (
            f"S3Storage(bucket={self.bucket!r}, endpoint={self._client_options['endpoint_url']!r})"
        )

    async def start(self) -> None:
        """Open the client for the life of the process; create the bucket when it is missing."""
        self._client = await self._stack.enter_async_context(
            _session().client("s3", **self._client_options)
        )
        try:
            await self._client.head_bucket(Bucket=self.bucket)
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") not in {"404", "NoSuchBucket"}:
                raise
            await self._client.create_bucket(Bucket=self.bucket)

    async def close(self) -> None:
        await self._stack.aclose()

    async def put(self, key: str, chunks: AsyncIterator[bytes]) -> None:
        with _unavailable_when_failing():
            await self._put(key, chunks)

    async def _put(self, key: str, chunks: AsyncIterator[bytes]) -> None:
        s3, buffer = self._client, bytearray()
        parts: list[dict[str, Any]] = []
        upload_id: str | None = None
        try:
            async for chunk in chunks:
                buffer += chunk
                while len(buffer) >= self.part_size:
                    if upload_id is None:
                        created = await s3.create_multipart_upload(Bucket=self.bucket, Key=key)
                        upload_id = created["UploadId"]
                    parts.append(
                        await self._part(
                            key, upload_id, len(parts) + 1, bytes(buffer[: self.part_size])
                        )
                    )
                    del buffer[: self.part_size]
            if upload_id is None:
                await s3.put_object(Bucket=self.bucket, Key=key, Body=bytes(buffer))
                return
            if buffer:
                parts.append(await self._part(key, upload_id, len(parts) + 1, bytes(buffer)))
            await s3.complete_multipart_upload(
                Bucket=self.bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
            )
        except BaseException:
            if upload_id is not None:
                with contextlib.suppress(ClientError):
                    await s3.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
            raise

    async def _part(self, key: str, upload_id: str, number: int, body: bytes) -> dict[str, Any]:
        uploaded = await self._client.upload_part(
            Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=body
        )
        return {"PartNumber": number, "ETag": uploaded["ETag"]}

    async def get(
        self, key: str, *, start: int = 0, end: int | None = None
    ) -> AsyncIterator[bytes]:
        byte_range = f"bytes={start}-{'' if end is None else end}"
        with _unavailable_when_failing():
            response = await self._client.get_object(Bucket=self.bucket, Key=key, Range=byte_range)
        body = response["Body"]
        try:
            while chunk := await body.read(CHUNK):
                yield chunk
        finally:
            body.close()

    async def delete(self, key: str) -> None:
        await self._client.delete_object(Bucket=self.bucket, Key=key)

    async def objects(self, prefix: str) -> AsyncIterator[tuple[str, datetime]]:
        paginator = self._client.get_paginator("list_objects_v2")
        async for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                yield item["Key"], item["LastModified"]

    async def discard_unfinished(self, before: datetime) -> int:
        """Abort the multipart uploads begun before ``before`` and never completed (S3 keeps
        their parts, and bills them, until then)."""
        discarded = 0
        paginator = self._client.get_paginator("list_multipart_uploads")
        async for page in paginator.paginate(Bucket=self.bucket):
            for upload in page.get("Uploads", []):
                if upload["Initiated"] < before:
                    with contextlib.suppress(ClientError):
                        await self._client.abort_multipart_upload(
                            Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                        )
                        discarded += 1
        return discarded

    async def ping(self) -> None:
        await self._client.head_bucket(Bucket=self.bucket)

    async def download_url(self, key: str, *, filename: str, content_type: str) -> str | None:
        if self.presign_seconds is None:
            return None
        url: str = await self._client.generate_presigned_url(
            "get_object",
            Params={
                "Bucket": self.bucket,
                "Key": key,
                "ResponseContentType": content_type,
                "ResponseContentDisposition": f"attachment; filename*=UTF-8''{quote(filename)}",
            },
            ExpiresIn=self.presign_seconds,
        )
        return url


# An object a row speaks for, missing: not the store's outage but a fault to look into.
MISSING = frozenset({"NoSuchKey", "404"})


@contextlib.contextmanager
def _unavailable_when_failing() -> Iterator[None]:
    """The store's failures as Unavailable (a 503, "try again shortly"): unreachable, timed out
    or cut off after botocore's own retries, or answering no (its bucket gone, access denied,
    busy past the retries), which is the operator's to fix, not the request's fault."""
    try:
        yield
    except (EndpointUnreachable, HTTPClientError) as error:
        raise Unavailable(f"object store unreachable ({type(error).__name__})") from error
    except ClientError as error:
        code = error.response.get("Error", {}).get("Code", "unknown")
        if code in MISSING:
            raise
        raise Unavailable(f"object store refused ({code})") from error

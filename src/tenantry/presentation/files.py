"""Files of the caller's tenant: streaming multipart uploads and ranged downloads."""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, ClassVar
from urllib.parse import quote
from uuid import UUID

from litestar import Controller, Request, Response, delete, get, head, post
from litestar.di import NamedDependency
from litestar.enums import MediaType
from litestar.exceptions import ClientException, HTTPException
from litestar.openapi import ResponseSpec
from litestar.openapi.spec import OpenAPIMediaType, Operation, Reference, RequestBody, Schema
from litestar.openapi.spec.enums import OpenAPIFormat, OpenAPIType
from litestar.params import FromPath, HeaderParameter, QueryParameter
from litestar.response import Redirect, Stream
from multipart import MultipartError, MultipartSegment, PushMultipartParser, parse_options_header

from tenantry.application.files import (
    DeleteFile,
    DownloadUrl,
    GetFile,
    GetUsage,
    ListFiles,
    ReadFileContent,
    UploadFile,
)
from tenantry.domain.auth import Actor
from tenantry.domain.files import TEXT, StoredFile
from tenantry.domain.usage import Counter, UsageMeter
from tenantry.presentation.errors import BODY_ERRORS, PARAMETER_ERRORS, problems
from tenantry.presentation.pagination import (
    CreatedAfter,
    CreatedBefore,
    Limit,
    Offset,
    Page,
    Search,
    list_query,
    page,
)
from tenantry.presentation.reads import Read
from tenantry.presentation.responses import NEW_RESOURCE, created
from tenantry.presentation.security import SIGNED_IN_ERRORS

FILE_FIELD = "file"
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


class FileRead(Read):
    """A stored file: its name, size, type and SHA-256 as uploaded (the bytes are at its content
    URL)."""

    example: ClassVar[dict[str, Any]] = {
        "id": "c1b2a3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d",
        "original_filename": "brief.pdf",
        "size": 248311,
        "content_type": "application/pdf",
        "sha256": "9f2c4e6a8b0d1f3e5a7c9b1d3f5e7a9c1b3d5f7e9a1c3b5d7f9e1a3c5b7d9f1e",
        "deleted_at": "2026-12-03T10:00:00Z",
    }

    id: UUID
    original_filename: str
    size: int
    content_type: str
    sha256: str
    metadata: dict[str, Any]
    created_by: UUID | None
    created_at: datetime
    deleted_at: datetime | None = None


OCTET_STREAM = "application/octet-stream"
ANY_TYPE = "*/*"


@dataclass
class FileBytes(Operation):
    """A file's bytes, sent with the file's own Content-Type: documented as octet-stream, the
    type client generators keep, and as any type, which is what arrives."""

    def __post_init__(self) -> None:
        for status in ("200", "206"):
            answer = (self.responses or {}).get(status)
            if answer is not None and not isinstance(answer, Reference) and answer.content:
                answer.content[ANY_TYPE] = answer.content[OCTET_STREAM]


class FileUsageRead(Read):
    """The tenant's stored bytes and files against its quota."""

    example: ClassVar[dict[str, Any]] = {"bytes": 73400320, "files": 36, "quota_bytes": 1073741824}

    bytes: int
    files: int
    quota_bytes: int


class FilePart:
    """Finds the ``file`` field in a streamed multipart body and yields its bytes as they come,
    so an upload is never held whole in memory or written to the API's disk."""

    def __init__(self, request: Request[Any, Any, Any]) -> None:
        kind, options = parse_options_header(request.headers.get("content-type", ""))
        if kind != "multipart/form-data" or not options.get("boundary"):
            raise HTTPException(
                status_code=415, detail="Send the file as multipart/form-data in a 'file' field."
            )
        self.request = request
        self.parser = PushMultipartParser(options["boundary"], max_segment_count=16)
        self.filename: str | None = None
        self.content_type: str | None = None
        self._events: list[MultipartSegment | bytes | None] = []
        self._body = request.stream()
        length = request.headers.get("content-length", "")
        # The body's length bounds the file's: the quota is held for it in one step.
        self.length = int(length) if length.isascii() and length.isdigit() else None

    async def _next_event(self) -> MultipartSegment | bytes | None:
        while not self._events:
            chunk = await anext(self._body, b"")
            try:
                self._events.extend(self.parser.parse(chunk))
            except MultipartError as error:
                # Its first argument is the reason; some add the exception behind it, whose repr
                # is no answer for a client.
                reason = error.args[0] if error.args else error
                raise ClientException(f"The multipart body is malformed: {reason}.") from None
            if not chunk and not self._events:
                raise ClientException(f"The multipart body has no '{FILE_FIELD}' field.")
        return self._events.pop(0)

    async def open(self) -> None:
        """Advance to the start of the file field."""
        while True:
            event = await self._next_event()
            if isinstance(event, MultipartSegment) and event.name == FILE_FIELD:
                self.filename = event.filename
                self.content_type = event.content_type
                return

    async def chunks(self) -> AsyncIterator[bytes]:
        while (event := await self._next_event()) is not None:
            if isinstance(event, bytes):
                yield event


@dataclass
class UploadOperation(Operation):
    """The upload's body in the spec: the handler streams it itself, so Litestar cannot tell."""

    def __post_init__(self) -> None:
        file = Schema(type=OpenAPIType.STRING, format=OpenAPIFormat.BINARY)
        form = Schema(type=OpenAPIType.OBJECT, properties={FILE_FIELD: file}, required=[FILE_FIELD])
        self.request_body = RequestBody(
            content={"multipart/form-data": OpenAPIMediaType(schema=form)}, required=True
        )


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The one byte range asked for, inclusive; None for the whole file; 416 when unsatisfiable."""
    if header is None:
        return None
    match = _RANGE.match(header.strip())
    if match is None or match.group(1) == match.group(2) == "":
        return None  # unsupported forms (several ranges) fall back to the whole file
    first, last = match.groups()
    if first == "":
        start, end = max(size - int(last), 0), size - 1
    else:
        start = int(first)
        end = min(int(last), size - 1) if last else size - 1
    if start >= size or start > end:
        raise HTTPException(
            status_code=416,
            detail="The range is outside the file.",
            headers={"Content-Range": f"bytes */{size}"},
        )
    return start, end


async def _after(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """``first``, then the rest of ``rest``, closed however the answer ends (its client gone
    mid-file included), so that its file or connection is given back at once."""
    try:
        yield first
        async for chunk in rest:
            yield chunk
    finally:
        if isinstance(rest, AsyncGenerator):
            await rest.aclose()


def disposition(filename: str) -> str:
    fallback = filename.encode("ascii", "replace").decode().replace('"', "'")
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename)}"


def content_headers(found: StoredFile, start: int, end: int) -> dict[str, str]:
    """What GET and HEAD on a file's content say of it, for the bytes from start to end."""
    # Sniffed as text means it decoded as UTF-8.
    charset = "; charset=utf-8" if found.content_type == TEXT else ""
    return {
        "Content-Type": found.content_type + charset,
        "Content-Length": str(end - start + 1),
        "Accept-Ranges": "bytes",
        "ETag": f'"{found.sha256}"',
        "Content-Disposition": disposition(found.original_filename),
    }


class FilePage(Page[FileRead]):
    """A page of files."""

    items: list[FileRead]


class FileController(Controller):
    path = "/api/v1/files"
    tags = ["files"]

    @post(
        response_headers=NEW_RESOURCE,
        summary="Upload a file (multipart field 'file')",
        description="Too large: 413. Type not allowed (sniffed from the bytes): 415. "
        "An image below the minimum size: 422. Over the tenant's quota: 413. The file store "
        "full (its disk): 507, nothing kept.",
        # The size limit is the upload policy's, enforced while streaming.
        request_max_body_size=None,
        operation_class=UploadOperation,
        responses=problems(*SIGNED_IN_ERRORS, *BODY_ERRORS, 415, 507),
    )
    async def upload_file(
        self,
        request: Request[Any, Any, Any],
        actor: NamedDependency[Actor],
        upload_file: NamedDependency[UploadFile],
    ) -> Response[FileRead]:
        part = FilePart(request)
        await part.open()
        stored = await upload_file(
            actor,
            filename=part.filename,
            claimed_type=part.content_type,
            chunks=part.chunks(),
            expected_size=part.length,
        )
        return created(FileRead.of(stored), f"{self.path}/{stored.id}")

    @get(
        summary="Files of your tenant",
        responses=problems(*SIGNED_IN_ERRORS, *PARAMETER_ERRORS, 403),
    )
    async def list_files(
        self,
        actor: NamedDependency[Actor],
        list_files: NamedDependency[ListFiles],
        limit: Limit = 20,
        offset: Offset = 0,
        q: Search = None,
        created_after: CreatedAfter = None,
        created_before: CreatedBefore = None,
        include_deleted: Annotated[bool, QueryParameter(description="Owners and admins.")] = False,
    ) -> FilePage:
        query = list_query(
            limit, offset, q, created_after=created_after, created_before=created_before
        )
        found = await list_files(actor, query, include_deleted=include_deleted)
        return page(FilePage, found, limit, offset)

    @get(
        "/usage",
        operation_id="getFileUsage",
        summary="Bytes and files stored by your tenant, and its quota",
        responses=problems(*SIGNED_IN_ERRORS),
    )
    async def usage(
        self, actor: NamedDependency[Actor], get_usage: NamedDependency[GetUsage]
    ) -> FileUsageRead:
        return FileUsageRead.of(await get_usage(actor))

    @get(
        "/{file_id:uuid}",
        summary="A file's metadata",
        responses=problems(*SIGNED_IN_ERRORS, *PARAMETER_ERRORS, 404),
    )
    async def get_file(
        self,
        file_id: FromPath[UUID],
        actor: NamedDependency[Actor],
        get_file: NamedDependency[GetFile],
    ) -> FileRead:
        return FileRead.of(await get_file(actor, file_id))

    @get(
        "/{file_id:uuid}/content",
        operation_id="downloadFile",
        summary="A file's bytes",
        description="Streamed with one byte Range supported, or a 307 to a presigned URL "
        "when the store gives one.",
        operation_class=FileBytes,
        responses={
            200: ResponseSpec(
                bytes, description="The file", media_type=OCTET_STREAM, generate_examples=False
            ),
            206: ResponseSpec(
                bytes,
                description="The byte range asked for",
                media_type=OCTET_STREAM,
                generate_examples=False,
            ),
            307: ResponseSpec(None, description="The file's presigned URL, in Location"),
            **problems(*SIGNED_IN_ERRORS, *PARAMETER_ERRORS, 404, 416),
        },
    )
    async def get_content(
        self,
        file_id: FromPath[UUID],
        actor: NamedDependency[Actor],
        get_file: NamedDependency[GetFile],
        read_file_content: NamedDependency[ReadFileContent],
        download_url: NamedDependency[DownloadUrl],
        usage_meter: NamedDependency[UsageMeter],
        range_header: Annotated[
            str | None,
            # A header is a string when sent (Litestar would say "or null").
            HeaderParameter(
                name="Range", max_length=100, schema_extra={"oneOf": None, "type": "string"}
            ),
        ] = None,
    ) -> Stream | Redirect:
        found = await get_file(actor, file_id)
        if range_header is None and (url := await download_url(found)):
            # Fetched from the store, by the client the link was signed for.
            usage_meter.add(actor.tenant_id, Counter.BYTES_DOWNLOADED, found.size)
            return Redirect(url, status_code=307)
        wanted = parse_range(range_header, found.size)
        start, end = wanted or (0, found.size - 1)
        usage_meter.add(actor.tenant_id, Counter.BYTES_DOWNLOADED, end - start + 1)
        headers = content_headers(found, start, end)
        if wanted is not None:
            headers["Content-Range"] = f"bytes {start}-{end}/{found.size}"
        body = read_file_content(found, start=start, end=end)
        # Its first bytes before the answer starts: a store that fails then is a 503 (or a 500),
        # not a 200 cut short.
        first = await anext(body, b"")
        return Stream(_after(first, body), status_code=206 if wanted else 200, headers=headers)

    @head(
        "/{file_id:uuid}/content",
        operation_id="headFileContent",
        summary="A file's headers, without its bytes",
        description="The headers a GET without Range answers, from the file's record alone: "
        "the bytes are not read, and there is no redirect (a presigned URL is signed for GET "
        "only).",
        responses={
            200: ResponseSpec(None, description="The file's headers"),
            **problems(*SIGNED_IN_ERRORS, *PARAMETER_ERRORS, 404),
        },
    )
    async def head_content(
        self,
        file_id: FromPath[UUID],
        actor: NamedDependency[Actor],
        get_file: NamedDependency[GetFile],
    ) -> Response[None]:
        found = await get_file(actor, file_id)
        # Litestar renders no content as an empty body for a text type; the headers say the rest.
        return Response(
            None, media_type=MediaType.TEXT, headers=content_headers(found, 0, found.size - 1)
        )

    @delete(
        "/{file_id:uuid}",
        summary="Delete a file (its uploader, admins and owners; purged after the grace period)",
        responses=problems(*SIGNED_IN_ERRORS, *PARAMETER_ERRORS, 403, 404),
    )
    async def delete_file(
        self,
        file_id: FromPath[UUID],
        actor: NamedDependency[Actor],
        delete_file: NamedDependency[DeleteFile],
    ) -> None:
        await delete_file(actor, file_id)

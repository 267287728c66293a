"""Task ``image.thumbnail``: a thumbnail of each input image, stored as a new file.

    POST /api/v1/tasks
    {"type": "image.thumbnail", "input_files": ["<file id>"],
     "config": {"width": 128, "height": 128, "format": "png"}}

The result lists, per input file, the thumbnail's file id and size; the thumbnails are the
task's output_files, downloaded as any other file.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Annotated, Any, Literal

import msgspec
from PIL import Image

if TYPE_CHECKING:
    from tenantry.application.tasks import TaskContext

# Pillow decodes into memory: an input larger than this is refused rather than read.
MAX_INPUT_BYTES = 20 * 1024 * 1024
Side = Annotated[int, msgspec.Meta(ge=1, le=2048)]
CONTENT_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}


class ThumbnailConfig(msgspec.Struct, forbid_unknown_fields=True):
    width: Side = 128
    height: Side = 128
    format: Literal["png", "jpeg", "webp"] = "png"


class Thumbnail:
    type = "image.thumbnail"
    config_type = ThumbnailConfig
    input_types = frozenset(CONTENT_TYPES.values())
    # A minute per attempt is plenty for 20 MiB images.
    timeout_seconds = 60

    async def run(self, context: TaskContext, config: ThumbnailConfig) -> dict[str, Any]:
        made = {}
        inputs = context.task.input_files
        for index, file_id in enumerate(inputs):
            # Between files: a cancelled task stops here.
            await context.check_cancelled()
            source = await context.input_file(file_id)
            if source.size > MAX_INPUT_BYTES:
                raise ValueError(
                    f"{source.original_filename} is larger than {MAX_INPUT_BYTES} bytes"
                )
            data = bytearray()
            async for chunk in context.read(source):
                data += chunk
            # Decoding and resizing hold the CPU: off the worker's event loop.
            thumbnail = await asyncio.to_thread(_thumbnail, bytes(data), config)
            stem = source.original_filename.rsplit(".", 1)[0]
            stored = await context.write_output(
                f"{stem}.thumbnail.{config.format}",
                _once(thumbnail),
                content_type=CONTENT_TYPES[config.format],
            )
            made[str(file_id)] = {"file_id": str(stored.id), "size": stored.size}
            context.log.info("thumbnail made", extra={"file_id": str(file_id)})
            await context.progress(int((index + 1) / len(inputs) * 100))
        return {"thumbnails": made}


def _thumbnail(data: bytes, config: ThumbnailConfig) -> bytes:
    with Image.open(io.BytesIO(data)) as opened:
        opened.thumbnail((config.width, config.height))
        image = opened.convert("RGB") if config.format == "jpeg" else opened
        out = io.BytesIO()
        image.save(out, format=config.format.upper())
    return out.getvalue()


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data

"""Describe an uploaded file, streaming what it finds line by line: a small model with a
file input and a streamed output, for the dashboard's playground (no dependencies)."""

import hashlib
import mimetypes
import struct
import time
from typing import Annotated

from ember import ConcatenateIterator, Input, Path

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _png_size(head: bytes) -> tuple[int, int] | None:
    if head.startswith(PNG_SIGNATURE) and head[12:16] == b"IHDR":
        return struct.unpack(">II", head[16:24])
    return None


class Predictor:
    def setup(self) -> None:
        """Nothing to load: the model is the code."""

    def predict(
        self,
        file: Path = Input(description="Any file: text is previewed, PNG sizes are read"),
        lines: Annotated[int, Input(ge=0, le=20, description="Lines of text to preview")] = 3,
        pause: Annotated[
            float, Input(ge=0, le=2, description="Seconds between lines, to watch it stream")
        ] = 0.1,
    ) -> ConcatenateIterator[str]:
        data = file.read_bytes()
        print(f"read {len(data)} bytes from {file.name}")
        kind = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
        found = [
            f"name: {file.name}",
            f"size: {len(data):,} bytes",
            f"type: {kind}",
            f"sha256: {hashlib.sha256(data).hexdigest()}",
        ]
        if size := _png_size(data[:24]):
            found.append(f"image: {size[0]} x {size[1]} pixels")
        try:
            text = data.decode()
        except UnicodeDecodeError:
            text = None
        if text is not None and lines:
            found.append(f"first {lines} lines:")
            found += [f"  {line}" for line in text.splitlines()[:lines]]
        for line in found:
            yield line + "\n"
            time.sleep(pause)
        print("done")

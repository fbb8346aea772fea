import struct
import tempfile
import zlib

from ember import Input, Path


def _png(width: int, height: int, rgb: tuple[int, int, int]) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    row = b"\x00" + bytes(rgb) * width
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(row * height))
        + chunk(b"IEND", b"")
    )


class Predictor:
    def setup(self) -> None:
        self.out_dir = Path(tempfile.mkdtemp(prefix="image-out-"))

    def predict(
        self,
        width: int = Input(default=4, ge=1, le=64),
        height: int = Input(default=3, ge=1, le=64),
    ) -> Path:
        path = self.out_dir / "square.png"
        path.write_bytes(_png(width, height, (255, 0, 0)))
        return path

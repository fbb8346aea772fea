from typing import Annotated, Any, Optional

from ember import File, Input, Path, Secret


class Predictor:
    def setup(self) -> None:
        self.ready = "set up"

    def predict(
        self,
        text: str,
        count: int,
        ratio: float,
        flag: bool,
        image: Path,
        blob: File,
        token: Secret,
        tags: list[str],
        numbers: list[int],
        files: list[Path],
        note: Optional[str],
        extra_file: Path | None,  # the PEP 604 spelling of Optional
        steps: int = Input(default=10, ge=1, le=50, description="Denoising steps"),
        name: str = Input(default="ab", min_length=2, max_length=5),
        code: str = Input(default="AB12", regex=r"^[A-Z]{2}[0-9]{2}$"),
        color: str = Input(default="red", choices=["red", "green", "blue"]),
        size: int = Input(default=512, choices=[256, 512, 1024]),
        legacy: str = Input(default="old", deprecated=True, description="Use name instead"),
        repeat: Annotated[int, Input(ge=1, description="How many times")] = 3,
    ) -> dict[str, Any]:
        secret = token.get_secret_value()
        return {
            "setup": self.ready,
            "text": text,
            "count": count,
            "ratio": ratio,
            "flag": flag,
            "image": image.read_text(),
            "image_is_ember_path": isinstance(image, Path),
            "blob": blob.read().decode(),
            "token_type": type(token).__name__,
            "token_received": bool(secret),
            "token_length": len(secret),
            "tags": tags,
            "numbers": numbers,
            "files": [f.read_text() for f in files],
            "note": note,
            "extra_file": extra_file.read_text() if extra_file is not None else None,
            "steps": steps,
            "name": name,
            "code": code,
            "color": color,
            "color_type": type(color).__name__,
            "size": size,
            "size_type": type(size).__name__,
            "legacy": legacy,
            "repeat": repeat,
            "types": [type(v).__name__ for v in (count, ratio, flag)],
        }

import tempfile
from typing import List, Optional

from cog import BaseModel, BasePredictor, Input, Path


class Output(BaseModel):
    text: str
    length: int
    words: List[str]
    score: Optional[float] = None
    file: Path


class Predictor(BasePredictor):
    def predict(
        self,
        text: str = Input(description="Text to analyse", default="the quick brown fox"),
    ) -> Output:
        out_dir = Path(tempfile.mkdtemp())
        out_file = out_dir / "upper.txt"
        out_file.write_text(text.upper())
        words = text.split()
        return Output(
            text=text,
            length=len(text),
            words=words,
            score=len(words) / 10,
            file=out_file,
        )

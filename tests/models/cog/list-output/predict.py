import tempfile
from typing import List

from cog import BasePredictor, Input, Path


class Predictor(BasePredictor):
    def predict(
        self,
        count: int = Input(description="How many text files to write", default=2, ge=1, le=5),
    ) -> List[Path]:
        out_dir = Path(tempfile.mkdtemp())
        paths = []
        for i in range(count):
            p = out_dir / f"file-{i}.txt"
            p.write_text(f"file number {i}\n")
            paths.append(p)
        return paths

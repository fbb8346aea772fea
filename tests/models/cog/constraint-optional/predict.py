from typing import Optional

from cog import BasePredictor, Input, Path


class Predictor(BasePredictor):
    def predict(
        self,
        tag: Optional[str],
        seed: Optional[int] = Input(description="Random seed; leave empty for random"),
        negative: Optional[str] = Input(description="Optional negative prompt"),
        mask: Optional[Path] = Input(description="Optional mask file"),
        bare: Optional[float] = None,
    ) -> str:
        return f"tag={tag} seed={seed} negative={negative} mask={mask is not None} bare={bare}"

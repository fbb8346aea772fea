from typing import Any

from cog import BasePredictor


class Predictor(BasePredictor):
    def predict(self, **kwargs: Any) -> dict:
        return {"received": dict(sorted(kwargs.items()))}

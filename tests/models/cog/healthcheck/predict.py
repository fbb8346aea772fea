import time

from cog import BasePredictor


class Predictor(BasePredictor):
    def setup(self) -> None:
        self.mode = "ok"
        self.checks = 0

    def predict(self, mode: str = "ok", sleep: float = 0.0) -> str:
        """mode: how healthcheck() answers from now on (ok, false, raise, slow, none)."""
        time.sleep(sleep)
        self.mode = mode
        return f"{mode} after {self.checks} checks"

    def healthcheck(self) -> bool:
        self.checks += 1
        if self.mode == "false":
            return False
        if self.mode == "raise":
            raise RuntimeError("the GPU fell off the bus")
        if self.mode == "slow":
            time.sleep(8)
        if self.mode == "none":
            return None  # not False: healthy, as in Cog
        return True

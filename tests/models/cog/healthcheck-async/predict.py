import asyncio

from cog import BasePredictor


class Predictor(BasePredictor):
    def setup(self) -> None:
        self.mode = "ok"
        self.loop = None

    async def predict(self, mode: str = "ok") -> str:
        self.mode = mode
        self.loop = asyncio.get_running_loop()
        return mode

    async def healthcheck(self) -> bool:
        if self.mode == "slow":
            await asyncio.sleep(8)
        # Run on the predictor's own event loop, where its state lives.
        return self.loop in (None, asyncio.get_running_loop()) and self.mode != "false"

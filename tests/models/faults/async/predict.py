"""An async predictor that sleeps or raises on request, for the fault tests."""

import asyncio


class Predictor:
    async def predict(self, mode: str = "ok", seconds: float = 0.0) -> str:
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            print("cancelled cleanly")
            raise
        if mode == "raise":
            raise RuntimeError("async failure")
        return mode

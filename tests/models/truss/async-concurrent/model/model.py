import asyncio


class Model:
    def __init__(self, **kwargs):
        self._active = 0
        self._peak = 0

    async def predict(self, model_input):
        self._active += 1
        self._peak = max(self._peak, self._active)
        try:
            await asyncio.sleep(float(model_input.get("sleep", 0.5)))
        finally:
            self._active -= 1
        return {"id": model_input.get("id"), "peak": self._peak}

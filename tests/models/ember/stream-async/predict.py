import asyncio

from ember import AsyncConcatenateIterator, Input, current_scope, record_metric


class Predictor:
    async def setup(self) -> None:
        await asyncio.sleep(0)
        self.separator = " "

    async def predict(
        self,
        prompt: str = Input(description="Text to echo, one word per chunk"),
        delay: float = Input(default=0.05, ge=0, le=2),
    ) -> AsyncConcatenateIterator[str]:
        for word in prompt.split():
            await asyncio.sleep(delay)
            record_metric("chunks", 1, mode="incr")
            yield word + self.separator
        record_metric("scope_prediction_id", current_scope().prediction_id)

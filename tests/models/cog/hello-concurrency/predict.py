import asyncio

from cog import (
    AsyncConcatenateIterator,
    BasePredictor,
    Input,
    current_scope,
    emit_metric,
)


class Predictor(BasePredictor):
    async def setup(self) -> None:
        await asyncio.sleep(0.01)
        self.chunks = ["one", "two", "three"]

    async def predict(
        self,
        text: str = Input(description="Text appended to every chunk"),
        delay: float = Input(description="Seconds to wait before streaming", default=0.3),
    ) -> AsyncConcatenateIterator[str]:
        await asyncio.sleep(delay)
        n = 0
        for chunk in self.chunks:
            n += 1
            yield f"{chunk} {text}\n"
            await asyncio.sleep(0)
        emit_metric("chunks", n)
        current_scope().record_metric("output_tokens", n)

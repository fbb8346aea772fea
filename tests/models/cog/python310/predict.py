import asyncio
import sys
from typing import AsyncIterator

from cog import BasePredictor


class Predictor(BasePredictor):
    async def predict(self, text: str) -> AsyncIterator[str]:
        yield f"{text} on {sys.version_info[0]}.{sys.version_info[1]}"
        yield await asyncio.sleep(0, result="async too")

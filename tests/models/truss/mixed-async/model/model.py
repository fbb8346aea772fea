import asyncio
import threading
import time


class Model:
    def __init__(self, **kwargs):
        pass

    async def preprocess(self, model_input):
        await asyncio.sleep(0)
        return model_input

    def predict(self, model_input):
        # Blocking work in a sync predict: Truss runs it in a thread even though preprocess
        # is async, so it neither blocks the server's event loop nor other predictions.
        time.sleep(float(model_input.get("sleep", 0.5)))
        return {"id": model_input.get("id"), "thread": threading.current_thread().name}

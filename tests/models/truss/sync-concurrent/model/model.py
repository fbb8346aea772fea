import threading
import time


class Model:
    def __init__(self, **kwargs):
        self._lock = threading.Lock()
        self._active = 0
        self._peak = 0

    def predict(self, model_input):
        with self._lock:
            self._active += 1
            self._peak = max(self._peak, self._active)
        try:
            time.sleep(float(model_input.get("sleep", 0.5)))
        finally:
            with self._lock:
                self._active -= 1
        return {
            "id": model_input.get("id"),
            "peak": self._peak,
            "thread": threading.current_thread().name,
        }

"""A synchronous predictor run on threads (concurrency 2) that works in small steps."""

import time


class Predictor:
    def predict(self, seconds: float = 0.0) -> str:
        steps = 0
        deadline = time.monotonic() + seconds
        try:
            while time.monotonic() < deadline:
                time.sleep(0.02)
                steps += 1
        finally:
            print(f"stopped after {steps} steps")
        return "done"

import sys

from cog import BasePredictor, Input, current_scope


class Predictor(BasePredictor):
    def predict(self, action: str = Input(default="metrics"), name: str = "") -> str:
        """`metrics` records one of each kind; `record` records `name` (which Cog may refuse);
        `exit` calls sys.exit(3)."""
        scope = current_scope()
        if action == "exit":
            sys.exit(3)
        if action == "record":
            scope.record_metric(name, 1)
            return "recorded"
        scope.record_metric("stage.load.seconds", 0.25)
        scope.record_metric("stage.load.tries", 1, mode="incr")
        scope.record_metric("stage.load.tries", 1, mode="incr")
        scope.record_metric("stage.tags", "warm", mode="append")
        scope.record_metric("dropped", 5)
        scope.record_metric("dropped", None)
        scope.metrics["predict_time"] = 1000.0  # the runtime's value wins
        return "ok"

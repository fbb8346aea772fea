import module_that_does_not_exist  # noqa: F401


class Predictor:
    def predict(self) -> str:
        return "never"

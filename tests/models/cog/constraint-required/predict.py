from cog import BasePredictor, Input


class Predictor(BasePredictor):
    def predict(self, name: str, age: int = Input(description="Age in years")) -> str:
        return f"{name} is {age}"

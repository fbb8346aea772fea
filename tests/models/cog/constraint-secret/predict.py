from cog import BasePredictor, Input, Secret


class Predictor(BasePredictor):
    def predict(
        self,
        api_token: Secret = Input(description="A token the model must not echo"),
    ) -> str:
        value = api_token.get_secret_value()
        return f"received a secret of length {len(value)}; repr={api_token!r}"

from cog import BasePredictor, File, Input


class Predictor(BasePredictor):
    def predict(
        self,
        document: File = Input(description="A text document"),
    ) -> str:
        data = document.read()
        if isinstance(data, bytes):
            data = data.decode("utf-8", errors="replace")
        return data.upper()

class Model:
    def __init__(self, **kwargs):
        self._vocabulary = None

    def load(self):
        self._vocabulary = ["alpha", "beta", "gamma", "delta", "epsilon"]

    def preprocess(self, model_input):
        return {"count": int(model_input.get("count", 3))}

    def predict(self, model_input):
        for i in range(model_input["count"]):
            yield self._vocabulary[i % len(self._vocabulary)] + " "

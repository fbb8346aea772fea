class Model:
    # No __init__ at all: Truss inspects the class signature, which takes no arguments, so it
    # passes none.
    def load(self):
        self._suffix = "!"

    def predict(self, model_input):
        return str(model_input.get("text", "")) + self._suffix

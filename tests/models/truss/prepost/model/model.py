import hashlib
import os


class Model:
    def __init__(self, **kwargs):
        self._config = kwargs["config"]
        self._data_dir = kwargs["data_dir"]
        self._secrets = kwargs["secrets"]
        self._greeting = None
        self._loads = 0
        self._calls = 0

    def load(self):
        self._loads += 1
        self._greeting = (self._data_dir / "greeting.txt").read_text().strip()

    def preprocess(self, model_input):
        return {"text": str(model_input["text"]).strip().lower(), "trace": ["preprocess"]}

    def predict(self, model_input):
        self._calls += 1
        punctuation = os.environ.get("GREETING_PUNCTUATION", "")
        return {
            "text": f"{self._greeting} {model_input['text']}{punctuation}",
            "trace": model_input["trace"] + ["predict"],
            "call": self._calls,
        }

    def postprocess(self, model_output):
        api_key = self._secrets["api_key"]
        return {
            "text": model_output["text"],
            "trace": model_output["trace"] + ["postprocess"],
            "call": model_output["call"],
            "loads": self._loads,
            "model_name": self._config["model_name"],
            "cpu": self._config["resources"]["cpu"],
            "api_key_sha256": hashlib.sha256(api_key.encode()).hexdigest() if api_key else None,
        }

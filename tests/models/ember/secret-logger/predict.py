"""A careless model: it prints its Secret input, fails with it in the message or returns it
in its output when asked, so tests can check that Ember keeps the value out of what it stores and shows."""

import hashlib

from ember import Secret


class Predictor:
    def predict(
        self, api_key: Secret, text: str = "hi", fail: bool = False, echo: bool = False
    ) -> str:
        value = api_key.get_secret_value()
        print(f"calling the upstream API with key {value}")
        if fail:
            raise RuntimeError(f"upstream refused key {value}")
        if echo:
            return f"the key was {value}"
        return f"{text}: key sha256 {hashlib.sha256(value.encode()).hexdigest()[:12]}"

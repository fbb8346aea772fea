class Model:
    # Only `config`: Truss injects a keyword argument only when the constructor accepts it,
    # so passing data_dir/secrets/environment here would be a TypeError at startup.
    def __init__(self, config):
        self._config = config

    def predict(self, model_input):
        return {
            "model_name": self._config["model_name"],
            "owner": self._config["model_metadata"]["owner"],
            "echo": model_input,
        }

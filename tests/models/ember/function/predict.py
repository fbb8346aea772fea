from ember import Input


def predict(
    text: str = Input(description="Text to repeat"),
    times: int = Input(default=2, ge=1, le=10),
) -> str:
    return "-".join([text] * times)

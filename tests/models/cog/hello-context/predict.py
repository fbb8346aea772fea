from cog import current_scope


def predict(text: str) -> dict:
    return {"text": text, "context": current_scope().context}

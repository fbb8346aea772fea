"""A Truss model with Baseten's OpenAI hook: `chat_completions(model_input, request)`."""


class Model:
    def __init__(self, **kwargs):
        pass

    async def predict(self, model_input):
        return {"echo": model_input.get("text", "")}

    async def chat_completions(self, model_input, request):
        text = model_input["messages"][-1]["content"].upper()
        return {
            "id": "chatcmpl-truss",
            "object": "chat.completion",
            "created": 1,
            "model": model_input["model"],
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
            ],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }

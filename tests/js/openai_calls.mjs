// The official JavaScript `openai` client against a real `ember serve`: only `baseURL`
// differs from talking to OpenAI. Each call below runs in turn; what it returned (or the
// error it threw) is printed as one JSON object, for tests/integration/api/test_js_clients.py
// to check. Usage: node openai_calls.mjs  (EMBER_URL, EMBER_TOKEN, MODEL set)
import OpenAI from "openai";
import { runCalls } from "./run_calls.mjs";

const client = new OpenAI({
  apiKey: process.env.EMBER_TOKEN,
  baseURL: `${process.env.EMBER_URL}/v1`,
  maxRetries: 0,
});
const model = process.env.MODEL;
const user = (content) => [{ role: "user", content }];

const calls = {
  async chat() {
    const answer = await client.chat.completions.create({ model, messages: user("hello js") });
    return { content: answer.choices[0].message.content, usage: answer.usage };
  },
  async chatStream() {
    const stream = await client.chat.completions.create({
      model,
      messages: user("one two three"),
      stream: true,
      stream_options: { include_usage: true },
    });
    const pieces = [];
    let usage = null;
    for await (const chunk of stream) {
      if (chunk.choices.length) pieces.push(chunk.choices[0].delta.content || "");
      if (chunk.usage) usage = chunk.usage;
    }
    return { text: pieces.join(""), usage };
  },
  async completions() {
    const completion = await client.completions.create({ model, prompt: "abc" });
    return completion.choices[0].text;
  },
  async embeddings() {
    const embedded = await client.embeddings.create({ model, input: ["banana", "kiwi"] });
    return embedded.data.map((d) => Array.from(d.embedding));
  },
  async models() {
    const ids = [];
    for await (const entry of client.models.list()) ids.push(entry.id);
    return { ids, retrieved: (await client.models.retrieve(model)).id };
  },
  async notFound() {
    try {
      await client.chat.completions.create({ model: "nobody/nothing", messages: user("x") });
      return "no error";
    } catch (error) {
      return { status: error.status, message: error.message };
    }
  },
  async responses() {
    const response = await client.responses.create({ model, input: "hello responses" });
    return { text: response.output_text, status: response.status, usage: response.usage };
  },
  async responsesStream() {
    const stream = await client.responses.create({ model, input: "one two", stream: true });
    const types = [];
    let text = "";
    for await (const event of stream) {
      types.push(event.type);
      if (event.type === "response.output_text.delta") text += event.delta;
    }
    return { types, text };
  },
};

await runCalls(calls);

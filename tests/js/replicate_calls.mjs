// The official JavaScript `replicate` client against a real `ember serve`: only `baseUrl`
// differs from talking to Replicate. Each call below runs in turn; what it returned (or the
// error it threw) is printed as one JSON object, for tests/integration/api/test_js_clients.py
// to check. Usage: node replicate_calls.mjs  (EMBER_URL, EMBER_TOKEN, HELLO_VERSION set)
import Replicate from "replicate";
import { runCalls } from "./run_calls.mjs";

const replicate = new Replicate({
  auth: process.env.EMBER_TOKEN,
  baseUrl: `${process.env.EMBER_URL}/v1`,
  useFileOutput: false, // plain URLs, as JSON can carry them
});
const helloVersion = process.env.HELLO_VERSION;

const calls = {
  run: () => replicate.run("ember/hello", { input: { text: "Ada" } }),
  runByVersion: () => replicate.run(`ember/hello:${helloVersion}`, { input: { text: "Bea" } }),
  runIterator: () => replicate.run("ember/canary", { input: { text: "Cy" } }),
  async createAndWait() {
    const created = await replicate.predictions.create({
      version: helloVersion,
      input: { text: "waiting" },
    });
    const done = await replicate.wait(created, { interval: 50 });
    const got = await replicate.predictions.get(created.id);
    return { status: done.status, output: done.output, got: got.output, urls: done.urls };
  },
  async modelPrediction() {
    const created = await replicate.predictions.create({
      model: "ember/hello",
      input: { text: "m" },
      wait: 30,
    });
    return { status: created.status, output: created.output };
  },
  async stream() {
    const events = [];
    for await (const event of replicate.stream("ember/canary", { input: { text: "Bo" } })) {
      events.push({ event: event.event, data: event.data });
    }
    return events;
  },
  async filesCreate() {
    const file = await replicate.files.create(Buffer.from("ember reads files"), {
      purpose: "test",
    });
    const listed = await replicate.files.list();
    const got = await replicate.files.get(file.id);
    return { file, listed: listed.results.map((f) => f.id), got: got.id };
  },
  fileInput: () =>
    replicate.run("ember/document", {
      input: { document: new Blob(["javascript reads files"], { type: "text/plain" }) },
    }),
  async deployments() {
    const deployment = await replicate.deployments.get("ember", "hello");
    const prediction = await replicate.deployments.predictions.create("ember", "hello", {
      input: { text: "dep" },
      wait: 30,
    });
    const listed = await replicate.deployments.list();
    return {
      deployment,
      status: prediction.status,
      output: prediction.output,
      listed: listed.results.map((d) => `${d.owner}/${d.name}`),
    };
  },
  async models() {
    const model = await replicate.models.get("ember", "hello");
    const versions = await replicate.models.versions.list("ember", "hello");
    const version = await replicate.models.versions.get("ember", "hello", helloVersion);
    return {
      name: `${model.owner}/${model.name}`,
      latest: model.latest_version.id,
      versions: versions.results.map((v) => v.id),
      inputs: Object.keys(version.openapi_schema.components.schemas.Input.properties),
    };
  },
  async search() {
    const page = await replicate.models.search("canary");
    return page.results.map((m) => `${m.owner}/${m.name}`);
  },
  async cancel() {
    const running = await replicate.predictions.create({
      model: "ember/faults",
      input: { mode: "sleep", seconds: 30 },
    });
    const canceled = await replicate.predictions.cancel(running.id);
    const done = await replicate.wait(canceled, { interval: 50 });
    return done.status;
  },
  async failing() {
    try {
      await replicate.run("ember/faults", { input: { mode: "raise" } });
      return "no error";
    } catch (error) {
      return String(error.message);
    }
  },
  async paginate() {
    const pages = [];
    for await (const page of replicate.paginate(replicate.predictions.list)) {
      pages.push(page.length);
      if (pages.length === 2) break;
    }
    return pages;
  },
  hardware: () => replicate.hardware.list(),
  account: () => replicate.accounts.current(),
  webhookSecret: () => replicate.webhooks.default.secret.get(),
};

await runCalls(calls);

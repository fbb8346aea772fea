// Runs each call of a script in turn and prints what each returned, or the error it threw,
// as one JSON object by name: one failing call does not hide what the others do.
export async function runCalls(calls) {
  const results = {};
  for (const [name, call] of Object.entries(calls)) {
    try {
      results[name] = { ok: await call() };
    } catch (error) {
      results[name] = { error: String(error && error.message ? error.message : error) };
    }
  }
  process.stdout.write(JSON.stringify(results));
}

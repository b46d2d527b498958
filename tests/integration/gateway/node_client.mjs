// A client of the sandq gateway in another language: Node.js with its built-in fetch only.
// Usage: node node_client.mjs BASE_URL API_KEY
// Submits code that prints, waits and prints; reads the Server-Sent Events until the result;
// prints one JSON object: the execution id, each event (when it came, its name, id and data).
const [base, key] = process.argv.slice(2);
const auth = { authorization: `Bearer ${key}` };
const code = "import time\nprint('hello from node')\ntime.sleep(1)\nprint('bye')";

const submitted = await fetch(`${base}/v1/executions`, {
  method: "POST",
  headers: { ...auth, "content-type": "application/json" },
  body: JSON.stringify({ code, stream_output: true }),
});
if (submitted.status !== 202) {
  console.error(`submit answered ${submitted.status}: ${await submitted.text()}`);
  process.exit(1);
}
const { id } = await submitted.json();

const stream = await fetch(`${base}/v1/executions/${id}/events`, {
  headers: { ...auth, accept: "text/event-stream" },
});
if (stream.status !== 200) {
  console.error(`events answered ${stream.status}`);
  process.exit(1);
}
const started = Date.now();
const events = [];
const reader = stream.body.getReader();
const decoder = new TextDecoder();
let buffer = "";
reading: for (;;) {
  const { value, done } = await reader.read();
  if (done) break;
  buffer += decoder.decode(value, { stream: true });
  let end;
  while ((end = buffer.indexOf("\n\n")) >= 0) {
    const block = buffer.slice(0, end);
    buffer = buffer.slice(end + 2);
    const event = { at: Date.now() - started };
    const data = [];
    for (const line of block.split("\n")) {
      if (line.startsWith(":")) continue; // a keep-alive comment
      const colon = line.indexOf(":");
      const field = line.slice(0, colon);
      const text = line.slice(colon + 1).replace(/^ /, "");
      if (field === "data") data.push(text);
      else event[field] = text;
    }
    if (!data.length) continue;
    event.data = JSON.parse(data.join("\n"));
    events.push(event);
    if (event.event === "result") break reading;
  }
}
await reader.cancel();
console.log(JSON.stringify({ id, events }));

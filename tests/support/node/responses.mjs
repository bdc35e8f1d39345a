// openai-node's Responses API against a base URL (a hybridgate proxy): create, stream,
// retrieve, previous_response_id, delete. Prints one JSON object with what it saw.
// Usage: node responses.mjs BASE_URL KEY MODEL [MAX_OUTPUT_TOKENS]
import OpenAI from "openai";

const [baseURL, apiKey, model, max] = process.argv.slice(2);
const limit = max ? { max_output_tokens: Number(max) } : {};
const client = new OpenAI({ baseURL, apiKey, maxRetries: 0, timeout: 30000 });
const out = {};
// The text of a response's message items (finalResponse() has no output_text helper).
const text = (r) =>
  r.output
    .filter((i) => i.type === "message")
    .flatMap((i) => i.content.map((c) => c.text ?? ""))
    .join("");

const first = await client.responses.create({ model, input: "Hello from openai-node.", ...limit });
out.create = { id: first.id, status: first.status, text: text(first), usage: first.usage };

const stream = client.responses.stream({ model, input: "Stream from openai-node.", ...limit });
const kinds = [];
let last = null; // the terminal event's response (completed, or incomplete when cut short)
for await (const event of stream) {
  kinds.push(event.type);
  if (event.response) last = event.response;
}
const final = await stream.finalResponse();
out.stream = { id: final.id, kinds, text: text(final), usage: last.usage };

const next = await client.responses.create({
  model,
  input: "And the second turn?",
  previous_response_id: first.id,
  ...limit,
});
out.next = { id: next.id, previous: next.previous_response_id, usage: next.usage };

out.retrieved = (await client.responses.retrieve(first.id)).id;
await client.responses.del(first.id);
try {
  await client.responses.retrieve(first.id);
  out.after_delete = 200;
} catch (err) {
  out.after_delete = err.status;
}
console.log(JSON.stringify(out));

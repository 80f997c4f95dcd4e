// One round trip through sora_proxy with the official openai Node SDK, for
// tests/test_node_sdk.py: create (text only, then with a reference image), poll to the end
// (this SDK has no createAndPoll: retrieve until the status is final, as its docs suggest),
// downloadContent, list, delete. Prints one JSON line of what it saw.
//   node round_trip.mjs <proxy base URL ending in /v1> <caller key> <model> <reference png path>
import { createHash } from "node:crypto";
import { readFile } from "node:fs/promises";
import OpenAI, { toFile } from "openai";

const [baseURL, apiKey, model, referencePath] = process.argv.slice(2);
const client = new OpenAI({ baseURL, apiKey, maxRetries: 0 });

const textOnly = await client.videos.create({ prompt: "A paper boat", model });
const png = await readFile(referencePath);
const withImage = await client.videos.create({
  prompt: "A cat",
  model,
  input_reference: await toFile(png, "cat.png", { type: "image/png" }),
});
let done = await client.videos.create({ prompt: "A lighthouse", model });
const deadline = Date.now() + 30_000;
while (["queued", "in_progress"].includes(done.status) && Date.now() < deadline) {
  await new Promise((resolve) => setTimeout(resolve, 100));
  done = await client.videos.retrieve(done.id);
}
const content = await client.videos.downloadContent(done.id);
const bytes = Buffer.from(await content.arrayBuffer());
const listed = [];
for await (const video of client.videos.list()) listed.push(video.id);
const deleted = await client.videos.delete(done.id);
let afterDelete = null;
try {
  await client.videos.retrieve(done.id);
} catch (error) {
  afterDelete = error.status;
}
console.log(JSON.stringify({
  created: [textOnly.status, withImage.status],
  ids: [textOnly.id, withImage.id, done.id],
  done: { status: done.status, progress: done.progress, model: done.model },
  sha256: createHash("sha256").update(bytes).digest("hex"),
  length: bytes.length,
  listed,
  deleted: deleted.deleted,
  afterDelete,
}));

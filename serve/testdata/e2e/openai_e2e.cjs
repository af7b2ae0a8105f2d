// End-to-end check of `lorakit serve` with the official `openai` npm package.
// Run by serve/e2e_test.go (TestOpenAINodeE2E), which starts a server on a tiny random model and sets:
//   LORAKIT_URL     http://127.0.0.1:PORT
//   LORAKIT_KEY     the server's --api-key
//   LORAKIT_EXPECT  JSON {"<model>": "<greedy text from models.Generate>"} for base and adapters
//   LORAKIT_SPARE   path of an adapter folder to load at run time
// Install: npm install --prefix /tmp/lorakit-e2e openai ; then NODE_PATH=/tmp/lorakit-e2e/node_modules
'use strict';
const assert = require('node:assert/strict');
const OpenAI = require('openai');

const url = process.env.LORAKIT_URL;
const key = process.env.LORAKIT_KEY;
const expect = JSON.parse(process.env.LORAKIT_EXPECT);
const spare = process.env.LORAKIT_SPARE;
const client = new OpenAI({ baseURL: url + '/v1', apiKey: key, maxRetries: 0 });
const messages = [{ role: 'user', content: 'hello there' }];

async function post(path, body) {
  const r = await fetch(url + path, {
    method: 'POST', body: JSON.stringify(body),
    headers: { 'Content-Type': 'application/json', Authorization: 'Bearer ' + key },
  });
  return { status: r.status, text: await r.text() };
}

async function main() {
  // /v1/models: base + adapters with lineage
  const list = [];
  for await (const m of client.models.list()) list.push(m);
  const ids = list.map((m) => m.id);
  for (const name of Object.keys(expect)) assert.ok(ids.includes(name), `models.list lacks ${name}: ${ids}`);
  const a1 = list.find((m) => m.id === 'a1');
  assert.equal(a1.parent, 'tiny');

  // non-streaming chat, adapter selection by `model`
  for (const [model, want] of Object.entries(expect)) {
    const r = await client.chat.completions.create({ model, messages, temperature: 0, max_tokens: 12 });
    assert.equal(r.object, 'chat.completion');
    assert.equal(r.choices[0].message.role, 'assistant');
    assert.equal(r.choices[0].message.content, want, `non-streaming ${model}`);
    assert.ok(['stop', 'length'].includes(r.choices[0].finish_reason));
    assert.equal(r.usage.total_tokens, r.usage.prompt_tokens + r.usage.completion_tokens);
  }

  // streaming chat with usage
  for (const [model, want] of Object.entries(expect)) {
    const stream = await client.chat.completions.create({
      model, messages, temperature: 0, max_tokens: 12, stream: true, stream_options: { include_usage: true },
    });
    let text = '', finish = null, usage = null, first = true;
    for await (const chunk of stream) {
      assert.equal(chunk.object, 'chat.completion.chunk');
      if (first) { assert.equal(chunk.choices[0].delta.role, 'assistant'); first = false; }
      if (chunk.usage) usage = chunk.usage;
      for (const c of chunk.choices) {
        if (c.delta.content) text += c.delta.content;
        if (c.finish_reason) finish = c.finish_reason;
      }
    }
    assert.equal(text, want, `streaming ${model}`);
    assert.ok(finish, 'no finish_reason');
    assert.ok(usage && usage.completion_tokens > 0, 'no usage chunk');
  }

  // legacy completions
  const c = await client.completions.create({ model: 'a1', prompt: 'abc', max_tokens: 4, temperature: 0 });
  assert.equal(c.object, 'text_completion');
  assert.equal(typeof c.choices[0].text, 'string');

  // runtime load / unload (vLLM contract)
  let r = await post('/v1/load_lora_adapter', { lora_name: 'extra', lora_path: spare });
  assert.equal(r.status, 200, r.text);
  assert.equal(r.text, "Success: LoRA adapter 'extra' added successfully.");
  const s = await client.chat.completions.create({ model: 'extra', messages, temperature: 0, max_tokens: 4 });
  assert.equal(typeof s.choices[0].message.content, 'string');
  r = await post('/v1/unload_lora_adapter', { lora_name: 'extra' });
  assert.equal(r.status, 200, r.text);
  assert.equal(r.text, "Success: LoRA adapter 'extra' removed successfully.");

  // errors map to the SDK's classes
  await assert.rejects(client.chat.completions.create({ model: 'extra', messages }), OpenAI.NotFoundError);
  await assert.rejects(client.chat.completions.create({ model: 'tiny', messages, temperature: 5 }), OpenAI.BadRequestError);
  const bad = new OpenAI({ baseURL: url + '/v1', apiKey: 'wrong', maxRetries: 0 });
  await assert.rejects(bad.models.list(), OpenAI.AuthenticationError);
  console.log('E2E OK');
}

main().catch((e) => { console.error(e); process.exit(1); });

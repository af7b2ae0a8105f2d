// End-to-end check of tool calling with the official `openai` npm package.
// Run by serve/e2e_test.go (TestOpenAINodeTools) against a server whose fake model answers model "call" with
// `I will look it up.` and a Hermes <tool_call> for get_weather({"city": "Paris"}), and model "two" with two calls.
//   LORAKIT_URL  http://127.0.0.1:PORT
'use strict';
const assert = require('node:assert/strict');
const OpenAI = require('openai');

const client = new OpenAI({ baseURL: process.env.LORAKIT_URL + '/v1', apiKey: 'unused', maxRetries: 0 });
const tools = [{
  type: 'function',
  function: {
    name: 'get_weather', description: 'Weather now',
    parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
  },
}];
const messages = [{ role: 'user', content: 'Weather in Paris?' }];

function checkCall(tc) {
  assert.match(tc.id, /^call_/);
  assert.equal(tc.type, 'function');
  assert.equal(tc.function.name, 'get_weather');
  return JSON.parse(tc.function.arguments);
}

async function main() {
  // non-streaming
  const r = await client.chat.completions.create({ model: 'call', messages, tools, tool_choice: 'auto' });
  const msg = r.choices[0].message;
  assert.equal(r.choices[0].finish_reason, 'tool_calls');
  assert.equal(msg.content, 'I will look it up.');
  assert.equal(msg.tool_calls.length, 1);
  assert.deepEqual(checkCall(msg.tool_calls[0]), { city: 'Paris' });

  // streaming through the SDK's accumulator (it validates index/id/type/name/arguments)
  const stream = client.chat.completions.stream({ model: 'two', messages, tools });
  const done = [];
  stream.on('tool_calls.function.arguments.done', (e) => done.push(e.parsed_arguments ?? JSON.parse(e.arguments)));
  const final = await stream.finalChatCompletion();
  const fm = final.choices[0].message;
  assert.equal(final.choices[0].finish_reason, 'tool_calls');
  assert.equal(fm.content, null);
  assert.deepEqual(fm.tool_calls.map(checkCall), [{ city: 'Paris' }, { city: 'Oslo' }]);
  assert.notEqual(fm.tool_calls[0].id, fm.tool_calls[1].id);
  assert.deepEqual(done, [{ city: 'Paris' }, { city: 'Oslo' }]);

  // the conversation goes on with the SDK's own assistant message and a tool result
  const next = await client.chat.completions.create({
    model: 'call', tools,
    messages: [...messages, msg, { role: 'tool', tool_call_id: msg.tool_calls[0].id, content: 'sunny, 21C' }],
  });
  assert.equal(next.object, 'chat.completion');

  // tool_choice "required" constrains the output to a call (the adapter's script is one)
  const req = await client.chat.completions.create({ model: 'call', messages, tools, tool_choice: 'required' });
  assert.equal(req.choices[0].finish_reason, 'tool_calls');
  assert.equal(req.choices[0].message.tool_calls[0].function.name, 'get_weather');
  // naming a function that is not offered is refused
  await assert.rejects(
    client.chat.completions.create({ model: 'call', messages, tools, tool_choice: { type: 'function', function: { name: 'nope' } } }),
    (e) => e instanceof OpenAI.BadRequestError && e.param === 'tool_choice',
  );
  console.log('openai tools e2e: ok');
}

main().catch((e) => { console.error(e); process.exit(1); });

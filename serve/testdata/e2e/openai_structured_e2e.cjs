// Structured outputs through the official openai SDK's helpers against lorakit serve on stories260K (with a
// Hermes tool-calling chat template): zodResponseFormat with chat.completions.parse (whole and streamed), and a
// tool_choice "required" round trip with zodFunction tools. Run by serve's TestOpenAINodeStructured.
const assert = require('node:assert/strict');
const OpenAI = require('openai');
const { zodResponseFormat, zodFunction } = require('openai/helpers/zod');
const { z } = require('zod');

const client = new OpenAI({ baseURL: process.env.LORAKIT_URL + '/v1', apiKey: 'unused' });
const model = 'stories';

const Story = z.object({
  title: z.string().max(24),
  mood: z.enum(['happy', 'sad', 'scared']),
  hero: z.object({ name: z.string().max(12), age: z.number().int().min(1).max(99) }),
  friends: z.array(z.string().max(10)).max(3),
  ending: z.string().max(40).nullable(),
});

async function main() {
  const messages = [{ role: 'user', content: 'Tell me a story about Lily and her dog.' }];
  for (const seed of [1, 2, 3]) {
    const c = await client.chat.completions.parse({ model, messages, seed, temperature: 1.0, max_tokens: 400,
      response_format: zodResponseFormat(Story, 'story') });
    const msg = c.choices[0].message;
    assert.equal(c.choices[0].finish_reason, 'stop');
    assert.ok(msg.parsed, 'parsed is set');
    Story.parse(msg.parsed); // the helper parsed it already; check again
    console.log('parse seed', seed, JSON.stringify(msg.parsed));
  }
  const stream = client.chat.completions.stream({ model, messages, seed: 7, max_tokens: 400,
    response_format: zodResponseFormat(Story, 'story') });
  const final = await stream.finalChatCompletion();
  Story.parse(final.choices[0].message.parsed);
  console.log('streamed', JSON.stringify(final.choices[0].message.parsed));

  // guided_choice (vLLM's) passes through the SDK as an extra body field
  const choice = await client.chat.completions.create({ model, messages, guided_choice: ['yes', 'no'], max_tokens: 5 });
  assert.ok(['yes', 'no'].includes(choice.choices[0].message.content), choice.choices[0].message.content);

  const weather = zodFunction({ name: 'get_weather', description: 'The weather in a city',
    parameters: z.object({ city: z.string().max(20), unit: z.enum(['c', 'f']) }) });
  const toys = zodFunction({ name: 'find_toy', parameters: z.object({ toy: z.string().max(12) }) });
  const ask = [{ role: 'user', content: 'What is the weather in Paris?' }];
  const r = await client.chat.completions.parse({ model, messages: ask, tools: [weather, toys], tool_choice: 'required',
    max_tokens: 300, seed: 4 });
  const m = r.choices[0].message;
  assert.equal(r.choices[0].finish_reason, 'tool_calls');
  assert.ok(m.tool_calls.length >= 1, 'at least one call');
  for (const call of m.tool_calls) {
    assert.ok(['get_weather', 'find_toy'].includes(call.function.name), call.function.name);
    assert.ok(call.function.parsed_arguments, 'arguments parsed by the SDK');
  }
  console.log('required', JSON.stringify(m.tool_calls.map((c) => c.function)));

  const named = await client.chat.completions.parse({ model, messages: ask, tools: [weather, toys],
    tool_choice: { type: 'function', function: { name: 'get_weather' } }, max_tokens: 300, seed: 5 });
  const call = named.choices[0].message.tool_calls[0];
  assert.equal(named.choices[0].message.tool_calls.length, 1);
  assert.equal(call.function.name, 'get_weather');
  const args = call.function.parsed_arguments;
  assert.ok(['c', 'f'].includes(args.unit));

  // the round trip: the tool's result goes back, the model answers in text
  const back = await client.chat.completions.create({ model, max_tokens: 30, tools: [weather, toys], seed: 6,
    messages: [...ask, named.choices[0].message, { role: 'tool', tool_call_id: call.id, content: 'sunny, 21C' }] });
  assert.equal(typeof back.choices[0].message.content, 'string');
  console.log('round trip answer', JSON.stringify(back.choices[0].message.content));
  console.log('structured e2e ok');
}

main().catch((e) => { console.error(e); process.exit(1); });

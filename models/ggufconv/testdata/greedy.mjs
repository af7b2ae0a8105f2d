// Greedy continuation in llama.cpp (node-llama-cpp): reads JSON lines {prompt, prompt_ids} on stdin, writes
// {prompt, tokenized, greedy_ids} lines: tokenized is llama.cpp's tokenization of prompt (no BOS), greedy_ids
// the n tokens it picks after prompt_ids.
import {getLlama} from "node-llama-cpp";
import {readFileSync} from "node:fs";
const [modelPath, n, ...loras] = process.argv.slice(2);
const llama = await getLlama({gpu: false, build: "never", logLevel: "error"});
const model = await llama.loadModel({modelPath});
// f32 KV cache (llama.cpp defaults to f16) and no flash attention, so that only summation order differs.
const ctxOpts = {contextSize: 512, batchSize: 512, threads: 1, flashAttention: false,
  experimentalKvCacheKeyType: "F32", experimentalKvCacheValueType: "F32"};
if (loras.length) ctxOpts.lora = {adapters: loras.map(filePath => ({filePath, scale: 1}))};
const lines = readFileSync(0, "utf8").split("\n").filter(Boolean).map(l => JSON.parse(l));
for (const p of lines) {
  const context = await model.createContext(ctxOpts);
  const seq = context.getSequence();
  const out = [];
  for await (const t of seq.evaluate(p.prompt_ids, {temperature: 0})) { out.push(t); if (out.length >= Number(n)) break; }
  console.log(JSON.stringify({prompt: p.prompt, tokenized: Array.from(model.tokenize(p.prompt, false)), greedy_ids: out}));
  await context.dispose();
}

// Tokenizes strings with llama.cpp from a GGUF file's tokenizer: reads JSON lines {text} from the file given
// after the model, writes {ids, ids_with_special} lines (special-token text is parsed as special tokens).
import {getLlama} from "node-llama-cpp";
import {readFileSync} from "node:fs";
const [modelPath, input] = process.argv.slice(2);
const llama = await getLlama({gpu: false, build: "never", logLevel: "error"});
const model = await llama.loadModel({modelPath});
for (const line of readFileSync(input, "utf8").split("\n").filter(Boolean)) {
  const {text} = JSON.parse(line);
  const ids = Array.from(model.tokenize(text, true));
  const bos = model.tokens.bos, eos = model.tokens.eos;
  const withSpecial = [...(model.tokens.shouldPrependBosToken && bos != null ? [bos] : []), ...ids,
    ...(model.tokens.shouldAppendEosToken && eos != null ? [eos] : [])];
  console.log(JSON.stringify({ids, ids_with_special: withSpecial}));
}

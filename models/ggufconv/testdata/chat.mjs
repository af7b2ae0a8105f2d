// Renders conversations through node-llama-cpp's chat wrapper for the chat template stored in a GGUF file and
// tokenizes the result with llama.cpp. stdin: JSON lines {messages, add_generation_prompt}; stdout: {ids, text}.
import {getLlama, JinjaTemplateChatWrapper} from "node-llama-cpp";
import {readFileSync} from "node:fs";
const [modelPath] = process.argv.slice(2);
const llama = await getLlama({gpu: false, build: "never", logLevel: "error"});
const model = await llama.loadModel({modelPath});
const template = model.fileInfo.metadata.tokenizer.chat_template;
const wrapper = new JinjaTemplateChatWrapper({template, tokenizer: model.tokenizer, trimLeadingWhitespaceInResponses: false});
for (const line of readFileSync(0, "utf8").split("\n").filter(Boolean)) {
  const conv = JSON.parse(line);
  const chatHistory = conv.messages.map(m => m.role === "assistant" ? {type: "model", response: [m.content]}
    : {type: m.role, text: m.content});
  if (conv.add_generation_prompt) chatHistory.push({type: "model", response: []});
  const {contextText} = wrapper.generateContextState({chatHistory});
  // One string with the special tokens spelled out, tokenized in one go with special-token parsing (tokenizing
  // the wrapper's pieces one by one would give each piece its own SentencePiece space prefix).
  let text = "";
  for (const v of contextText.values) {
    if (typeof v === "string") text += v;
    else if (v.constructor.name === "SpecialToken") text += model.detokenize([model.tokens[v.value.toLowerCase()]], true);
    else text += v.value;
  }
  console.log(JSON.stringify({ids: Array.from(model.tokenize(text, true)), text}));
}

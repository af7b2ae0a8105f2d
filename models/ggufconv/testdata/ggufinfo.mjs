// Parses GGUF files with @huggingface/gguf (an implementation independent of lorakit's) and prints, one line per
// file, its metadata (value and GGUF type) and tensor table as JSON; 64-bit integers become strings.
import {gguf} from "@huggingface/gguf";
for (const path of process.argv.slice(2)) {
  const {typedMetadata, tensorInfos, tensorDataOffset} = await gguf(path, {allowLocalFile: true, typedMetadata: true});
  console.log(JSON.stringify({metadata: typedMetadata, tensors: tensorInfos, dataOffset: tensorDataOffset},
    (k, v) => typeof v === "bigint" ? v.toString() : v));
}

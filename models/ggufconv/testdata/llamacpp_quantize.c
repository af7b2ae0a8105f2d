// Re-quantises a GGUF model file with llama.cpp's own llama_model_quantize (what the llama-quantize tool calls),
// from the libllama that node-llama-cpp ships. Built by the Go tests with gcc; the llama.h declarations needed
// are written out here (the package ships no headers). Usage: llamacpp_quantize IN OUT FTYPE
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// llama_model_quantize_params, leading fields as llama.h declares them; the tail is padding for the pointers
// and any fields this copy does not name.
struct params {
	int32_t nthread;
	int32_t ftype;
	int32_t output_tensor_type;
	int32_t token_embedding_type;
	bool allow_requantize;
	bool quantize_output_tensor;
	bool only_copy;
	bool pure;
	bool keep_split;
	char tail[256];
};

struct params llama_model_quantize_default_params(void);
uint32_t llama_model_quantize(const char *fname_inp, const char *fname_out, const struct params *params);
void llama_backend_init(void);

int main(int argc, char **argv) {
	if (argc != 4) {
		fprintf(stderr, "usage: %s IN OUT FTYPE\n", argv[0]);
		return 2;
	}
	llama_backend_init();
	struct params p = llama_model_quantize_default_params();
	p.nthread = 1;
	p.ftype = atoi(argv[3]);
	p.pure = true; // every 2-D weight in ftype's type (no Q6_K output, no mixtures)
	uint32_t rc = llama_model_quantize(argv[1], argv[2], &p);
	if (rc != 0) {
		fprintf(stderr, "llama_model_quantize failed: %u\n", rc);
		return 1;
	}
	return 0;
}

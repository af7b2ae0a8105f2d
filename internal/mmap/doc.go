// Package mmap maps a whole file into memory read-only (or reads it where mmap is unavailable), for the readers
// of model files (safetensors, GGUF), and hands out anonymous memory in transparent huge pages for the weights
// inference keeps resident (Anon).
package mmap

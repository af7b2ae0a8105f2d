// Package mmap maps a whole file into memory read-only (or reads it where mmap is unavailable), for the readers
// of model files (safetensors, GGUF).
package mmap

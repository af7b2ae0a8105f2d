// Package iocount counts the bytes written through an io.Writer: the checkpoint writers (models/gguf,
// models/safetensors) hand one to each tensor's fill function and then check that it wrote exactly the size
// the header announced.
package iocount

import "io"

// Writer passes every Write to W and adds the bytes W accepted to N.
type Writer struct {
	W io.Writer
	N int64
}

func (c *Writer) Write(p []byte) (int, error) {
	n, err := c.W.Write(p)
	c.N += int64(n)
	return n, err
}

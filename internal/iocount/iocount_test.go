package iocount

import (
	"bytes"
	"errors"
	"testing"
)

// shortWriter accepts at most room bytes, then fails.
type shortWriter struct{ room int }

func (s *shortWriter) Write(p []byte) (int, error) {
	if len(p) <= s.room {
		s.room -= len(p)
		return len(p), nil
	}
	n := s.room
	s.room = 0
	return n, errors.New("full")
}

func TestWriterCounts(t *testing.T) {
	var buf bytes.Buffer
	c := &Writer{W: &buf}
	for _, s := range []string{"abc", "", "defgh"} {
		if _, err := c.Write([]byte(s)); err != nil {
			t.Fatal(err)
		}
	}
	if c.N != 8 || buf.String() != "abcdefgh" {
		t.Fatalf("N=%d buf=%q, want 8 and abcdefgh", c.N, buf.String())
	}
	// a short write counts only what the underlying writer took, and passes its error on
	c = &Writer{W: &shortWriter{room: 5}}
	c.Write([]byte("abc"))
	n, err := c.Write([]byte("defg"))
	if n != 2 || err == nil || c.N != 5 {
		t.Fatalf("short write: n=%d err=%v N=%d, want 2, an error, 5", n, err, c.N)
	}
}

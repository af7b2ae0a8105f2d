package testenv

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"testing"
)

// EachLine calls fn with every line of the file at path (lines up to 64 MiB; fn must not keep the slice). It
// fails t when the file cannot be read.
func EachLine(t testing.TB, path string, fn func(line []byte)) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	for sc.Scan() {
		fn(sc.Bytes())
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// ReadJSONL decodes every non-blank line of the JSONL file at path into a T, failing t on any error.
func ReadJSONL[T any](t testing.TB, path string) []T {
	t.Helper()
	var out []T
	EachLine(t, path, func(line []byte) {
		if len(bytes.TrimSpace(line)) == 0 {
			return
		}
		var v T
		if err := json.Unmarshal(line, &v); err != nil {
			t.Fatalf("%s: line %d: %v", path, len(out)+1, err)
		}
		out = append(out, v)
	})
	return out
}

package npy

import (
	"os"
	"path/filepath"
	"testing"
)

func TestRoundTripAndAppend(t *testing.T) {
	p := filepath.Join(t.TempDir(), "a.npy")
	w, err := Create(p, 3)
	if err != nil {
		t.Fatal(err)
	}
	for r := range 4 {
		if err := w.Row([]float32{float32(r), -1.5, float32(r) * 1e-3}); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(p)
	if len(b) != headerSize+4*3*4 || string(b[:6]) != magic || b[headerSize-1] != '\n' || headerSize%64 != 0 {
		t.Fatalf("file of %d bytes, header %q", len(b), b[:headerSize])
	}
	// an interrupted run wrote a fourth row the resumed one does not keep
	w, err = Append(p, 3, 3)
	if err != nil {
		t.Fatal(err)
	}
	w.Row([]float32{7, 8, 9})
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	v, rows, cols, err := Read(p)
	if err != nil || rows != 4 || cols != 3 || v[9] != 7 || v[4] != -1.5 || v[6] != 2 {
		t.Fatalf("read %v %d×%d %v", v, rows, cols, err)
	}
	if _, err := Append(p, 3, 5); err == nil {
		t.Error("Append kept more rows than the file has")
	}
	if _, err := Append(p, 4, 1); err == nil {
		t.Error("Append accepted another width")
	}
	os.WriteFile(p, []byte("not npy"), 0o644)
	if _, _, _, err := Read(p); err == nil {
		t.Error("read a file that is not .npy")
	}
}

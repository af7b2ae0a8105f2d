package npy

import (
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// numpyPython is a Python that imports numpy: $LORAKIT_NUMPY_PYTHON (.ci/install/80-numpy.sh), else Debian's
// /usr/bin/python3 or the python3 on PATH; "" when none does.
func numpyPython() string {
	cands := []string{os.Getenv("LORAKIT_NUMPY_PYTHON"), "/usr/bin/python3", "python3"}
	for _, c := range cands {
		if c != "" && exec.Command(c, "-c", "import numpy").Run() == nil {
			return c
		}
	}
	return ""
}

// TestNumPyReadsAndWrites: numpy.load reads what Writer writes (shape, values, a NaN row), and Read reads what
// numpy.save writes.
func TestNumPyReadsAndWrites(t *testing.T) {
	py := numpyPython()
	if py == "" {
		t.Skip("no python3 with numpy (Debian python3-numpy; .ci/install/80-numpy.sh installs it)")
	}
	dir := t.TempDir()
	ours := filepath.Join(dir, "ours.npy")
	w, err := Create(ours, 3)
	if err != nil {
		t.Fatal(err)
	}
	w.Row([]float32{1, 2.5, -3})
	w.Row([]float32{float32(math.NaN()), 0, 1e-7})
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	theirs := filepath.Join(dir, "theirs.npy")
	script := `import sys, numpy as np
a = np.load(sys.argv[1])
assert a.dtype == np.float32 and a.shape == (2, 3), (a.dtype, a.shape)
assert a[0].tolist() == [1.0, 2.5, -3.0] and np.isnan(a[1, 0]) and a[1, 2] == np.float32(1e-7), a
np.save(sys.argv[2], np.arange(12, dtype=np.float32).reshape(4, 3) / 8)
print("ok")`
	out, err := exec.Command(py, "-c", script, ours, theirs).CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "ok" {
		t.Fatalf("numpy on our file: %v\n%s", err, out)
	}
	v, rows, cols, err := Read(theirs)
	if err != nil || rows != 4 || cols != 3 || v[11] != 11.0/8 || v[1] != 1.0/8 {
		t.Fatalf("numpy's file read as %v %d×%d, %v", v, rows, cols, err)
	}
}

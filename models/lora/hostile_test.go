package lora

import (
	"encoding/binary"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// fitBase is a base whose q_proj is [8, 4] (in 4, out 8).
var fitBase = Base{Linear: func(m string) (int, int, bool) { return 4, 8, strings.HasSuffix(m, "q_proj") }}

func saveQProj(t *testing.T, a0 float32) string {
	t.Helper()
	a := New(NewConfig(2, 4, []string{"q_proj"}))
	p := a.Config.NewPair("model.layers.0.self_attn.q_proj", 4, 8)
	p.A[3] = a0
	a.Modules["model.layers.0.self_attn.q_proj"] = p
	dir := filepath.Join(t.TempDir(), "ad")
	if err := a.Save(dir); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestNonFiniteWeightsAreRefused(t *testing.T) {
	if _, err := LoadUnmerged(saveQProj(t, 0.5), fitBase); err != nil {
		t.Fatal(err)
	}
	for _, v := range []float32{float32(math.NaN()), float32(math.Inf(1)), float32(math.Inf(-1))} {
		_, err := LoadUnmerged(saveQProj(t, v), fitBase)
		if err == nil || !strings.Contains(err.Error(), "lora_A.weight") || !strings.Contains(err.Error(), "corrupt") {
			t.Fatalf("%v weight: %v", v, err)
		}
	}
}

// TestShapesCheckedBeforeReading: a file whose header claims a 640 MB lora_A that does not fit the base is
// refused from the header: nothing near that size is read (the file is sparse: 16 KB on disk).
func TestShapesCheckedBeforeReading(t *testing.T) {
	dir := saveQProj(t, 0.5)
	const in = 10_000_000
	hdr := map[string]any{
		"__metadata__": map[string]string{"format": "pt"},
		KeyPrefix + "model.layers.0.self_attn.q_proj.lora_A.weight": map[string]any{"dtype": "F32", "shape": []int{2, in}, "data_offsets": []int64{0, 2 * in * 4}},
		KeyPrefix + "model.layers.0.self_attn.q_proj.lora_B.weight": map[string]any{"dtype": "F32", "shape": []int{8, 2}, "data_offsets": []int64{2 * in * 4, 2*in*4 + 64}},
	}
	h, _ := json.Marshal(hdr)
	path := filepath.Join(dir, WeightsName)
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	binary.Write(f, binary.LittleEndian, uint64(len(h)))
	f.Write(h)
	if err := f.Truncate(int64(8 + len(h) + 2*in*4 + 64)); err != nil {
		t.Fatal(err)
	}
	f.Close()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, err = LoadUnmerged(dir, fitBase)
	runtime.ReadMemStats(&after)
	if err == nil || !strings.Contains(err.Error(), "does not fit the base model") || !strings.Contains(err.Error(), "in features") {
		t.Fatalf("a 640 MB adapter for another base: %v", err)
	}
	if grew := after.TotalAlloc - before.TotalAlloc; grew > 8<<20 {
		t.Fatalf("refusing it allocated %d MB", grew>>20)
	}
}

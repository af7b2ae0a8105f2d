package serve

import (
	"path/filepath"
	"testing"

	"github.com/lorakit/lorakit/models"
	"github.com/lorakit/lorakit/models/llama"
	"github.com/lorakit/lorakit/models/testmodel"
	"github.com/lorakit/lorakit/serve/backend"
)

// TestKVCacheDType: the KV cache follows the base's compute dtype by default (f32 for an f32 base, bf16 for a
// bf16 one), --kv-cache-dtype overrides it, the KV budget counts its bytes, and the states hold that type.
func TestKVCacheDType(t *testing.T) {
	dir := t.TempDir()
	for _, dt := range []string{"F32", "BF16"} {
		o := testmodel.Default()
		o.DType = dt
		p := filepath.Join(dir, dt)
		if err := testmodel.Write(p, o); err != nil {
			t.Fatal(err)
		}
		m, err := models.Load(p, models.LoadOptions{Threads: 1})
		if err != nil {
			t.Fatal(err)
		}
		defer m.Close()
		perToken := int64(2 * m.Config.NumHiddenLayers * m.Config.KVDim())
		want := llama.KVF32
		if dt == "BF16" {
			want = llama.KVBF16
		}
		for _, c := range []struct {
			opt  string
			want llama.KVDType
		}{{"", want}, {"auto", want}, {"f32", llama.KVF32}, {"BF16", llama.KVBF16}} {
			be, err := backend.FromModelOptions(m, backend.Options{KVCacheDType: c.opt})
			if err != nil {
				t.Fatal(err)
			}
			if be.KVCacheDType() != c.want || be.KVBytesPerToken() != perToken*int64(c.want.Size()) {
				t.Fatalf("%s base, --kv-cache-dtype %q: %v cache, %d bytes per token", dt, c.opt, be.KVCacheDType(), be.KVBytesPerToken())
			}
			if st := be.NewState(8).(*llama.KVCache); st.DType() != c.want {
				t.Fatalf("%s base, --kv-cache-dtype %q: state of %v", dt, c.opt, st.DType())
			}
		}
		if _, err := backend.FromModelOptions(m, backend.Options{KVCacheDType: "f8"}); err == nil {
			t.Fatal("--kv-cache-dtype f8 accepted")
		}
	}
}

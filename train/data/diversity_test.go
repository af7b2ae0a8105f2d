package data_test

import (
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/lorakit/lorakit/internal/npy"
	"github.com/lorakit/lorakit/internal/testenv"
	"github.com/lorakit/lorakit/models"
	"github.com/lorakit/lorakit/models/testmodel"
	"github.com/lorakit/lorakit/train/data"
)

// planted is a synthetic scored set: topics × families × paraphrases, embeddings built around a random
// centre per topic, a tighter one per family and a little noise per paraphrase; topic 0 has the best rewards,
// so plain top-N by reward takes nothing else.
type planted struct {
	scored string
	topic  map[int]int // line → topic
}

func writePlanted(t *testing.T, topics, families, para, dim int) planted {
	t.Helper()
	rng := rand.New(rand.NewPCG(42, 1))
	vec := func(base []float64, scale float64) []float64 {
		v := make([]float64, dim)
		for i := range v {
			v[i] = rng.NormFloat64() * scale
			if base != nil {
				v[i] += base[i]
			}
		}
		return v
	}
	dir := t.TempDir()
	p := planted{scored: filepath.Join(dir, "scored.jsonl"), topic: map[int]int{}}
	w, err := npy.Create(data.EmbeddingsPath(p.scored), dim)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	line := 0
	for tp := range topics {
		centre := vec(nil, 1)
		for f := range families {
			fam := vec(centre, 0.25)
			for k := range para {
				line++
				p.topic[line] = tp
				reward := float64(-tp) + 0.1*rng.Float64()
				sb, _ := json.Marshal(data.Score{Line: line, ModelScore: &data.ModelScore{PPL: 2}, Reward: &reward})
				fmt.Fprintf(&b, `{"score":%s,"prompt":"topic %d family %d version %d","response":"r"}`+"\n", sb, tp, f, k)
				v := vec(fam, 0.05)
				row := make([]float32, dim)
				for i, x := range v {
					row[i] = float32(x)
				}
				if err := w.Row(row); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p.scored, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// keptTopics filters with o and returns the topics of the kept lines, in order.
func (p planted) keptTopics(t *testing.T, o data.FilterOptions) []int {
	t.Helper()
	out := filepath.Join(t.TempDir(), "kept.jsonl")
	if _, err := data.Filter(p.scored, out, o); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var topics []int
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		var tp, f, k int
		var ex struct{ Prompt string }
		json.Unmarshal([]byte(l), &ex)
		if _, err := fmt.Sscanf(ex.Prompt, "topic %d family %d version %d", &tp, &f, &k); err != nil {
			t.Fatalf("kept line %q: %v", l, err)
		}
		topics = append(topics, tp)
	}
	return topics
}

// TestDiversityPlanted: the report finds the planted topics (one cluster each, effective number of clusters ≈
// k); --select N --diverse takes examples of every topic where top-N by reward takes only the best topic; the
// selection is the same for the same seed.
func TestDiversityPlanted(t *testing.T) {
	const topics, families, para = 4, 3, 5
	p := writePlanted(t, topics, families, para, 32)
	rep, err := data.Diversity(p.scored, data.DiversityOptions{Clusters: topics, Seed: 7})
	if err != nil {
		t.Fatal(err)
	}
	if rep.K != topics || len(rep.Clusters) != topics || rep.Examples != topics*families*para {
		t.Fatalf("report: k %d, %d clusters, %d examples", rep.K, len(rep.Clusters), rep.Examples)
	}
	for _, c := range rep.Clusters {
		tp := p.topic[c.Representatives[0].Line]
		if c.Size != families*para || len(c.Representatives) != 3 {
			t.Errorf("cluster %d: size %d (want %d), %d representatives", c.ID, c.Size, families*para, len(c.Representatives))
		}
		for _, r := range c.Representatives {
			if p.topic[r.Line] != tp || !strings.HasPrefix(r.Text, fmt.Sprintf("topic %d ", tp)) {
				t.Errorf("cluster %d mixes topics: representative line %d %q", c.ID, r.Line, r.Text)
			}
		}
	}
	if rep.EffectiveClusters < topics-0.01 || rep.EffectiveClusters > topics+0.01 {
		t.Errorf("effective clusters %.3f, want %d", rep.EffectiveClusters, topics)
	}
	// k = families·topics splits the topics into their paraphrase families
	fine, err := data.Diversity(p.scored, data.DiversityOptions{Clusters: topics * families, Seed: 7})
	if err != nil {
		t.Fatal(err)
	}
	if fine.EffectiveClusters < topics*families*0.8 { // k-means++ may merge two families and split another
		t.Errorf("with k = %d: effective clusters %.2f", topics*families, fine.EffectiveClusters)
	}

	const n = 8
	top := p.keptTopics(t, data.FilterOptions{By: "reward", Select: n})
	if len(top) != n || slices.ContainsFunc(top, func(tp int) bool { return tp != 0 }) {
		t.Fatalf("top-%d by reward kept topics %v, want only topic 0", n, top)
	}
	sel := data.FilterOptions{By: "reward", Select: n, Diverse: true, QualityWeight: 1, Seed: 3}
	div := p.keptTopics(t, sel)
	seen := map[int]int{}
	for _, tp := range div {
		seen[tp]++
	}
	if len(div) != n || len(seen) != topics {
		t.Fatalf("--select %d --diverse kept topics %v, want all %d", n, div, topics)
	}
	if seen[0] < 2 {
		t.Errorf("--diverse kept topics %v: the best topic should get more than its share with quality weight 1", div)
	}
	cov := p.keptTopics(t, data.FilterOptions{By: "reward", Select: n, Diverse: true, Seed: 3})
	for tp := range topics {
		if !slices.Contains(cov, tp) || strings.Count(fmt.Sprint(cov), fmt.Sprint(tp)) > n/2 {
			t.Errorf("coverage alone (quality weight 0) kept topics %v, want every topic and none dominating", cov)
			break
		}
	}
	if again := p.keptTopics(t, sel); !slices.Equal(again, div) {
		t.Errorf("same seed, different selection: %v then %v", div, again)
	}
	t.Logf("top-%d by reward: topics %v; diverse: %v; report: effective clusters %.2f", n, top, div, rep.EffectiveClusters)
}

// TestSelectDiverseProbes: with coverage measured on a seeded sample, the selection still spans every topic and
// is the same for the same seed.
func TestSelectDiverseProbes(t *testing.T) {
	const topics, per, dim = 5, 20, 16
	rng := rand.New(rand.NewPCG(1, 2))
	x := make([]float32, topics*per*dim)
	q := make([]float64, topics*per)
	for tp := range topics {
		c := make([]float32, dim)
		for i := range c {
			c[i] = float32(rng.NormFloat64())
		}
		for k := range per {
			r := tp*per + k
			for i := range dim {
				x[r*dim+i] = c[i] + float32(rng.NormFloat64()*0.1)
			}
			q[r] = rng.Float64()
		}
	}
	idx := make([]int, topics*per)
	for i := range idx {
		idx[i] = i
	}
	v := data.NewVectors(x, topics*per, dim, 1)
	a := v.SelectDiverse(idx, q, topics, data.SelectOptions{Probes: 30, Seed: 9})
	b := v.SelectDiverse(idx, q, topics, data.SelectOptions{Probes: 30, Seed: 9})
	got := map[int]bool{}
	for _, r := range a {
		got[r/per] = true
	}
	if !slices.Equal(a, b) || len(got) != topics {
		t.Fatalf("selection %v / %v covers topics %v", a, b, got)
	}
}

// storyFamilies are text lines in six paraphrase families of three versions (two families per topic: a model
// of stories260K's size tells the families apart, not the topics).
var storyFamilies = [][]string{
	{"The cat sat on the mat and purred.", "The cat sat on the soft mat and purred.", "A cat sat on the mat and purred."},
	{"The little cat slept in the sun by the door.", "The cat slept in the warm sun by the door.", "The little cat slept in the sun near the door."},
	{"Tom kicked the red ball in the park.", "Tom kicked the big red ball in the park.", "Tim kicked the red ball in the park."},
	{"The boy threw the ball to his dog.", "The boy threw the ball to his happy dog.", "A boy threw the ball to his dog."},
	{"Lily ate a big red apple for lunch.", "Lily ate a red apple for her lunch.", "Lily ate a big apple for lunch."},
	{"Mom baked a sweet cake with cream.", "Mom baked a sweet cake with lots of cream.", "Mom made a sweet cake with cream."},
}

// TestEmbedStories runs the real embedding path: data score --embed-model stories260K (mean pooling) writes one
// row per line (NaN for the bad one) equal to the float64 reference mean of the final hidden states, a resumed
// run completes the rows, the diversity report finds the planted paraphrase families for every seed, and
// --select --diverse takes one of each.
func TestEmbedStories(t *testing.T) {
	dir := filepath.Join(testenv.Testdata(t), "models", "stories260K")
	m, err := models.Load(dir, models.LoadOptions{Threads: 2, Kind: models.AnyKind})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	var lines []string
	family := map[string]int{} // text → family
	for f, texts := range storyFamilies {
		for _, s := range texts {
			b, _ := json.Marshal(map[string]string{"text": s})
			lines = append(lines, string(b))
			family[s] = f
		}
	}
	lines = append(lines[:4], append([]string{`{"text":`}, lines[4:]...)...) // a bad line 5
	in := filepath.Join(t.TempDir(), "in.jsonl")
	os.WriteFile(in, []byte(strings.Join(lines, "\n")+"\n"), 0o644)
	out := filepath.Join(t.TempDir(), "scored.jsonl")
	bos, _ := m.Tok.BOS()
	o := data.ScoreOptions{Tok: m.Tok, Tpl: m.Chat, BOS: bos, HasBOS: true, Scorer: &data.ModelScorer{Net: m.Net}, BatchTokens: 64,
		Embed: &data.Embedder{Judge: data.Judge{Net: m.Net, Tok: m.Tok, Tpl: m.Chat}, Pool: "mean"}}
	if _, err := data.ScoreFile(in, out, o); err != nil {
		t.Fatal(err)
	}
	x, rows, cols, err := npy.Read(data.EmbeddingsPath(out))
	if err != nil || rows != len(lines) || cols != m.Config.HiddenSize {
		t.Fatalf("embeddings %d×%d, err %v; want %d×%d", rows, cols, err, len(lines), m.Config.HiddenSize)
	}
	if !math.IsNaN(float64(x[4*cols])) {
		t.Errorf("bad line 5 has an embedding")
	}
	c := m.Config
	for _, r := range []int{0, len(lines) - 1} { // the reference is slow: two lines
		var ex struct{ Text string }
		json.Unmarshal([]byte(lines[r]), &ex)
		hs, err := testmodel.RefHidden(dir, testmodel.RefConfig{Hidden: c.HiddenSize, HeadDim: c.HeadDim, Heads: c.NumAttentionHeads,
			KVHeads: c.NumKeyValueHeads, Layers: c.NumHiddenLayers, RMSNormEps: c.RMSNormEps, InvFreq: c.InvFreq()}, m.Tok.Encode(ex.Text, true))
		if err != nil {
			t.Fatal(err)
		}
		for j := range cols {
			mean := 0.0
			for _, h := range hs {
				mean += h[j] / float64(len(hs))
			}
			if d := math.Abs(float64(x[r*cols+j]) - mean); d > 1e-5 {
				t.Fatalf("line %d dim %d: embedding %g, float64 reference %g", r+1, j, x[r*cols+j], mean)
			}
		}
	}
	// resume after a torn run: the jsonl keeps 3 lines, the embeddings are cut to match and completed (to 1e-6:
	// the resumed lines are batched differently)
	b, _ := os.ReadFile(out)
	keep := strings.SplitAfterN(string(b), "\n", 4)
	os.Remove(out)
	os.WriteFile(out+".partial", []byte(keep[0]+keep[1]+keep[2]), 0o644)
	os.Rename(data.EmbeddingsPath(out), data.EmbeddingsPath(out)+".partial")
	o.Resume = true
	if _, err := data.ScoreFile(in, out, o); err != nil {
		t.Fatal(err)
	}
	y, rows2, _, err := npy.Read(data.EmbeddingsPath(out))
	if err != nil || rows2 != rows {
		t.Fatalf("resumed embeddings: %d rows, %v", rows2, err)
	}
	for i := range x {
		if d := math.Abs(float64(x[i] - y[i])); d > 1e-6 || math.IsNaN(float64(x[i])) != math.IsNaN(float64(y[i])) {
			t.Fatalf("resumed embeddings differ at row %d by %g", i/cols, d)
		}
	}
	for seed := range uint64(3) {
		rep, err := data.Diversity(out, data.DiversityOptions{Clusters: len(storyFamilies), Seed: seed})
		if err != nil {
			t.Fatal(err)
		}
		if rep.Skipped != 1 || rep.Examples != len(lines)-1 || len(rep.Clusters) != len(storyFamilies) || rep.EffectiveClusters < 5.99 {
			t.Fatalf("seed %d: %d examples, %d skipped, %d clusters, effective %.2f", seed, rep.Examples, rep.Skipped, len(rep.Clusters), rep.EffectiveClusters)
		}
		for _, cl := range rep.Clusters {
			for _, r := range cl.Representatives {
				if family[r.Text] != family[cl.Representatives[0].Text] {
					t.Errorf("seed %d: cluster %d mixes families: %q and %q", seed, cl.ID, cl.Representatives[0].Text, r.Text)
				}
			}
		}
	}
	kept := filepath.Join(t.TempDir(), "kept.jsonl")
	if _, err := data.Filter(out, kept, data.FilterOptions{By: "ppl", Select: len(storyFamilies), Diverse: true, QualityWeight: 0.5}); err != nil {
		t.Fatal(err)
	}
	got := map[int]bool{}
	for _, l := range strings.Split(strings.TrimSpace(readString(t, kept)), "\n") {
		var ex struct{ Text string }
		json.Unmarshal([]byte(l), &ex)
		got[family[ex.Text]] = true
	}
	if len(got) != len(storyFamilies) {
		t.Errorf("--select %d --diverse on stories260K embeddings covers families %v", len(storyFamilies), got)
	}
}

func readString(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

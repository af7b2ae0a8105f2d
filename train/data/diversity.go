package data

import (
	"container/heap"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"sort"
	"strings"

	"github.com/lorakit/lorakit/internal/npy"
	"github.com/lorakit/lorakit/models/kernels"
)

// Vectors are the embeddings of a scored file: row i belongs to its i-th line, centred and normalised to unit
// vectors (cosine similarity is a dot product); OK[i] is false for a line without one (a bad line: NaN in the file).
type Vectors struct {
	X    []float32 // [N, Dim]
	N    int
	Dim  int
	OK   []bool
	pool *kernels.Pool
}

// LoadVectors reads the embeddings of scored (path "" means EmbeddingsPath(scored)) and checks that they have
// one row per line of scored.
func LoadVectors(scored, path string, threads int) (*Vectors, error) {
	if path == "" {
		path = EmbeddingsPath(scored)
	}
	x, n, d, err := npy.Read(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("data: %s: no embeddings: score with lorakit data score --embed-model DIR (which writes them beside the output), or name the file with --embeddings", path)
	}
	if err != nil {
		return nil, fmt.Errorf("data: %w", err)
	}
	lines := 0
	if err := scanLines(scored, func(int, []byte) error { lines++; return nil }); err != nil {
		return nil, err
	}
	if lines != n {
		return nil, fmt.Errorf("data: %s has %d rows but %s has %d lines: they do not come from the same lorakit data score run", path, n, scored, lines)
	}
	return NewVectors(x, n, d, threads), nil
}

// NewVectors wraps rows [n, dim] as Vectors: centred on their mean (a language model's hidden states share a
// large common direction that would make every pair look alike) and normalised, in place. Rows that are not
// finite (NaN: no embedding) or zero are left out (OK false).
func NewVectors(x []float32, n, dim, threads int) *Vectors {
	v := &Vectors{X: x, N: n, Dim: dim, OK: make([]bool, n), pool: kernels.NewPool(threads)}
	mean := make([]float64, dim)
	count := 0
	for i := range n {
		if finite(v.row(i)) {
			v.OK[i] = true
			count++
			for j, f := range v.row(i) {
				mean[j] += float64(f)
			}
		}
	}
	for i := range n {
		if !v.OK[i] {
			continue
		}
		row := v.row(i)
		ss := 0.0
		for j := range row {
			row[j] -= float32(mean[j] / float64(count))
			ss += float64(row[j]) * float64(row[j])
		}
		if ss == 0 {
			v.OK[i] = false
			continue
		}
		r := float32(1 / math.Sqrt(ss))
		for j := range row {
			row[j] *= r
		}
	}
	return v
}

func finite(row []float32) bool {
	for _, f := range row {
		if math.IsNaN(float64(f)) || math.IsInf(float64(f), 0) {
			return false
		}
	}
	return true
}

func (v *Vectors) row(i int) []float32 { return v.X[i*v.Dim : (i+1)*v.Dim] }

// gather copies the rows idx into one [len(idx), Dim] block.
func (v *Vectors) gather(idx []int) []float32 {
	out := make([]float32, len(idx)*v.Dim)
	for k, i := range idx {
		copy(out[k*v.Dim:], v.row(i))
	}
	return out
}

// sims calls fn(i, s) for every row i of idx with s[j] = x_i · w_j, w [m, Dim], in blocks so that memory stays
// bounded.
func (v *Vectors) sims(idx []int, w []float32, m int, fn func(k int, s []float32)) {
	const block = 512
	y := make([]float32, block*m)
	for lo := 0; lo < len(idx); lo += block {
		hi := min(lo+block, len(idx))
		x := v.gather(idx[lo:hi])
		kernels.MatMulF32T(v.pool, y[:(hi-lo)*m], x, w, hi-lo, m, v.Dim)
		for k := lo; k < hi; k++ {
			fn(k, y[(k-lo)*m:(k-lo+1)*m])
		}
	}
}

// KMeans clusters the rows idx into k clusters: k-means++ seeding from a PCG generator seeded with seed, then
// Lloyd iterations (squared Euclidean distance between unit vectors, i.e. cosine) until no row moves or 100
// iterations. It returns each row's cluster and the centroids [k, Dim]; the same seed gives the same clusters.
func (v *Vectors) KMeans(idx []int, k int, seed uint64) (assign []int, centroids []float32) {
	k = min(k, len(idx))
	if k <= 0 {
		return nil, nil
	}
	rng := rand.New(rand.NewPCG(seed, 0x6b6d65616e73))
	d := v.Dim
	c := make([]float32, k*d)
	// k-means++: each next centre drawn with probability proportional to the squared distance to the nearest
	dist := make([]float64, len(idx))
	for i := range dist {
		dist[i] = math.Inf(1)
	}
	next := rng.IntN(len(idx))
	for j := range k {
		copy(c[j*d:], v.row(idx[next]))
		total := 0.0
		v.sims(idx, c[j*d:(j+1)*d], 1, func(i int, s []float32) {
			dist[i] = math.Min(dist[i], math.Max(0, 2-2*float64(s[0])))
			total += dist[i]
		})
		if total == 0 {
			next = rng.IntN(len(idx))
			continue
		}
		r := rng.Float64() * total
		for next = 0; next < len(idx)-1 && r >= dist[next]; next++ {
			r -= dist[next]
		}
	}
	assign = make([]int, len(idx))
	for it := 0; it < 100; it++ {
		if !v.assign(idx, c, k, assign) && it > 0 {
			break
		}
		v.recentre(idx, c, k, assign)
	}
	return assign, c
}

// assign puts every row in its nearest centre's cluster and reports whether any row moved.
func (v *Vectors) assign(idx []int, c []float32, k int, assign []int) bool {
	norms := make([]float32, k)
	for j := range k {
		norms[j] = kernels.Dot(c[j*v.Dim:(j+1)*v.Dim], c[j*v.Dim:(j+1)*v.Dim])
	}
	moved := false
	v.sims(idx, c, k, func(i int, s []float32) {
		best, bd := 0, float32(math.Inf(1))
		for j, x := range s {
			if dd := norms[j] - 2*x; dd < bd { // |x|² = 1 is the same for every centre
				best, bd = j, dd
			}
		}
		if assign[i] != best {
			assign[i], moved = best, true
		}
	})
	return moved
}

// recentre moves each centre to the mean of its rows; an empty cluster takes the row farthest from its centre.
func (v *Vectors) recentre(idx []int, c []float32, k int, assign []int) {
	d := v.Dim
	sum := make([]float64, k*d)
	count := make([]int, k)
	for i, a := range assign {
		count[a]++
		for j, x := range v.row(idx[i]) {
			sum[a*d+j] += float64(x)
		}
	}
	for j := range k {
		if count[j] == 0 {
			far, fd := 0, float32(math.Inf(1))
			for i, a := range assign {
				if s := kernels.Dot(v.row(idx[i]), c[a*d:(a+1)*d]); s < fd && count[a] > 1 {
					far, fd = i, s
				}
			}
			count[assign[far]]--
			assign[far], count[j] = j, 1
			copy(c[j*d:(j+1)*d], v.row(idx[far]))
			continue
		}
		for t := range d {
			c[j*d+t] = float32(sum[j*d+t] / float64(count[j]))
		}
	}
}

// SelectOptions tune SelectDiverse.
type SelectOptions struct {
	// QualityWeight weighs the mean quality of the selection (its rank among the candidates, 0 worst to 1
	// best) against its coverage (the mean, over the candidates, of the best cosine similarity to a selected
	// example). 0: coverage only.
	QualityWeight float64
	// Probes bounds the candidates coverage is measured on (a seeded sample when there are more; 0: 4096), so
	// that the cost is candidates × probes rather than candidates².
	Probes int
	Seed   uint64
}

// SelectDiverse picks n of the rows idx by greedy facility location (the submodular coverage objective of
// DEITA-style and "lazier than lazy greedy" data selection) plus a quality bonus: each step adds the row with
// the largest gain = (mean over probes p of max(0, sim(p, row) − best(p))) + QualityWeight·rank(row)/n, where
// best(p) is p's best similarity to the rows already picked and rank the row's quality rank in [0, 1]. Gains
// only shrink as the selection grows, so a heap of stale gains is re-evaluated lazily and the result is the
// exact greedy one. The same seed, rows and quality give the same selection, in the order picked.
func (v *Vectors) SelectDiverse(idx []int, quality []float64, n int, o SelectOptions) []int {
	n = min(n, len(idx))
	if n <= 0 {
		return nil
	}
	probes := v.probes(idx, o)
	P := len(probes)
	pw := v.gather(probes)
	rank := qualityRank(quality)
	bonus := func(k int) float64 { return o.QualityWeight * rank[k] / float64(n) }
	best := make([]float32, P)
	gain := func(s []float32) float64 {
		g := 0.0
		for p, x := range s {
			if x > best[p] {
				g += float64(x - best[p])
			}
		}
		return g / float64(P)
	}
	h := &gainHeap{}
	v.sims(idx, pw, P, func(k int, s []float32) { h.items = append(h.items, gainItem{k, gain(s) + bonus(k), 0}) })
	heap.Init(h)
	picked := make([]int, 0, n)
	s := make([]float32, P)
	for len(picked) < n && h.Len() > 0 {
		top := heap.Pop(h).(gainItem)
		if top.round != len(picked) { // stale: recompute against the current selection
			kernels.MatMulF32T(v.pool, s, v.row(idx[top.k]), pw, 1, P, v.Dim)
			top.gain, top.round = gain(s)+bonus(top.k), len(picked)
			if h.Len() > 0 && h.less(h.items[0], top) {
				heap.Push(h, top)
				continue
			}
		}
		picked = append(picked, idx[top.k])
		kernels.MatMulF32T(v.pool, s, v.row(idx[top.k]), pw, 1, P, v.Dim)
		for p, x := range s {
			best[p] = max(best[p], x)
		}
	}
	return picked
}

// probes is the sample of idx that coverage is measured on: all of it, or o.Probes rows drawn with o.Seed.
func (v *Vectors) probes(idx []int, o SelectOptions) []int {
	m := o.Probes
	if m <= 0 {
		m = 4096
	}
	if len(idx) <= m {
		return idx
	}
	rng := rand.New(rand.NewPCG(o.Seed, 0x70726f626573))
	perm := rng.Perm(len(idx))[:m]
	sort.Ints(perm)
	out := make([]int, m)
	for i, p := range perm {
		out[i] = idx[p]
	}
	return out
}

// qualityRank maps each quality to its rank in [0, 1] (1 the best; ties share their mean rank).
func qualityRank(q []float64) []float64 {
	order := make([]int, len(q))
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(a, b int) bool { return q[order[a]] < q[order[b]] })
	r := make([]float64, len(q))
	for lo := 0; lo < len(order); {
		hi := lo
		for hi+1 < len(order) && q[order[hi+1]] == q[order[lo]] {
			hi++
		}
		v := 1.0
		if len(q) > 1 {
			v = float64(lo+hi) / 2 / float64(len(q)-1)
		}
		for i := lo; i <= hi; i++ {
			r[order[i]] = v
		}
		lo = hi + 1
	}
	return r
}

type gainItem struct {
	k     int // index into the candidates
	gain  float64
	round int // selection size when gain was computed
}

// gainHeap is a max-heap of gains, ties to the earlier candidate (so the result does not depend on heap order).
type gainHeap struct{ items []gainItem }

func (h *gainHeap) less(a, b gainItem) bool {
	if a.gain != b.gain {
		return a.gain > b.gain
	}
	return a.k < b.k
}
func (h *gainHeap) Len() int           { return len(h.items) }
func (h *gainHeap) Less(i, j int) bool { return h.less(h.items[i], h.items[j]) }
func (h *gainHeap) Swap(i, j int)      { h.items[i], h.items[j] = h.items[j], h.items[i] }
func (h *gainHeap) Push(x any)         { h.items = append(h.items, x.(gainItem)) }
func (h *gainHeap) Pop() any {
	it := h.items[len(h.items)-1]
	h.items = h.items[:len(h.items)-1]
	return it
}

// DiversityOptions tune Diversity.
type DiversityOptions struct {
	Embeddings string // "" : EmbeddingsPath(scored)
	// Clusters is k of k-means (0: round(sqrt(n/2)), the usual rule of thumb, at least 1).
	Clusters        int
	Seed            uint64
	Representatives int // per cluster, the examples nearest its centre (0: 3)
	Threads         int
}

// DiversityReport describes how a scored file's examples spread over topics, as its embeddings cluster.
type DiversityReport struct {
	File       string `json:"file"`
	Embeddings string `json:"embeddings"`
	Examples   int    `json:"examples"` // clustered: scored lines with an embedding
	Skipped    int    `json:"skipped"`  // bad lines (no embedding)
	K          int    `json:"k"`
	Seed       uint64 `json:"seed"`
	// EffectiveClusters is exp(entropy of the cluster sizes): k when all clusters are the same size, near 1
	// when one cluster holds almost everything.
	EffectiveClusters float64          `json:"effective_clusters"`
	Clusters          []ClusterSummary `json:"clusters"` // largest first
}

// ClusterSummary is one cluster of a DiversityReport.
type ClusterSummary struct {
	ID              int              `json:"id"`
	Size            int              `json:"size"`
	Share           float64          `json:"share"`
	MeanPPL         *float64         `json:"mean_ppl,omitempty"`    // when every member has a perplexity (--model)
	MeanReward      *float64         `json:"mean_reward,omitempty"` // when every member has a reward
	Representatives []Representative `json:"representatives"`
}

// Representative is an example near its cluster's centre.
type Representative struct {
	Line       int     `json:"line"`
	Similarity float64 `json:"similarity"` // cosine to the centre
	Text       string  `json:"text"`       // the start of its first user message (or document)
}

// Diversity clusters the examples of a scored file by their embeddings (k-means++, seeded) and reports the
// clusters, their sizes, representative examples and the effective number of clusters.
func Diversity(scored string, o DiversityOptions) (*DiversityReport, error) {
	v, err := LoadVectors(scored, o.Embeddings, o.Threads)
	if err != nil {
		return nil, err
	}
	type lineInfo struct {
		score *Score
		text  string
	}
	var lines []lineInfo
	err = scanLines(scored, func(n int, b []byte) error {
		raw, s, err := SplitScored(b)
		if err != nil {
			return fmt.Errorf("data: %s:%d: %v", scored, n, err)
		}
		lines = append(lines, lineInfo{s, snippet(raw, scored, n)})
		return nil
	})
	if err != nil {
		return nil, err
	}
	var idx []int
	for i, l := range lines {
		if v.OK[i] && l.score.Error == "" {
			idx = append(idx, i)
		}
	}
	if len(idx) == 0 {
		return nil, fmt.Errorf("data: %s: no scored line has an embedding", scored)
	}
	k := o.Clusters
	if k <= 0 {
		k = max(1, int(math.Round(math.Sqrt(float64(len(idx))/2))))
	}
	reps := o.Representatives
	if reps <= 0 {
		reps = 3
	}
	assign, cent := v.KMeans(idx, k, o.Seed)
	k = len(cent) / v.Dim
	rep := &DiversityReport{File: scored, Embeddings: o.Embeddings, Examples: len(idx), Skipped: len(lines) - len(idx), K: k, Seed: o.Seed}
	if rep.Embeddings == "" {
		rep.Embeddings = EmbeddingsPath(scored)
	}
	members := make([][]int, k)
	for i, a := range assign {
		members[a] = append(members[a], i)
	}
	for c, ms := range members {
		if len(ms) == 0 {
			continue
		}
		cs := ClusterSummary{ID: c, Size: len(ms), Share: float64(len(ms)) / float64(len(idx))}
		rep.EffectiveClusters -= cs.Share * math.Log(cs.Share)
		centre := cent[c*v.Dim : (c+1)*v.Dim]
		cn := math.Sqrt(float64(kernels.Dot(centre, centre)))
		type near struct {
			i int
			s float64
		}
		var ns []near
		var reward, ppl float64
		rewards, ppls := 0, 0
		for _, i := range ms {
			s := lines[idx[i]].score
			if s.ModelScore != nil {
				ppl += s.PPL
				ppls++
			}
			if s.Reward != nil {
				reward += *s.Reward
				rewards++
			}
			ns = append(ns, near{i, float64(kernels.Dot(v.row(idx[i]), centre)) / cn})
		}
		if ppls == len(ms) {
			m := ppl / float64(ppls)
			cs.MeanPPL = &m
		}
		if rewards == len(ms) {
			m := reward / float64(rewards)
			cs.MeanReward = &m
		}
		sort.SliceStable(ns, func(a, b int) bool { return ns[a].s > ns[b].s })
		for _, nr := range ns[:min(reps, len(ns))] {
			l := lines[idx[nr.i]]
			cs.Representatives = append(cs.Representatives, Representative{Line: l.score.Line, Similarity: nr.s, Text: l.text})
		}
		rep.Clusters = append(rep.Clusters, cs)
	}
	rep.EffectiveClusters = math.Exp(rep.EffectiveClusters)
	sort.SliceStable(rep.Clusters, func(a, b int) bool { return rep.Clusters[a].Size > rep.Clusters[b].Size })
	return rep, nil
}

// snippet is the start of an example's first user message (or its document), on one line.
func snippet(raw []byte, file string, n int) string {
	if raw == nil {
		return ""
	}
	ex, lerr := ParseLine(raw, file, n)
	if lerr != nil {
		return ""
	}
	text := ex.Text
	for _, m := range ex.Messages {
		if m.Role == "user" {
			text = m.Content
			break
		}
	}
	text = strings.Join(strings.Fields(text), " ")
	if r := []rune(text); len(r) > 100 {
		text = string(r[:100]) + "…"
	}
	return text
}

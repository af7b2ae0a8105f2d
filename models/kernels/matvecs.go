package kernels

// MatVecJob is one matrix-vector product of a MatVecs batch:
// Y[r] = Σ_c W[r*Cols+c]·X[c] for r in [0, Rows), with W [Rows, Cols]
// row-major given by exactly one of F32, BF16 (bfloat16 bit patterns) or F16
// (IEEE half bit patterns).
type MatVecJob struct {
	Y, X       []float32
	F32        []float32
	BF16, F16  []uint16
	Rows, Cols int
}

// MatVecs computes every job's product in one parallel pass over the pool:
// one hand-off and one barrier for the whole batch instead of one per
// product (e.g. q, k and v of a decode step, or gate and up), each thread
// one contiguous share of the jobs' rows in order, as MatVec* gives each
// thread one share of a matrix's rows. Results equal
// the separate MatVec* calls bit for bit. The jobs' Y must not overlap each
// other or any X. p may be nil; jobs is only read (reuse one slice per
// model: a fresh slice literal per call escapes to the heap).
func MatVecs(p *Pool, jobs []MatVecJob) {
	total := 0
	blocks := 0
	for i := range jobs {
		j := &jobs[i]
		_, wlen := j.weight("MatVecs")
		checkMatVec("MatVecs", j.Y, wlen, j.X, j.Rows, j.Cols)
		total += j.Rows * j.Cols
		blocks += (j.Rows + matVecBlock - 1) / matVecBlock
	}
	t := matVecsTask{jobs: jobs}
	if total < matVecInline || p == nil || !p.mu.TryLock() {
		t.run(0, blocks)
		return
	}
	t.xp = p.permuteJobs(jobs)
	if p.threads == 1 {
		t.run(0, blocks)
	} else {
		p.mvs = t
		p.runLocked(blocks, p.threads, &p.mvs)
		p.mvs = matVecsTask{}
	}
	p.mu.Unlock()
}

// weight returns the kind (wF32, wBF16, wF16) and length of the job's weight, and panics (naming the caller)
// unless exactly one is given.
func (j *MatVecJob) weight(name string) (kind, wlen int) {
	set := 0
	if j.F32 != nil {
		set++
		kind, wlen = wF32, len(j.F32)
	}
	if j.BF16 != nil {
		set++
		kind, wlen = wBF16, len(j.BF16)
	}
	if j.F16 != nil {
		set++
		kind, wlen = wF16, len(j.F16)
	}
	if set != 1 && j.Rows*j.Cols != 0 {
		panic("kernels: " + name + ": a job needs exactly one of F32, BF16, F16")
	}
	return kind, wlen
}

// MatMulsT is MatVecs for a batch of m rows: every job's Y [m, Rows] = X [m, Cols]·Wᵀ (X and Y row-major), in
// one parallel pass over the pool: the tiles of all the products (each split as MatMul*T splits it alone)
// numbered one after the other, so that one hand-off and one barrier serve e.g. a layer's q, k and v instead
// of one each, and a thread that finishes its share early takes tiles of the next product instead of waiting
// at a barrier between them. Results equal the separate MatMul*T calls bit for bit (m = 1: MatVecs and the
// MatVec* calls). At most maxMatMuls jobs; the jobs' Y must not overlap each other or any X. p may be nil.
func MatMulsT(p *Pool, jobs []MatVecJob, m int) {
	if m == 1 {
		MatVecs(p, jobs)
		return
	}
	if len(jobs) > maxMatMuls {
		panic("kernels: MatMulsT: more than maxMatMuls jobs")
	}
	var t matMulsTask
	work := 0
	for i := range jobs {
		j := &jobs[i]
		kind, wlen := j.weight("MatMulsT")
		checkMatMul("MatMulsT", j.Y, j.X, wlen, m, j.Rows, j.Cols)
		if m == 0 || j.Rows == 0 {
			continue
		}
		mt := matMulTask{kind: kind, y: j.Y, x: j.X, wf: j.F32, wh: j.BF16, m: m, n: j.Rows, k: j.Cols,
			ldy: j.Rows, ldx: j.Cols, ldw: j.Cols, mb: mmRows, nb: mmCols}
		if kind == wF16 {
			mt.wh = j.F16
		}
		mt.prepare()
		mt.ti = (m + mt.mb - 1) / mt.mb
		t.walk = t.walk || mt.walk
		t.mm[t.n] = mt
		t.end[t.n] = t.tiles() + mt.ti*((mt.n+mt.nb-1)/mt.nb)
		t.n++
		work += m * j.Rows * j.Cols
	}
	tiles := t.tiles()
	if work < 1<<15 || !p.acquire() {
		var bufs [maxMatMuls]*[]float32
		for i := range t.n {
			bufs[i] = gemmScratch.Get().(*[]float32)
		}
		t.permuteX(bufs)
		t.run(0, tiles)
		for i := range t.n {
			gemmScratch.Put(bufs[i])
		}
		return
	}
	t.permuteX([maxMatMuls]*[]float32{&p.xmm[0], &p.xmm[1], &p.xmm[2]})
	p.mms = t
	p.runTiles(tiles, t.walk, &p.mms)
	p.mms = matMulsTask{}
	p.mu.Unlock()
}

// maxMatMuls is the most products one MatMulsT runs (a layer's q, k and v).
const maxMatMuls = 3

// matMulsTask runs a MatMulsT batch over the concatenation of its products' tiles: tiles [end[i-1], end[i])
// are product i's.
type matMulsTask struct {
	mm   [maxMatMuls]matMulTask
	end  [maxMatMuls]int
	n    int
	walk bool // a product walks W (matMulTask.walk): the split is one contiguous share per thread
}

// permuteX reorders the X of the products that run the AVX2 bf16 tiles into bufs[i] (products with one X
// share one copy).
func (t *matMulsTask) permuteX(bufs [maxMatMuls]*[]float32) {
	for i := range t.n {
		mi := &t.mm[i]
		if mi.kind != wBF16 || !mi.avxTiles() {
			continue
		}
		for k := range i {
			if mk := &t.mm[k]; mk.xp != nil && mk.k == mi.k && mk.ldx == mi.ldx && &mk.x[0] == &mi.x[0] {
				mi.xp = mk.xp
				break
			}
		}
		if mi.xp == nil {
			mi.permuteX(bufs[i])
		}
	}
}

// tiles is the batch's tile count.
func (t *matMulsTask) tiles() int {
	if t.n == 0 {
		return 0
	}
	return t.end[t.n-1]
}

func (t *matMulsTask) run(lo, hi int) {
	b0 := 0
	for i := 0; i < t.n && b0 < hi; i++ {
		if s, e := max(lo, b0), min(hi, t.end[i]); s < e {
			t.mm[i].run(s-b0, e-b0)
		}
		b0 = t.end[i]
	}
}

// matVecsTask runs a MatVecs batch over the concatenation of its jobs'
// blocks of matVecBlock rows.
type matVecsTask struct {
	jobs []MatVecJob
	xp   [][]float32 // per job: X reordered for the paired bf16 kernel, or nil
}

func (t *matVecsTask) run(lo, hi int) {
	b0 := 0
	for i := range t.jobs {
		if b0 >= hi {
			return
		}
		j := &t.jobs[i]
		nb := (j.Rows + matVecBlock - 1) / matVecBlock
		if s, e := max(lo, b0), min(hi, b0+nb); s < e {
			r0, r1 := (s-b0)*matVecBlock, min((e-b0)*matVecBlock, j.Rows)
			switch {
			case j.F32 != nil:
				matVecF32(j.Y, j.F32, j.X, r0, r1, j.Cols)
			case j.BF16 != nil:
				if t.xp != nil && t.xp[i] != nil {
					matVecBF16P(j.Y, j.BF16, t.xp[i], j.X, r0, r1, j.Cols)
				} else {
					matVecBF16(j.Y, j.BF16, j.X, r0, r1, j.Cols)
				}
			case j.F16 != nil:
				matVecF16(j.Y, j.F16, j.X, r0, r1, j.Cols)
			}
		}
		b0 += nb
	}
}

// permuteJobs reorders the X of every bf16 job for the paired kernel into
// the pool's scratch (jobs sharing one X share one copy). p.mu must be held.
// A job under matVecInline keeps its X as it is: alone it would run inline
// with the unpaired kernel, and the batch must give its result bit for bit.
func (p *Pool) permuteJobs(jobs []MatVecJob) [][]float32 {
	bf := false
	for i := range jobs {
		if pairedJob(&jobs[i]) {
			bf = true
		}
	}
	if !bf {
		return nil
	}
	if cap(p.xps) < len(jobs) {
		p.xps = make([][]float32, len(jobs))
		p.xpbufs = make([][]float32, len(jobs))
	}
	xps := p.xps[:len(jobs)]
	bufs := p.xpbufs[:cap(p.xps)]
	for i := range jobs {
		xps[i] = nil
		j := &jobs[i]
		if !pairedJob(j) {
			continue
		}
		for k := 0; k < i; k++ {
			if xps[k] != nil && jobs[k].Cols == j.Cols && &jobs[k].X[0] == &j.X[0] {
				xps[i] = xps[k]
				break
			}
		}
		if xps[i] == nil {
			xps[i] = permuteBF16(&bufs[i], j.X[:j.Cols])
		}
	}
	return xps
}

// pairedJob reports whether a MatVecs job runs the paired bf16 kernel (x reordered) when the batch runs on the
// pool: as MatVecBF16 alone, a bf16 product of at least matVecInline weights.
func pairedJob(j *MatVecJob) bool {
	return j.BF16 != nil && j.Cols > 0 && j.Rows*j.Cols >= matVecInline
}

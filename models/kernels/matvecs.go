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
		set := 0
		wlen := 0
		if j.F32 != nil {
			set++
			wlen = len(j.F32)
		}
		if j.BF16 != nil {
			set++
			wlen = len(j.BF16)
		}
		if j.F16 != nil {
			set++
			wlen = len(j.F16)
		}
		if set != 1 && j.Rows*j.Cols != 0 {
			panic("kernels: MatVecs: a job needs exactly one of F32, BF16, F16")
		}
		checkMatVec("MatVecs", j.Y, wlen, j.X, j.Rows, j.Cols)
		total += j.Rows * j.Cols
		blocks += (j.Rows + matVecBlock - 1) / matVecBlock
	}
	t := matVecsTask{jobs: jobs}
	if total < 1<<14 || p == nil || !p.mu.TryLock() {
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
func (p *Pool) permuteJobs(jobs []MatVecJob) [][]float32 {
	bf := false
	for i := range jobs {
		if jobs[i].BF16 != nil && jobs[i].Cols > 0 {
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
		if j.BF16 == nil || j.Cols == 0 {
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

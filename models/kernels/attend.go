package kernels

// AttendF32 computes the attention of one group of m query heads q [m, d] (the heads that share a key/value
// head) over n cached positions whose keys and values are stored as runs of consecutive positions: run r holds
// the keys k[r] and values v[r], both [len(k[r])/d, d] row-major, and the runs follow each other in position
// order (a paged KV cache's blocks, each run a stretch of blocks adjacent in memory). With j over the n
// positions in order:
//
//	s[i*n+j] = softmax_j(scale · q[i]·key_j)        (s is [m, n], left holding the probabilities)
//	att[i*d:(i+1)*d] = Σ_j s[i*n+j] · value_j       (summed in position order)
//
// The runs are read in place, each through the same tile kernels a single [n, d] matrix goes through, so the
// result does not depend on where the positions are split into runs, as long as every run but the last holds a
// multiple of 4 positions (the AVX2 tiles cover 4 keys at a time, and a run's last n % 4 keys take the
// edge kernel); the value sum is one fused multiply-add per position and element, in position order.
func AttendF32(att, s, q []float32, m, d int, k, v [][]float32, scale float32) {
	attend("AttendF32", att, s, q, m, d, k, v, scale, matMulAddF32)
}

// AttendBF16 is AttendF32 with the keys and values stored as bfloat16 bit patterns.
func AttendBF16(att, s, q []float32, m, d int, k, v [][]uint16, scale float32) {
	attend("AttendBF16", att, s, q, m, d, k, v, scale, matMulAddBF16)
}

// attend is AttendF32 and AttendBF16 (name, for errors), addValues the value sum of the keys' element type:
// Y[m, n] += T[m, k]·B[k, n], T's rows ldt apart.
func attend[E float32 | uint16](name string, att, s, q []float32, m, d int, k, v [][]E, scale float32,
	addValues func(y, t []float32, ldt int, b []E, m, n, k int)) {
	n := checkAttend(name, att, s, q, m, d, k, v)
	off := 0
	for _, kr := range k {
		scoresRun(s[off:], n, q, m, d, kr, len(kr)/d)
		off += len(kr) / d
	}
	softmaxRows(s, m, n, scale)
	clear(att[:m*d])
	off = 0
	for _, vr := range v {
		if l := len(vr) / d; l > 0 {
			addValues(att, s[off:], n, vr, m, d, l)
			off += l
		}
	}
}

// checkAttend validates attend's arguments and returns the number of positions.
func checkAttend[E float32 | uint16](name string, att, s, q []float32, m, d int, k, v [][]E) int {
	if m < 1 || d < 1 || len(k) != len(v) || len(q) < m*d || len(att) < m*d {
		panic("kernels: " + name + ": q, att or the runs do not match m, d")
	}
	n := 0
	for r := range k {
		if len(k[r]) != len(v[r]) || len(k[r])%d != 0 {
			panic("kernels: " + name + ": a run's keys and values are not both [positions, d]")
		}
		n += len(k[r]) / d
	}
	if n == 0 || len(s) < m*n {
		panic("kernels: " + name + ": no positions, or s shorter than m × positions")
	}
	return n
}

// softmaxRows scales the m rows of n scores in s and turns each into probabilities.
func softmaxRows(s []float32, m, n int, alpha float32) {
	scale(alpha, s[:m*n])
	for i := range m {
		softmax(s[i*n : (i+1)*n])
	}
}

// scoresRun writes the m×l scores of q [m, d] against the keys w [l, d] (f32 or bf16) to s, rows lds apart,
// through the kernels Gemm (f32, transposed B) and MatMulBF16T (bf16) run a whole key matrix through, in one
// thread: every score is summed as it is there.
func scoresRun[E float32 | uint16](s []float32, lds int, q []float32, m, d int, w []E, l int) {
	if l == 0 {
		return
	}
	kind, wf, wh := wF32, []float32(nil), []uint16(nil)
	switch w := any(w).(type) {
	case []float32:
		wf = w
	case []uint16:
		kind, wh = wBF16, w
	}
	if kind == wBF16 && m == 1 { // MatMulBF16T's one-row case
		matVecBF16(s, wh, q, 0, l, d)
		return
	}
	t := matMulTask{kind: kind, y: s, ldy: lds, x: q, ldx: d, wf: wf, wh: wh, ldw: d, m: m, n: l, k: d}
	t.mb, t.nb = mmRows, mmCols
	t.prepare()
	t.ti = (t.m + t.mb - 1) / t.mb
	buf := gemmScratch.Get().(*[]float32)
	t.permuteX(buf)
	t.run(0, t.ti*((t.n+t.nb-1)/t.nb))
	gemmScratch.Put(buf)
}

package models

import (
	"fmt"
	"io"
	"runtime/debug"
	"unsafe"

	"github.com/lorakit/lorakit/internal/mmap"
	"github.com/lorakit/lorakit/models/llama"
	"github.com/lorakit/lorakit/models/nn"
	"github.com/lorakit/lorakit/models/quant"
)

// evictEvery bounds how far the copy runs ahead of dropping the mapped pages it read: peak RSS grows by at
// most this much while the weights move.
const evictEvery = 16 << 20

// residentWeights moves every dense weight matrix net computes with in its stored dtype (f32, bf16, f16: the
// decoder's linear layers, the embedding table, an untied LM head, a classifier's score) out of the file mapping
// into one anonymous mapping in transparent huge pages (mmap.Anon), dropping the mapped pages it has read as it
// goes, so the resident set stays about the same; the quantised layers' dot-kernel layout (codes and scales of
// compacted NF4/FP4/Q4_0/Q8_0/int8 weights, the int8 LM head included: quant.Weight.MoveDot) goes into the same
// mapping (each up to evictEvery: see quantWeights), their heap copies returned to the OS as it goes. It returns the func that unmaps that memory (after
// the last use of net).
//
// Why: decode streams every weight once per token, so how those pages are mapped is its speed. A file mapping
// is in 4 KiB pages (a TLB miss every 64 cache lines), and those pages are the page cache's, whose layout
// depends on how the file was written and on what the kernel does to it meanwhile. On the project machine
// (Linux 6.18 guest, ext4) a checkpoint written with 1 MiB writes, as atomicfile writes, sits in 1 MiB folios,
// and decoding the qwen2.5-0.5b shape bf16 from them ran at 1.3-26 tok/s, slower each run, while the same bytes
// written with 64 KiB writes (64 KiB folios) or copied to anonymous memory ran at 35-55: a plain read loop over
// the mapping, with no page faults and no system time, fell from ~50 to 1-6 GB/s in bursts. Anonymous huge
// pages are the process's own, one TLB entry per 2 MiB, whatever wrote the file.
func residentWeights(net *llama.Model, mapped io.Closer) (func() error, error) {
	ds, qs := denseWeights(net), quantWeights(net)
	total := 0
	for _, d := range ds {
		total += align64(denseBytes(d))
	}
	for _, q := range qs {
		total += q.DotBytes()
	}
	if total == 0 {
		return func() error { return nil }, nil
	}
	arena, release, err := mmap.Anon(total)
	if err != nil {
		return nil, fmt.Errorf("models: %d MiB of anonymous memory for the weights: %w", total>>20, err)
	}
	evict := func() {}
	if e, ok := mapped.(interface{ EvictAll() }); ok {
		evict = e.EvictAll
	}
	off, sinceEvict := 0, 0
	for _, d := range ds {
		n := denseBytes(d)
		dst := arena[off : off+n : off+n]
		if d.U16 != nil {
			copy(dst, unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(d.U16))), n))
			d.U16 = nn.Uint16View(dst)
		} else {
			copy(dst, unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(d.F32))), n))
			d.F32 = nn.Float32View(dst)
		}
		off += align64(n)
		if sinceEvict += n; sinceEvict >= evictEvery {
			evict()
			sinceEvict = 0
		}
	}
	evict()
	// The quantised weights' dot layout (quant.Weight.Compact) is on the Go heap: what each move leaves behind
	// goes back to the OS as the copy proceeds, for the same bounded peak.
	sinceEvict = 0
	for _, q := range qs {
		n := q.DotBytes()
		q.MoveDot(arena[off : off+n : off+n])
		off += n
		if sinceEvict += n; sinceEvict >= evictEvery {
			debug.FreeOSMemory()
			sinceEvict = 0
		}
	}
	if len(qs) > 0 {
		debug.FreeOSMemory()
	}
	return release, nil
}

// denseWeights lists each dense matrix of net once (a tied LM head is the embedding table).
func denseWeights(net *llama.Model) []*nn.Dense {
	var out []*nn.Dense
	seen := map[*nn.Dense]bool{}
	add := func(v any) {
		if d, ok := v.(*nn.Dense); ok && d != nil && !seen[d] && denseBytes(d) > 0 {
			seen[d] = true
			out = append(out, d)
		}
	}
	eachLayer(net, add)
	return out
}

// eachLayer calls visit with every weight-bearing layer of net: the embedding table, each decoder linear, the
// LM head (the same layer may come twice: a tied head is the embedding table).
func eachLayer(net *llama.Model, visit func(any)) {
	visit(net.EmbedTokens)
	for _, mod := range net.Modules() {
		if l, ok := net.Linear(mod); ok {
			visit(l)
		}
	}
	visit(net.Score)
}

// denseBytes is the size of d's weights in their stored dtype.
func denseBytes(d *nn.Dense) int {
	if d.U16 != nil {
		return 2 * len(d.U16)
	}
	return 4 * len(d.F32)
}

// align64 rounds n up to a cache line, so every matrix starts on one.
func align64(n int) int { return (n + 63) &^ 63 }

// quantWeights lists each quantised layer of net that has a dot layout to move (quant.Weight.DotBytes) once: the
// decoder's linear layers (a biased one through its Unwrap), a quantised embedding table, an int8 LM head. One
// larger than evictEvery stays on the heap: moving it would hold both copies at once and raise peak RSS by its
// size (measured with every layer moved: a Q4_0 GGUF qwen2.5-0.5b's peak RSS 424 -> 541 MB).
func quantWeights(net *llama.Model) []*quant.Weight {
	var out []*quant.Weight
	seen := map[*quant.Weight]bool{}
	add := func(v any) {
		if u, ok := v.(interface{ Unwrap() nn.Linear }); ok {
			v = u.Unwrap()
		}
		if q, ok := v.(*nn.Quantized); ok && q != nil && !seen[q.Q] && q.Q.DotBytes() > 0 && q.Q.DotBytes() <= evictEvery {
			seen[q.Q] = true
			out = append(out, q.Q)
		}
	}
	eachLayer(net, add)
	return out
}

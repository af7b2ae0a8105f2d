package data

import "encoding/binary"

// MinHash near-duplicate clustering over token shingles, streaming: each example's signature is cut
// into bands; an example joins the cluster of the first earlier example sharing any band (LSH), else it
// starts its own. With 14 bands of 8 rows, pairs with Jaccard similarity ≥ ~0.8 land in one cluster with
// probability > 0.9, pairs below ~0.5 rarely do. Memory: one map entry per (example, band), at most
// maxIndexEntries (about 300k examples, ~200 MB); past that, later examples are still matched against the
// indexed ones but start no new clusters in the index (Full reports it).
const (
	maxIndexEntries = 1 << 22
	shingleLen      = 5
	mhBands         = 14
	mhRows          = 8
)

type minHash struct {
	seeds [mhBands * mhRows]uint64
	index map[uint64]int32 // band key → cluster (line number of its first example)
	Full  bool             // the index reached maxIndexEntries
}

func newMinHash() *minHash {
	m := &minHash{index: map[uint64]int32{}}
	s := uint64(0x6c6f72616b6974)
	for i := range m.seeds {
		s = splitmix64(s)
		m.seeds[i] = s
	}
	return m
}

func splitmix64(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

// bands returns the band keys of a token sequence (safe for concurrent use).
func (m *minHash) bands(ids []int) []uint64 {
	if len(ids) == 0 {
		return []uint64{}
	}
	var sig [mhBands * mhRows]uint64
	for i := range sig {
		sig[i] = ^uint64(0)
	}
	k := min(shingleLen, len(ids))
	var buf [8]byte
	for i := 0; i+k <= len(ids); i++ {
		h := uint64(14695981039346656037)
		for _, id := range ids[i : i+k] {
			binary.LittleEndian.PutUint64(buf[:], uint64(id))
			for _, c := range buf {
				h ^= uint64(c)
				h *= 1099511628211
			}
		}
		for j, s := range m.seeds {
			if v := splitmix64(h ^ s); v < sig[j] {
				sig[j] = v
			}
		}
	}
	out := make([]uint64, mhBands)
	for b := range mhBands {
		h := splitmix64(uint64(b) + 1)
		for _, v := range sig[b*mhRows : (b+1)*mhRows] {
			h = splitmix64(h ^ v)
		}
		out[b] = h
	}
	return out
}

// assign returns the cluster of an example with the given bands and records them.
func (m *minHash) assign(bands []uint64, line int) int {
	cluster := line
	for _, b := range bands {
		if c, ok := m.index[b]; ok && int(c) < cluster {
			cluster = int(c)
		}
	}
	if len(m.index)+len(bands) > maxIndexEntries {
		m.Full = true
		return cluster
	}
	for _, b := range bands {
		if _, ok := m.index[b]; !ok {
			m.index[b] = int32(cluster)
		}
	}
	return cluster
}

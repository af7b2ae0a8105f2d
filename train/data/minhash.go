package data

import "encoding/binary"

// MinHash near-duplicate clustering over token shingles, streaming: each example gets a signature of
// mhBands·mhRows minimum hashes, cut into bands (LSH). An example whose band matches an earlier cluster's
// band joins that cluster if their signatures agree on at least mhJoin of the positions (estimated Jaccard
// similarity of the shingle sets ≥ 0.8), else it starts its own cluster. With 10 bands of 10 rows a pair
// at similarity 0.9 is found with probability 0.99, at 0.8 with 0.68. Memory: one index entry per
// (cluster, band) and a 400-byte signature per cluster, at most maxIndexEntries entries (about 400k
// clusters); past that, later examples still join existing clusters but start none in the index
// (Full reports it).
const (
	shingleLen      = 5
	mhBands         = 10
	mhRows          = 10
	mhJoin          = 0.8
	maxIndexEntries = 1 << 22
)

type minHash struct {
	seeds [mhBands * mhRows]uint64
	index map[uint64]int32   // band key → cluster (line number of its first example)
	sigs  map[int32][]uint32 // cluster → signature of its first example
	Full  bool               // the index reached maxIndexEntries
}

// sketch is the MinHash signature and band keys of one example.
type sketch struct {
	sig   []uint32
	bands []uint64
}

func newMinHash() *minHash {
	m := &minHash{index: map[uint64]int32{}, sigs: map[int32][]uint32{}}
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

// sketch computes the signature of a token sequence (safe for concurrent use). Sequences shorter than
// shingleLen are one shingle.
func (m *minHash) sketch(ids []int) *sketch {
	if len(ids) == 0 {
		return &sketch{}
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
	sk := &sketch{sig: make([]uint32, len(sig)), bands: make([]uint64, mhBands)}
	for i, v := range sig {
		sk.sig[i] = uint32(v >> 32)
	}
	for b := range mhBands {
		h := splitmix64(uint64(b) + 1)
		for _, v := range sig[b*mhRows : (b+1)*mhRows] {
			h = splitmix64(h ^ v)
		}
		sk.bands[b] = h
	}
	return sk
}

func similarity(a, b []uint32) float64 {
	if len(a) != len(b) || len(a) == 0 {
		return 0
	}
	same := 0
	for i := range a {
		if a[i] == b[i] {
			same++
		}
	}
	return float64(same) / float64(len(a))
}

// assign returns the cluster of an example and records it.
func (m *minHash) assign(sk *sketch, line int) int {
	if sk == nil || len(sk.bands) == 0 {
		return line
	}
	cluster := line
	for _, b := range sk.bands {
		c, ok := m.index[b]
		if !ok || int(c) >= cluster {
			continue
		}
		if similarity(m.sigs[c], sk.sig) >= mhJoin {
			cluster = int(c)
		}
	}
	if cluster != line {
		return cluster
	}
	if len(m.index)+len(sk.bands) > maxIndexEntries {
		m.Full = true
		return cluster
	}
	m.sigs[int32(line)] = sk.sig
	for _, b := range sk.bands {
		if _, ok := m.index[b]; !ok {
			m.index[b] = int32(line)
		}
	}
	return cluster
}

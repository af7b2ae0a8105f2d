package train

import "sort"

// packRows plans --packing: it bins examples of the given token lengths into rows of at most budget tokens,
// best-fit decreasing (TRL's "bfd": longest example first, each into the fullest row it still fits, a new row
// when none has room). The plan is deterministic: ties keep data order, and rows are numbered as they open.
// Each row lists its examples' indices. An example longer than budget gets a row of its own (callers truncate
// to budget first, so this only guards the invariant that every example lands in exactly one row).
//
// The graph already treats a micro-batch as concatenated segments with a block-diagonal causal mask and
// positions restarting per segment, so a row is just its examples back to back; what packing changes is how
// many examples make a micro-batch (a token budget instead of a count).
func packRows(lens []int, budget int) [][]int {
	order := make([]int, len(lens))
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(a, b int) bool { return lens[order[a]] > lens[order[b]] })
	var rows [][]int
	// byFree[f] holds the rows with exactly f tokens free (a stack: the newest such row is reused first).
	byFree := make([][]int, budget+1)
	for _, i := range order {
		l := lens[i]
		if l >= budget {
			rows = append(rows, []int{i})
			continue
		}
		r, f := -1, l
		for ; f <= budget; f++ {
			if n := len(byFree[f]); n > 0 {
				r = byFree[f][n-1]
				byFree[f] = byFree[f][:n-1]
				break
			}
		}
		if r < 0 {
			r, f = len(rows), budget
			rows = append(rows, nil)
		}
		rows[r] = append(rows[r], i)
		byFree[f-l] = append(byFree[f-l], r)
	}
	return rows
}

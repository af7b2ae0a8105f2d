package merge

import "fmt"

// checkDoRA refuses the merges of a DoRA adapter that PEFT does not define: with a merge weight other than 1 (the
// magnitude sets each row's norm; a weight would only scale the direction) or beside other adapters (PEFT's
// unmerged forward normalises each DoRA adapter over the base alone, its merge over whatever was merged before,
// so no order of merges reproduces base+adapters).
func checkDoRA(srcs []Source) error {
	for _, s := range srcs {
		if s.Adapter == nil || !s.Adapter.IsDoRA() {
			continue
		}
		if len(srcs) > 1 {
			return fmt.Errorf("merge: adapter %s is a DoRA adapter (use_dora): merge it on its own (merge the other adapters first, then this one into the result)", s.Dir)
		}
		if s.Weight != 1 {
			return fmt.Errorf("merge: adapter %s is a DoRA adapter (use_dora): its weight must be 1, not %v (the magnitude vector sets each row's norm)", s.Dir, s.Weight)
		}
	}
	return nil
}

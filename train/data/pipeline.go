package data

import (
	"runtime"
	"sync"
)

// lineItem is one line of input travelling through a pipeline.
type lineItem struct {
	ex  *Example
	err *LineError
}

// orderedMap reads every line of path, runs work on up to workers goroutines and hands the results to
// emit in input order. At most about 4·workers items are in flight, so memory stays bounded. A non-nil
// error from emit stops the run.
func orderedMap[R any](path string, workers int, work func(it lineItem) R, emit func(it lineItem, r R) error) error {
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	type job struct {
		seq int
		it  lineItem
	}
	type result struct {
		seq int
		it  lineItem
		r   R
	}
	jobs := make(chan job, 2*workers)
	results := make(chan result, 2*workers)
	stop := make(chan struct{})
	var readErr error
	go func() {
		defer close(jobs)
		seq := 0
		readErr = ReadJSONL(path, false, func(ex *Example, err error) error {
			it := lineItem{ex: ex}
			if err != nil {
				it.err = err.(*LineError)
			}
			select {
			case jobs <- job{seq, it}:
			case <-stop:
				return errStopped
			}
			seq++
			return nil
		})
	}()
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				r := work(j.it)
				select {
				case results <- result{j.seq, j.it, r}:
				case <-stop:
				}
			}
		}()
	}
	go func() { wg.Wait(); close(results) }()

	pending := map[int]result{}
	next := 0
	var emitErr error
	for res := range results {
		if emitErr != nil {
			continue
		}
		pending[res.seq] = res
		for {
			r, ok := pending[next]
			if !ok {
				break
			}
			delete(pending, next)
			next++
			if err := emit(r.it, r.r); err != nil {
				emitErr = err
				close(stop)
				break
			}
		}
	}
	if emitErr != nil {
		return emitErr
	}
	if readErr != nil && readErr != errStopped {
		return readErr
	}
	return nil
}

type stoppedError struct{}

func (stoppedError) Error() string { return "stopped" }

var errStopped error = stoppedError{}

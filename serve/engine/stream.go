package engine

import (
	"context"
	"io"
	"sync"
	"sync/atomic"
)

// Stream delivers one request's events. The engine never blocks on a slow reader: events queue up here.
type Stream struct {
	mu        sync.Mutex
	events    []Event
	done      bool
	notify    chan struct{}
	cancelled atomic.Bool
}

func newStream() *Stream { return &Stream{notify: make(chan struct{}, 1)} }

func (s *Stream) push(ev Event, last bool) {
	s.mu.Lock()
	if s.done {
		s.mu.Unlock()
		return
	}
	s.events = append(s.events, ev)
	s.done = last
	s.mu.Unlock()
	select {
	case s.notify <- struct{}{}:
	default:
	}
}

// Recv returns the next event, io.EOF after the last one, or ctx's error.
func (s *Stream) Recv(ctx context.Context) (Event, error) {
	for {
		s.mu.Lock()
		if len(s.events) > 0 {
			ev := s.events[0]
			s.events[0] = Event{}
			s.events = s.events[1:]
			s.mu.Unlock()
			return ev, nil
		}
		done := s.done
		s.mu.Unlock()
		if done {
			return Event{}, io.EOF
		}
		select {
		case <-s.notify:
		case <-ctx.Done():
			return Event{}, ctx.Err()
		}
	}
}

// Cancel tells the engine to drop the request; its slot is freed at the next step.
func (s *Stream) Cancel() { s.cancelled.Store(true) }

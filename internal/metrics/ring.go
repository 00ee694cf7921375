package metrics

import (
	"sync"
	"time"
)

// Ring keeps timed samples of cumulative figures, taken every interval, for
// as long as the longest window needs. A window's figures are the current
// sample minus the oldest kept sample no older than the window.
type Ring[T any] struct {
	mu       sync.Mutex
	interval time.Duration
	samples  []timed[T] // oldest first, at most cap
	cap      int
}

type timed[T any] struct {
	at time.Time
	v  T
}

// NewRing keeps samples taken every interval for span.
func NewRing[T any](interval, span time.Duration) *Ring[T] {
	n := int(span/interval) + 2
	return &Ring[T]{interval: interval, cap: n, samples: make([]timed[T], 0, n)}
}

// Interval is how often Add should be called.
func (r *Ring[T]) Interval() time.Duration { return r.interval }

// Add records a sample taken at t.
func (r *Ring[T]) Add(t time.Time, v T) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.samples) == r.cap {
		copy(r.samples, r.samples[1:])
		r.samples = r.samples[:len(r.samples)-1]
	}
	r.samples = append(r.samples, timed[T]{t, v})
}

// Since returns the oldest sample taken no earlier than now-window, and
// when it was taken; ok is false when there is none.
func (r *Ring[T]) Since(now time.Time, window time.Duration) (v T, at time.Time, ok bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	from := now.Add(-window)
	for _, s := range r.samples {
		if !s.at.Before(from) {
			return s.v, s.at, true
		}
	}
	return v, at, false
}

package metrics

import (
	"sync"
	"testing"
	"time"
)

func TestCounterConcurrent(t *testing.T) {
	var c Counter
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 1000; i++ {
				c.Add(3)
			}
		}()
	}
	wg.Wait()
	if got := c.Load(); got != 24000 {
		t.Errorf("Load = %d, want 24000", got)
	}
}

func TestHistogramQuantiles(t *testing.T) {
	var h Histogram
	// 98 fast observations and 2 slow ones.
	for i := 0; i < 98; i++ {
		h.Observe(10 * time.Microsecond)
	}
	h.Observe(50 * time.Millisecond)
	h.Observe(80 * time.Millisecond)
	s := h.Snapshot()
	if s.Count != 100 || s.Max != int64(80*time.Millisecond) {
		t.Fatalf("count %d max %d", s.Count, s.Max)
	}
	// Power-of-two buckets: an estimate is within a factor of two.
	for _, c := range []struct {
		q      float64
		lo, hi time.Duration
	}{
		{0.5, 5 * time.Microsecond, 20 * time.Microsecond},
		{0.99, 25 * time.Millisecond, 80 * time.Millisecond},
		{1, 40 * time.Millisecond, 80 * time.Millisecond},
	} {
		got := time.Duration(s.Quantile(c.q))
		if got < c.lo || got > c.hi {
			t.Errorf("p%v = %v, want within [%v, %v]", c.q*100, got, c.lo, c.hi)
		}
	}
	if m := time.Duration(s.Mean()); m < 900*time.Microsecond || m > 1400*time.Microsecond {
		t.Errorf("mean %v, want about 1.3ms", m)
	}
}

func TestHistogramWindow(t *testing.T) {
	var h Histogram
	h.Observe(time.Second)
	old := h.Snapshot()
	h.Observe(time.Microsecond * 3)
	d := h.Snapshot().Sub(old)
	if d.Count != 1 || d.Sum != 3000 {
		t.Fatalf("window count %d sum %d, want 1 and 3000", d.Count, d.Sum)
	}
	if d.Max >= int64(time.Second) || d.Max < 3000 {
		t.Errorf("window max %d: must not show the older 1s observation", d.Max)
	}
}

func TestBucketOf(t *testing.T) {
	for _, c := range []struct {
		ns   int64
		want int
	}{{0, 0}, {1023, 0}, {1024, 1}, {2047, 1}, {2048, 2}, {1 << 62, Buckets - 1}} {
		if got := bucketOf(c.ns); got != c.want {
			t.Errorf("bucketOf(%d) = %d, want %d", c.ns, got, c.want)
		}
		if c.want < Buckets-1 && float64(c.ns) >= BucketUpper(c.want) {
			t.Errorf("%d is not below bucket %d's bound %v", c.ns, c.want, BucketUpper(c.want))
		}
	}
}

func TestRingSince(t *testing.T) {
	r := NewRing[int](time.Second, 5*time.Second)
	t0 := time.Unix(1000, 0)
	for i := 0; i < 20; i++ {
		r.Add(t0.Add(time.Duration(i)*time.Second), i)
	}
	now := t0.Add(19 * time.Second)
	v, at, ok := r.Since(now, 3*time.Second)
	if !ok || v != 16 || !at.Equal(t0.Add(16*time.Second)) {
		t.Errorf("Since 3s = %d at %v ok %v, want 16", v, at, ok)
	}
	// Older than what is kept: the oldest kept sample.
	if v, _, ok := r.Since(now, time.Hour); !ok || v != 13 {
		t.Errorf("Since 1h = %d ok %v, want the oldest kept (13)", v, ok)
	}
}

func BenchmarkCounterParallel(b *testing.B) {
	var c Counter
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			c.Add(1)
		}
	})
}

func BenchmarkHistogramParallel(b *testing.B) {
	var h Histogram
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			h.Observe(12 * time.Microsecond)
		}
	})
}

func TestHistogramAmountAndMerge(t *testing.T) {
	var a, b Histogram
	a.ObserveN(10*time.Microsecond, 4096)
	a.ObserveN(20*time.Microsecond, 8192)
	b.ObserveN(time.Millisecond, 100)
	b.Observe(time.Microsecond) // no amount
	s := a.Snapshot()
	s.Merge(b.Snapshot())
	if s.Count != 4 || s.Amount != 4096+8192+100 || s.Max != int64(time.Millisecond) ||
		s.Sum != int64(10*time.Microsecond+20*time.Microsecond+time.Millisecond+time.Microsecond) {
		t.Errorf("merged snapshot %+v", s)
	}
	if d := s.Sub(a.Snapshot()); d.Count != 2 || d.Amount != 100 {
		t.Errorf("difference %+v, want 2 observations and amount 100", d)
	}
}

func TestAffinity(t *testing.T) {
	if n := DefaultShards(); n < 2 || n > maxShards {
		t.Errorf("DefaultShards() = %d", n)
	}
	a := NewAffinity(3)
	seen := map[int]int{}
	for range 1000 {
		i := a.Pick()
		if i < 0 || i >= 3 {
			t.Fatalf("Pick returned %d, outside [0,3)", i)
		}
		seen[i]++
	}
	// One goroutine that does not block stays on its processor, and so
	// on its shard, nearly always.
	best := 0
	for _, n := range seen {
		best = max(best, n)
	}
	if best < 500 {
		t.Errorf("picks spread over shards %v; want one shard to dominate", seen)
	}
}

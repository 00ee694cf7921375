package cachelayer

import (
	"context"
	"fmt"
	"time"

	"github.com/sirupsen/logrus"
)

// Mode says how a write uses the cache.
type Mode int32

const (
	// ModeWriteBack: a write returns once it is in the cache and the log;
	// destage moves it to the backend later.
	ModeWriteBack Mode = iota
	// ModeWriteThrough: a write returns once the backend holds it (and the
	// metadata that points at it); the cache keeps a clean copy.
	ModeWriteThrough
	// ModeWriteAround: as write-through, but the cache drops its copies of
	// the written range.
	ModeWriteAround
)

var modeNames = [...]string{ModeWriteBack: "write-back", ModeWriteThrough: "write-through", ModeWriteAround: "write-around"}

func (m Mode) String() string {
	if m >= 0 && int(m) < len(modeNames) {
		return modeNames[m]
	}
	return fmt.Sprintf("Mode(%d)", int32(m))
}

// ParseMode reads a mode name: write-back, write-through or write-around.
func ParseMode(s string) (Mode, error) {
	for i, n := range modeNames {
		if s == n {
			return Mode(i), nil
		}
	}
	return 0, fmt.Errorf("%w: cache mode %q is not one of write-back, write-through, write-around", ErrInvalid, s)
}

// Eviction is the order in which clean pages leave the cache. Dirty pages
// are never evicted.
type Eviction int

const (
	EvictLRU  Eviction = iota // least recently used first
	EvictFIFO                 // first cached first; reads do not refresh a page
)

func (v Eviction) String() string {
	switch v {
	case EvictLRU:
		return "lru"
	case EvictFIFO:
		return "fifo"
	}
	return fmt.Sprintf("Eviction(%d)", int(v))
}

// maxWritebackJobs bounds Config.WritebackJobs.
const maxWritebackJobs = 64

// Mode returns the current cache mode.
func (e *Engine) Mode() Mode { return Mode(e.mode.Load()) }

// SetMode changes the cache mode of the live filesystem. Writes that
// started before the change finish in the mode they started in; both are
// logged first, so nothing is lost either way. With flush, everything
// dirty is then destaged: switching away from write-back with flush leaves
// no data that only the cache and the log hold. The mode is changed even
// when that destage fails (the data stays dirty and is retried).
func (e *Engine) SetMode(ctx context.Context, m Mode, flush bool) error {
	if m < 0 || int(m) >= len(modeNames) {
		return fmt.Errorf("%w: cache mode %d", ErrInvalid, int32(m))
	}
	if e.isClosed() {
		return ErrClosed
	}
	old := Mode(e.mode.Swap(int32(m)))
	if old != m {
		e.stats.ModeSwitches.Add(1)
		e.log.WithFields(logrus.Fields{"from": old, "to": m, "flush": flush}).Info("cache mode changed")
	}
	if flush {
		if err := e.Flush(ctx); err != nil {
			return fmt.Errorf("cachelayer: mode %v set, but destaging what was written before failed (it stays dirty and is retried): %w", m, err)
		}
	}
	return nil
}

// maxDestageBackoff bounds the wait between retries of a failing destage.
const maxDestageBackoff = 10 * time.Second

// waitBackend waits until every op up to lsn has its effects in the
// backend, running destage rounds for it. Concurrent writers share rounds:
// a round covers every op before its cut, so a writer that finds the round
// it waited for covered its op returns at once (group commit). A failing
// backend is retried with backoff, as the flusher does; the wait ends early
// only when ctx ends or the engine stops, and then reports false. The op is
// logged either way and stays dirty: it is destaged later as in write-back.
func (e *Engine) waitBackend(ctx context.Context, lsn uint64) bool {
	backoff := 10 * time.Millisecond
	for e.backendLSN.Load() < lsn {
		err := e.destageThrough(ctx, lsn)
		if err == nil {
			continue
		}
		if ctx.Err() != nil {
			return false
		}
		e.destageFailed(err)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return false
		case <-e.stop:
			t.Stop()
			return false
		case <-t.C:
		}
		backoff = min(backoff*2, maxDestageBackoff)
	}
	return true
}

// destageThrough runs a full round unless one that covered lsn completed
// while this waited for the round lock.
func (e *Engine) destageThrough(ctx context.Context, lsn uint64) error {
	e.destageMu.Lock()
	defer e.destageMu.Unlock()
	if e.backendLSN.Load() >= lsn {
		return nil
	}
	if err := e.destageLocked(ctx, destageAll, true); err != nil {
		return err
	}
	e.destageOK()
	return nil
}

// destageFailed records a failed round: counted, kept as the last error,
// logged at Error once per episode of failures.
func (e *Engine) destageFailed(err error) {
	e.stats.DestageErrors.Add(1)
	e.mu.Lock()
	e.lastErr = err
	first := !e.failing
	e.failing = true
	e.mu.Unlock()
	if first {
		e.log.WithError(err).Error("destage failed; data stays dirty in the cache and the log, retrying")
	}
}

// destageOK records a successful round, ending a failure episode.
func (e *Engine) destageOK() {
	e.mu.Lock()
	was := e.failing
	e.failing = false
	e.lastErr = nil
	e.lastPersist = time.Now()
	e.mu.Unlock()
	if was {
		e.log.Info("destage recovered")
	}
}

// invalidateCleanLocked drops the clean cached blocks of [off, off+n) of
// ino (write-around). Dirty ones (written again meanwhile) stay.
func (e *Engine) invalidateCleanLocked(ino Ino, off, n uint64) {
	if n == 0 {
		return
	}
	first, last := off/BlockSize, (off+n-1)/BlockSize
	var refs []pageRef
	e.pages.Ascend(pageRef{Ino: ino, Blk: first}, func(r pageRef) bool {
		if r.Ino != ino || r.Blk > last {
			return false
		}
		if !r.Dirty {
			refs = append(refs, r)
		}
		return true
	})
	for _, r := range refs {
		e.pages.Delete(r)
		e.pool.release(r.Page)
	}
	if len(refs) > 0 {
		e.signalRoomLocked()
	}
}

// streamPos follows one object's writes to detect a sequential stream.
type streamPos struct {
	next uint64 // where the stream's next write would start
	run  uint64 // bytes written in sequence so far
}

// maxStreams bounds the objects followed for sequential detection.
const maxStreams = 1024

// streamSlack is how far a write may start from the previous one's end and
// still continue the stream: the kernel sends a sequential writer's
// requests several at a time, and they may arrive out of order.
const streamSlack = 1 << 20

// noteStreamLocked follows a write-back write of [off, off+n) of ino. When
// it continues a sequential stream past Config.SequentialCutoff, its dirty
// pages are marked for destage at once (the flusher does not wait for the
// watermarks) and, once clean, are the first evicted: a long stream does
// not fill the dirty budget or push hot data out of the cache. The data
// still goes through the log like any write-back write, so a crash loses
// nothing. It reports whether the write was marked.
func (e *Engine) noteStreamLocked(ino Ino, off, n uint64) bool {
	cutoff := uint64(e.cfg.SequentialCutoff)
	if cutoff == 0 || n == 0 {
		return false
	}
	s, ok := e.streams[ino]
	if ok && off+streamSlack >= s.next && off <= s.next+streamSlack {
		s.run += n
	} else {
		s.run = n
	}
	s.next = max(s.next, off+n)
	if !ok && len(e.streams) >= maxStreams {
		clear(e.streams)
	}
	e.streams[ino] = s
	if s.run <= cutoff {
		return false
	}
	first, last := off/BlockSize, (off+n-1)/BlockSize
	marked := false
	e.pages.Ascend(pageRef{Ino: ino, Blk: first}, func(r pageRef) bool {
		if r.Ino != ino || r.Blk > last {
			return false
		}
		if !r.Dirty {
			return true
		}
		k := dirtyKey{LSN: e.pool.meta[r.Page].dirtyLSN, Ino: ino, Blk: r.Blk}
		if old, ok := e.dirtyQ.Get(k); ok && !old.Stream {
			k.Stream = true
			e.dirtyQ.Set(k)
			e.streamDirty++
		}
		marked = true
		return true
	})
	if marked {
		e.kickLocked()
	}
	return marked
}

// dqDeleteLocked removes a dirty page from the queue and reports whether
// it was a stream page.
func (e *Engine) dqDeleteLocked(k dirtyKey) bool {
	old, ok := e.dirtyQ.Delete(k)
	if ok && old.Stream {
		e.streamDirty--
		return true
	}
	return false
}

// Throttling above Config.ThrottleWatermark: a write of b blocks waits
// frac × (the time destage takes to write b blocks), frac rising from 0 at
// the throttle watermark to 1 at the full budget. So as the budget fills,
// writers slow smoothly towards the speed at which destage cleans pages,
// instead of running at full speed into a wall; at the full budget they
// wait for room.
const (
	defaultDestageRate = 64 << 20               // bytes/s assumed before a round is measured
	maxThrottleDelay   = 100 * time.Millisecond // longest delay of one write
)

// throttleDelayLocked is how long a write of blocks pages waits when the
// budget would be fill (a fraction) full with it.
func (e *Engine) throttleDelayLocked(fill float64, blocks int) time.Duration {
	tw := e.cfg.ThrottleWatermark
	if fill <= tw || tw >= 1 {
		return 0
	}
	frac := min(1, (fill-tw)/(1-tw))
	rate := e.destageRate.Load()
	if rate <= 0 {
		rate = defaultDestageRate
	}
	d := time.Duration(frac * float64(blocks*BlockSize) / float64(rate) * float64(time.Second))
	return min(d, maxThrottleDelay)
}

// noteDestageRate folds one round's throughput into the estimate.
func (e *Engine) noteDestageRate(bytes int64, took time.Duration) {
	if bytes < 1<<20 || took <= 0 {
		return // too small to say anything
	}
	r := int64(float64(bytes) / took.Seconds())
	if old := e.destageRate.Load(); old > 0 {
		r = old - old/4 + r/4
	}
	e.destageRate.Store(r)
}

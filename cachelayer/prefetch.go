package cachelayer

import (
	"fmt"
	"sync"
)

// Prefetch: reading ahead from the backend into clean pages, so that the
// next reads of a file hit the cache. The kernel reads ahead too (the
// mount's read_ahead), but its requests still miss when the data is only
// in backend segments; the prefetcher keeps backend reads ahead of them.
//
// Streams. Each file has up to streamsPerFile read streams (two readers of
// one file at different places keep their own). A read continues a stream
// when it starts near where the stream ended (within four reads' length,
// which absorbs the kernel's reordering of its concurrent read-ahead
// requests, while two random reads are rarely that close);
// otherwise it replaces the least recently used stream. A stream that has
// continued twice is sequential: whenever the read-ahead frontier is less
// than half a window past the furthest read, a step reads ahead to a full
// window past it, and the window doubles with every step, from four
// reads' worth (at least 128 KiB) up to Config.PrefetchMaxWindow. Random reads never make a stream sequential,
// so they never read ahead. The whole-file policy instead reads a file
// into the cache when it is opened (up to half the cache).
//
// Asynchrony. Foreground reads only decide and enqueue (a non-blocking send
// on a bounded queue, a job per chunk of a window so that the workers read
// it in parallel; a full queue drops the job); prefetchWorkers workers
// do the I/O without Engine.mu and take it only to find what is missing
// and to fill pages. A read never waits for a prefetch: one that reaches
// blocks still being prefetched reads them itself. Conversely a prefetch
// skips blocks a foreground read is loading (the in-flight registry). A
// job is abandoned when the engine stops, the file goes, or the pool runs
// short (pages are kept for writers and foreground reads).
//
// Counters: PrefetchBytes (bytes read ahead into pages), PrefetchHits
// (prefetched pages later read), PrefetchWaste (prefetched pages evicted
// or dropped unread), PrefetchDropped (jobs dropped or abandoned).
//
// Lock order: prefetcher.mu is a leaf; it is never held with Engine.mu.

// PrefetchPolicy says when the engine reads ahead from the backend.
type PrefetchPolicy int

const (
	PrefetchNone       PrefetchPolicy = iota // only what is read
	PrefetchSequential                       // ahead of sequential readers
	PrefetchWholeFile                        // whole files when opened
)

func (p PrefetchPolicy) String() string {
	switch p {
	case PrefetchNone:
		return "none"
	case PrefetchSequential:
		return "sequential"
	case PrefetchWholeFile:
		return "whole-file"
	}
	return fmt.Sprintf("PrefetchPolicy(%d)", int(p))
}

const (
	streamsPerFile  = 4
	trackedFiles    = 4096 // files with stream state, at most
	prefetchWorkers = 4
	prefetchQueue   = 64
	prefetchChunk   = 1 << 20 // bytes one worker step reads
	minWindow       = 128 << 10
)

// stream is one sequential reader of a file.
type stream struct {
	next   uint64 // end of the furthest read
	ra     uint64 // read ahead up to here
	window uint64 // current read-ahead window; 0 until sequential
	seq    int    // reads that continued the stream
	used   uint64 // last use (prefetcher.tick), for replacement
}

type pfJob struct {
	ino      Ino
	from, to uint64 // bytes
}

// span is a block range [from, to) a foreground read is loading.
type span struct{ from, to uint64 }

type prefetcher struct {
	mu       sync.Mutex
	tick     uint64
	streams  map[Ino]*[streamsPerFile]stream
	inflight map[Ino][]span
	jobs     chan pfJob
	pending  sync.WaitGroup // queued and running jobs (tests wait on it)
}

func (e *Engine) startPrefetch() {
	e.pf.streams = make(map[Ino]*[streamsPerFile]stream)
	e.pf.inflight = make(map[Ino][]span)
	if e.cfg.Prefetch == PrefetchNone {
		return
	}
	e.pf.jobs = make(chan pfJob, prefetchQueue)
	for range prefetchWorkers {
		e.done.Add(1)
		go e.prefetchWorker()
	}
}

// enqueue hands a job to the workers without waiting.
func (e *Engine) enqueue(j pfJob) {
	e.pf.pending.Add(1)
	select {
	case e.pf.jobs <- j:
	default:
		e.pf.pending.Done()
		e.stats.PrefetchDropped.Add(1)
	}
}

// noteRead runs for every read of [off, off+n) of ino (size bytes long)
// before it is served: it follows the file's streams and, for a
// sequential one, enqueues the next read-ahead step.
func (e *Engine) noteRead(ino Ino, off, n, size uint64) {
	if e.cfg.Prefetch != PrefetchSequential || n == 0 {
		return
	}
	p := &e.pf
	p.mu.Lock()
	defer p.mu.Unlock()
	p.tick++
	ss := p.streams[ino]
	if ss == nil {
		if len(p.streams) >= trackedFiles {
			for k := range p.streams { // any one
				delete(p.streams, k)
				break
			}
		}
		ss = new([streamsPerFile]stream)
		p.streams[ino] = ss
	}
	end := off + n
	tol := 4 * n
	var s *stream
	for i := range ss {
		c := &ss[i]
		if c.used != 0 && off+tol >= c.next && off <= c.next+tol {
			s = c
			break
		}
	}
	if s == nil {
		s = &ss[0]
		for i := range ss {
			if ss[i].used < s.used {
				s = &ss[i]
			}
		}
		*s = stream{next: end, used: p.tick}
		return
	}
	s.used = p.tick
	s.seq++
	s.next = max(s.next, end)
	if s.seq < 2 {
		return
	}
	maxWin := uint64(e.cfg.PrefetchMaxWindow)
	if s.window == 0 {
		s.window = min(max(4*n, minWindow), maxWin)
	}
	from := max(s.ra, s.next)
	if from >= size || from-s.next >= s.window/2 {
		return
	}
	to := min(s.next+s.window, size)
	from = from / BlockSize * BlockSize
	s.ra = to
	s.window = min(2*s.window, maxWin)
	// A job per chunk, so that the workers read a window in parallel.
	for ; from < to; from += prefetchChunk {
		e.enqueue(pfJob{ino: ino, from: from, to: min(from+prefetchChunk, to)})
	}
}

// Opened tells the engine that the filesystem layer opened file ino: with
// the whole-file policy, the file is read into the cache in the
// background.
func (e *Engine) Opened(ino Ino) {
	if e.cfg.Prefetch != PrefetchWholeFile {
		return
	}
	e.mu.Lock()
	in, ok := e.st.inode(ino)
	limit := uint64(e.pool.pages()/2) * BlockSize
	e.mu.Unlock()
	if !ok || !in.IsReg() || in.Size == 0 {
		return
	}
	e.enqueue(pfJob{ino: ino, from: 0, to: min(in.Size, limit)})
}

// beginLoad registers the blocks [from, to) of ino that a foreground read
// is loading from the backend; the returned func ends it.
func (e *Engine) beginLoad(ino Ino, from, to uint64) func() {
	if e.cfg.Prefetch == PrefetchNone {
		return func() {}
	}
	p := &e.pf
	p.mu.Lock()
	p.inflight[ino] = append(p.inflight[ino], span{from, to})
	p.mu.Unlock()
	return func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		l := p.inflight[ino]
		for i, s := range l {
			if s == (span{from, to}) {
				l = append(l[:i], l[i+1:]...)
				break
			}
		}
		if len(l) == 0 {
			delete(p.inflight, ino)
		} else {
			p.inflight[ino] = l
		}
	}
}

// loading returns the spans of ino that foreground reads are loading.
func (e *Engine) loading(ino Ino) []span {
	e.pf.mu.Lock()
	defer e.pf.mu.Unlock()
	return append([]span(nil), e.pf.inflight[ino]...)
}

func (e *Engine) prefetchWorker() {
	defer e.done.Done()
	for {
		select {
		case <-e.stop:
			return
		case j := <-e.pf.jobs:
			e.prefetch(j)
			e.pf.pending.Done()
		}
	}
}

// prefetch reads the missing blocks of [j.from, j.to) of j.ino into clean
// pages, a chunk at a time.
func (e *Engine) prefetch(j pfJob) {
	for off := j.from / BlockSize * BlockSize; off < j.to; off += prefetchChunk {
		select {
		case <-e.stop:
			return
		default:
		}
		busy := e.loading(j.ino)
		e.mu.Lock()
		in, ok := e.st.inode(j.ino)
		if e.closed || !ok || off >= in.Size {
			e.mu.Unlock()
			return
		}
		end := min(off+prefetchChunk, j.to, (in.Size+BlockSize-1)/BlockSize*BlockSize)
		misses := e.prefetchMissesLocked(j.ino, off/BlockSize, end/BlockSize, busy)
		if len(misses) == 0 {
			e.mu.Unlock()
			continue
		}
		// Keep pages for writers and foreground reads: a sixteenth of
		// the pool beyond what is reserved.
		if e.pool.available()-e.reserved < len(misses)+e.pool.pages()/16 {
			e.mu.Unlock()
			e.stats.PrefetchDropped.Add(1)
			return
		}
		e.mu.Unlock()
		recs, bufs, err := e.loadRecords(misses, nil)
		if err != nil {
			e.log.WithError(err).WithField("ino", j.ino).Debug("prefetch")
			return
		}
		starts := recordStarts(misses)
		e.mu.Lock()
		n := 0
		if !e.closed {
			for a, rec := range recs {
				n += e.cacheRecordLocked(j.ino, a, starts[a], rec, true)
			}
		}
		e.mu.Unlock()
		for _, b := range bufs {
			spanBufs.put(b)
		}
		e.stats.PrefetchBytes.Add(int64(n) * BlockSize)
	}
}

// prefetchMissesLocked lists the blocks [first, last) of ino that are in
// backend records, not cached and not being loaded.
func (e *Engine) prefetchMissesLocked(ino Ino, first, last uint64, busy []span) []miss {
	misses := make([]miss, 0, last-first)
	e.st.extentsIn(ino, first*BlockSize, last*BlockSize, func(x Extent) bool {
		for b := max(first, x.Off/BlockSize); b < min(last, x.End()/BlockSize); b++ {
			if _, ok := e.pages.Get(pageRef{Ino: ino, Blk: b}); ok {
				continue
			}
			loading := false
			for _, s := range busy {
				if b >= s.from && b < s.to {
					loading = true
					break
				}
			}
			if !loading {
				misses = append(misses, miss{blk: b, x: x})
			}
		}
		return true
	})
	return misses
}

// prefetchedReadLocked counts a read of a page (a hit when prefetched).
func (e *Engine) prefetchedReadLocked(page uint32) {
	if m := &e.pool.meta[page]; m.prefetched {
		m.prefetched = false
		e.stats.PrefetchHits.Add(1)
	}
}

// prefetchedGoneLocked counts a page that leaves the cache (waste when it
// was prefetched and never read).
func (e *Engine) prefetchedGoneLocked(page uint32) {
	if m := &e.pool.meta[page]; m.prefetched {
		m.prefetched = false
		e.stats.PrefetchWaste.Add(1)
	}
}

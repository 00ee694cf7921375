package cachelayer

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/dcache/dcache/backend"
)

// Segment cleaning.
//
// Segments are append-only, so overwritten, truncated and deleted data
// leaves dead bytes behind in them. A cleaning round picks segments whose
// live fraction (segusage.go) is below Config.CleanThreshold, lowest first
// (and, while the segments take more than spaceTarget times the live data,
// segments up to spaceCeiling live), copies their live extents into new records through the same path destage
// uses, and frees them:
//
//  1. read each live extent's bytes (checksum verified) and append them, run
//     by run, as new records; Sync the backend;
//  2. under Engine.mu, repoint every live extent that still maps the old
//     bytes to the new record (extents cut or dropped meanwhile are left as
//     they are: they no longer refer to the old segment anyway);
//  3. persist a metadata round (destageMetaOnly: log synced to the cut, delta
//     or checkpoint written, log trimmed), so that the backend's image no
//     longer refers to the old segments;
//  4. only then remove the old segments.
//
// A crash before 3 leaves the old image, which points at the old segments,
// still present; the new records are unreferenced garbage that a later
// round frees. A crash between 3 and 4 leaves segments nothing refers to,
// which the next round removes. Nothing but cleaning removes segments, and
// nothing but destage and cleaning (both under destageMu) adds references,
// so a segment found unreferenced in step 2 stays so.
//
// Readers look up extents under Engine.mu and read the backend without it;
// a read that fails because its segment was removed meanwhile finds the
// extent moved (missesMoved) and looks again.
//
// # Priority
//
// A round holds destageMu, so it never runs alongside a destage round. The
// background cleaner starts a round only when destage has nothing to do
// (destageNeeded says no) and destageMu is free (TryLock: it never queues
// in front of destage), skips ticks in which the foreground read from the
// backend or wrote (cleanYield; at most cleanMaxYield in a row, so that it
// keeps up under a steady load), rewrites at most cleanBatch live bytes per
// round and starts at most one round per cleanInterval, which bounds its
// share of the backend's bandwidth. The I/O priority class is left alone on purpose: the
// cleaner's I/O runs while it holds destageMu, and an idle-class thread
// starved by foreground reads would stall destage, and with it every
// writer waiting for dirty budget (a priority inversion).

const (
	cleanInterval = 100 * time.Millisecond
	cleanBatch    = 16 << 20 // live bytes rewritten per round, beyond the first segment

	// The threshold alone lets segments just above it pile up (at 0.5,
	// twice the live data). While the segments take more than spaceTarget
	// times the live bytes, segments up to spaceCeiling live are cleaned
	// too, which keeps the backend within 1.5 times the live data (the
	// margin covers the segment being written and the metadata files).
	spaceTarget  = 1.35
	spaceCeiling = 0.9
)

// cleanStage names the points of a round at which tests stop it, as a
// crash would.
type cleanStage int

const (
	cleanCopied    cleanStage = iota // live bytes appended and synced; nothing repointed
	cleanRepointed                   // live extents repointed; metadata not persisted
	cleanPersisted                   // metadata persisted; old segments still present
)

func (s cleanStage) String() string {
	switch s {
	case cleanCopied:
		return "copied"
	case cleanRepointed:
		return "repointed"
	case cleanPersisted:
		return "persisted"
	}
	return fmt.Sprintf("cleanStage(%d)", int(s))
}

// cleanState is the cleaner's part of the engine.
type cleanState struct {
	rounds   atomic.Int64
	segments atomic.Int64 // segments removed
	moved    atomic.Int64 // live bytes rewritten
	freed    atomic.Int64 // segment bytes removed
	// stopAt, tests only: called at each stage; an error ends the round
	// there, leaving the state a crash at that point would.
	stopAt func(cleanStage) error
}

// CleanInfo describes the backend's segments and the cleaner's work.
type CleanInfo struct {
	Segments        int     // segments in the backend
	SegmentBytes    int64   // their length, headers included
	LiveBytes       int64   // bytes of live extents in them
	LiveFraction    float64 // LiveBytes over the segments' data bytes; 1 without segments
	BelowThreshold  int     // segments (not being written) whose live fraction is below Threshold
	Threshold       float64 // Config.CleanThreshold; 0: cleaning disabled
	Rounds          int64   // cleaning rounds that freed or moved something
	CleanedSegments int64   // segments freed by cleaning
	CleanedBytes    int64   // live bytes cleaning rewrote
	FreedBytes      int64   // segment bytes cleaning gave back
}

// CleanInfo reports the live accounting of the backend's segments and the
// cleaner's counters.
func (e *Engine) CleanInfo() CleanInfo {
	segs := e.be.Segments()
	ci := CleanInfo{
		Segments:        len(segs),
		Threshold:       e.cfg.CleanThreshold,
		Rounds:          e.clean.rounds.Load(),
		CleanedSegments: e.clean.segments.Load(),
		CleanedBytes:    e.clean.moved.Load(),
		FreedBytes:      e.clean.freed.Load(),
	}
	var data int64
	e.mu.Lock()
	for _, s := range segs {
		live := e.st.usage.live[s.Number]
		ci.SegmentBytes += s.Size
		ci.LiveBytes += live
		d := max(s.Size-backend.BlockSize, 0)
		data += d
		if !s.Active && ci.Threshold > 0 && float64(live) < ci.Threshold*float64(d) {
			ci.BelowThreshold++
		}
	}
	e.mu.Unlock()
	ci.LiveFraction = 1
	if data > 0 {
		ci.LiveFraction = float64(ci.LiveBytes) / float64(data)
	}
	return ci
}

// Clean runs cleaning rounds until no segment is below the threshold (or a
// round makes no progress). It waits for destage rounds in flight.
func (e *Engine) Clean(ctx context.Context) error {
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		e.destageMu.Lock()
		progress, err := e.cleanRoundLocked(ctx)
		e.destageMu.Unlock()
		if err != nil || !progress {
			return err
		}
	}
}

// cleaner runs cleaning rounds in the background when destage is idle.
func (e *Engine) cleaner() {
	defer e.done.Done()
	tick := time.NewTicker(cleanInterval)
	defer tick.Stop()
	failing := false
	var y cleanYield
	for {
		select {
		case <-e.stop:
			return
		case <-tick.C:
		}
		if _, busy := e.destageNeeded(); busy {
			continue
		}
		if !y.mayRun(e.stats.ReadMisses.Load() + e.stats.BytesWritten.Load()) {
			continue
		}
		if !e.destageMu.TryLock() {
			continue
		}
		_, err := e.cleanRoundLocked(context.Background())
		e.destageMu.Unlock()
		switch {
		case err != nil && !failing:
			e.log.WithError(err).Warn("segment cleaning failed; retrying")
			failing = true
		case err == nil && failing:
			e.log.Info("segment cleaning recovered")
			failing = false
		}
	}
}

// cleanMaxYield is how many ticks in a row the cleaner gives way to
// foreground I/O before it runs a round anyway: under a steady overwrite
// load it must still keep up, or the backend grows without bound.
const cleanMaxYield = 10

// cleanYield decides, tick by tick, whether the cleaner gives way to
// foreground I/O: it skips a tick in which the foreground read from the
// backend or wrote (activity is a counter of both that only grows), at
// most cleanMaxYield ticks in a row.
type cleanYield struct {
	seen    int64
	skipped int
}

func (y *cleanYield) mayRun(activity int64) bool {
	busy := activity != y.seen
	y.seen = activity
	if busy && y.skipped < cleanMaxYield {
		y.skipped++
		return false
	}
	y.skipped = 0
	return true
}

// victim is a segment a round cleans.
type victim struct {
	num  uint64
	size int64
	live int64
}

// pickVictimsLocked chooses the segments of a round: every unreferenced
// one, then the lowest live fractions below the threshold, then, while the
// segments would still take more than spaceTarget times the live bytes,
// the lowest live fractions below spaceCeiling whatever the threshold;
// until the bytes to rewrite reach cleanBatch (at least one segment).
func (e *Engine) pickVictimsLocked(segs []backend.SegmentInfo) []victim {
	th := e.cfg.CleanThreshold
	type cand struct {
		victim
		frac float64
	}
	var cands []cand
	var space, live int64
	for _, s := range segs {
		l := e.st.usage.live[s.Number]
		space += s.Size
		live += l
		if s.Active {
			continue
		}
		d := max(s.Size-backend.BlockSize, 1)
		cands = append(cands, cand{victim{s.Number, s.Size, l}, float64(l) / float64(d)})
	}
	slices.SortFunc(cands, func(a, b cand) int {
		if a.frac != b.frac {
			if a.frac < b.frac {
				return -1
			}
			return 1
		}
		return cmp.Compare(a.num, b.num)
	})
	var out []victim
	var moving int64
	for _, c := range cands {
		if c.live > 0 && moving > 0 && moving+c.live > cleanBatch {
			break
		}
		overTarget := float64(space) > spaceTarget*float64(live)
		if !(c.live == 0 || c.frac < th || overTarget && c.frac < spaceCeiling) {
			break
		}
		moving += c.live
		space -= c.size - c.live // what freeing it gives back, less the rewrite
		out = append(out, c.victim)
	}
	return out
}

// move is one live extent being copied into a new record.
type move struct {
	old  Extent
	addr backend.Addr // the new record
	skip uint32       // where old's bytes start in it
}

// cleanRoundLocked runs one round with destageMu held. It reports whether
// it freed a segment.
func (e *Engine) cleanRoundLocked(ctx context.Context) (bool, error) {
	if e.cfg.CleanThreshold <= 0 {
		return false, nil
	}
	start := time.Now()
	segs := e.be.Segments()
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return false, ErrClosed
	}
	victims := e.pickVictimsLocked(segs)
	extents := e.st.extents.Copy()
	e.mu.Unlock()
	if len(victims) == 0 {
		return false, nil
	}
	want := make(map[uint64]bool, len(victims))
	for _, v := range victims {
		want[v.num] = true
	}

	// 1. Copy the live bytes into new records.
	var moves []move
	extents.Scan(func(x Extent) bool {
		if want[x.Addr.Segment] {
			moves = append(moves, move{old: x})
		}
		return true
	})
	moved, err := e.copyLive(moves)
	if err != nil {
		return false, fmt.Errorf("cachelayer: clean: %w", err)
	}
	if err := e.cleanStop(cleanCopied); err != nil {
		return false, err
	}

	// 2. Repoint what still maps the old bytes.
	e.mu.Lock()
	for i := range moves {
		e.repointMovedLocked(&moves[i])
	}
	var free []victim
	for _, v := range victims {
		if e.segmentFreeLocked(v.num) {
			free = append(free, v)
		} else {
			// Cannot happen (see the comment at the top); keeping the
			// segment is always safe.
			e.log.WithFields(logrus.Fields{"segment": v.num, "live": e.st.usage.live[v.num]}).
				Error("segment still referenced after cleaning; keeping it")
		}
	}
	e.mu.Unlock()
	if err := e.cleanStop(cleanRepointed); err != nil {
		return false, err
	}

	// 3. Persist an image that no longer refers to the victims.
	if err := e.destageLocked(ctx, destageMetaOnly, true); err != nil {
		return false, fmt.Errorf("cachelayer: clean: %w", err)
	}
	if err := e.cleanStop(cleanPersisted); err != nil {
		return false, err
	}

	// 4. Free them.
	var freed int64
	for _, v := range free {
		if err := e.be.RemoveSegment(v.num); err != nil {
			return true, fmt.Errorf("cachelayer: clean: %w", err)
		}
		freed += v.size
		e.clean.segments.Add(1)
		e.clean.freed.Add(v.size)
	}
	e.clean.moved.Add(moved)
	e.clean.rounds.Add(1)
	e.log.WithFields(logrus.Fields{
		"segments": len(free), "extents": len(moves), "moved": moved, "freed": freed,
		"took": time.Since(start).Round(time.Microsecond),
	}).Debug("cleaning round")
	return len(free) > 0, nil
}

func (e *Engine) cleanStop(s cleanStage) error {
	if e.clean.stopAt == nil {
		return nil
	}
	if err := e.clean.stopAt(s); err != nil {
		return fmt.Errorf("cachelayer: clean stopped at %v: %w", s, err)
	}
	return nil
}

// copyLive reads the bytes of each move's extent and appends them, packed
// into records of up to MaxRecord bytes of one object's consecutive range,
// then syncs the backend. It fills in the moves' new addresses.
func (e *Engine) copyLive(moves []move) (int64, error) {
	if len(moves) == 0 {
		return 0, nil
	}
	var (
		src     []byte       // the record last read
		srcAddr backend.Addr // its address
		buf     = make([]byte, 0, MaxRecord)
		first   int // first move of the record being built
		total   int64
	)
	flush := func(end int) error {
		if len(buf) == 0 {
			return nil
		}
		addr, err := e.be.Append(buf)
		if err != nil {
			return err
		}
		for i := first; i < end; i++ {
			moves[i].addr = addr
		}
		total += int64(len(buf))
		buf, first = buf[:0], end
		return nil
	}
	for i := range moves {
		x := moves[i].old
		if x.Addr != srcAddr {
			if cap(src) < int(x.Addr.Len) {
				src = make([]byte, x.Addr.Len)
			}
			src = src[:x.Addr.Len]
			if err := e.be.Read(x.Addr, src); err != nil {
				return 0, err
			}
			srcAddr = x.Addr
		}
		if uint64(x.Skip)+uint64(x.Len) > uint64(len(src)) {
			return 0, fmt.Errorf("extent %d@%d+%d reaches past its record %v", x.Ino, x.Off, x.Len, x.Addr)
		}
		if i > first {
			prev := moves[i-1].old
			if x.Ino != prev.Ino || x.Off != prev.End() || len(buf)+int(x.Len) > MaxRecord {
				if err := flush(i); err != nil {
					return 0, err
				}
			}
		}
		moves[i].skip = uint32(len(buf))
		buf = append(buf, src[x.Skip:x.Skip+x.Len]...)
	}
	if err := flush(len(moves)); err != nil {
		return 0, err
	}
	if err := e.be.Sync(); err != nil {
		return 0, err
	}
	return total, nil
}

// repointMovedLocked maps what is left of m.old in the live extent map to
// m's new record: the pieces of extents that still map the old record with
// the same alignment (an extent may have been split or cut since).
func (e *Engine) repointMovedLocked(m *move) {
	o := m.old
	base := o.Off - uint64(o.Skip)
	var hits []Extent
	e.st.extentsIn(o.Ino, o.Off, o.End(), func(x Extent) bool {
		if x.Addr == o.Addr && x.Off-uint64(x.Skip) == base {
			hits = append(hits, x)
		}
		return true
	})
	for _, x := range hits {
		lo, hi := max(x.Off, o.Off), min(x.End(), o.End())
		e.st.setExtent(Extent{Ino: o.Ino, Off: lo, Len: uint32(hi - lo), Skip: m.skip + uint32(lo-o.Off), Addr: m.addr})
	}
	if len(hits) > 0 {
		e.changed.inos[o.Ino] = struct{}{}
	}
}

// missesMoved reports whether any extent behind misses no longer maps the
// same bytes (cleaning moved it, or an op changed it), after a backend read
// of them failed.
func (e *Engine) missesMoved(ino Ino, misses []miss) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, m := range misses {
		x, ok := e.st.extentAt(ino, m.blk*BlockSize)
		if !ok || x.Addr != m.x.Addr || x.Off-uint64(x.Skip) != m.x.Off-uint64(m.x.Skip) {
			return true
		}
	}
	return false
}

package cachelayer

// Live accounting of backend segments.
//
// A segment's live bytes are the bytes of extents that point into it. An
// extent is a piece of a record (Skip, Len), so several extents may share a
// record, and each counts its own Len: the count is what a cleaner would
// have to copy to empty the segment. The live state's meta carries a
// *segUsage that punchExtents, setExtent and dropObject keep current; it is
// rebuilt from the extent tree whenever the live state is loaded (recovery
// loads the image, builds the count, then replays the log through the same
// methods), so it is right after a crash without being persisted.
//
// A segment may be freed only when nothing that can still be read refers to
// it: the live extent map (counted here) and the metadata image in the
// backend, which lags the live state until the next persisted round. The
// cleaner therefore frees a segment only after a persisted round whose cut
// has no reference to it (see clean.go). Snapshots will add holders of
// their own: a snapshot's frozen extent tree refers to segments as the live
// one does, and counts its references in a segUsage of its own;
// segmentFreeLocked is the one place that asks whether a segment is
// referenced, and is where those counts join the live one.

// segUsage maps a segment number to the live bytes in it.
type segUsage struct {
	live map[uint64]int64
}

func newSegUsage() *segUsage { return &segUsage{live: make(map[uint64]int64)} }

// add counts x as referring to its segment. A nil receiver counts nothing
// (cuts and trees being loaded have no usage).
func (u *segUsage) add(x Extent) {
	if u == nil || x.Addr.Segment == 0 {
		return
	}
	u.live[x.Addr.Segment] += int64(x.Len)
}

// sub uncounts x.
func (u *segUsage) sub(x Extent) {
	if u == nil || x.Addr.Segment == 0 {
		return
	}
	n := u.live[x.Addr.Segment] - int64(x.Len)
	if n <= 0 {
		// Never below zero: sub only undoes an add of the same extent.
		delete(u.live, x.Addr.Segment)
		return
	}
	u.live[x.Addr.Segment] = n
}

// usageOf counts the extents of m from scratch.
func usageOf(m *meta) *segUsage {
	u := newSegUsage()
	m.extents.Scan(func(x Extent) bool {
		u.add(x)
		return true
	})
	return u
}

// trackUsage gives the live state a usage count built from its extents.
func (e *Engine) trackUsage() { e.st.usage = usageOf(&e.st) }

// segmentFreeLocked reports whether no extent of the live state refers to
// segment n.
func (e *Engine) segmentFreeLocked(n uint64) bool { return e.st.usage.live[n] == 0 }

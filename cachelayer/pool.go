package cachelayer

import (
	"fmt"
	"syscall"
)

// pageState says what a pool page holds.
type pageState uint8

const (
	pageFree  pageState = iota
	pageClean           // a copy of backend bytes (or zeros of a hole), evictable
	pageDirty           // newer than the backend; never evicted
)

func (s pageState) String() string {
	switch s {
	case pageFree:
		return "free"
	case pageClean:
		return "clean"
	case pageDirty:
		return "dirty"
	}
	return fmt.Sprintf("pageState(%d)", s)
}

// pageMeta describes one pool page. Kept in a flat slice (no pointers) so
// that a large pool costs the garbage collector nothing to scan.
type pageMeta struct {
	ino      Ino
	blk      uint64
	dirtyLSN uint64 // LSN of the op that made the page dirty (dirty pages)
	dirtyAt  int64  // unix ns when it became dirty
	ver      uint32 // bumped by every write into the page
	seq      uint32 // bumped by every allocation of the page
	prev     int32  // LRU links (clean pages only); -1 = none
	next     int32
	state    pageState
	// prefetched marks a page filled by the prefetcher and not read yet.
	prefetched bool
}

// pool is the fixed page pool: one anonymous mapping of n pages, so memory
// use is bounded by the configured cache size and untouched pages cost no
// resident memory. All methods need Engine.mu held.
type pool struct {
	mem    []byte
	meta   []pageMeta
	free   []uint32
	lruOld int32 // least recently used clean page
	lruNew int32 // most recently used clean page
	nClean int
	nDirty int
	fifo   bool // evict in the order pages were cached: touch does nothing
}

func newPool(bytes int64) (*pool, error) {
	n := bytes / BlockSize
	if n < 16 {
		return nil, fmt.Errorf("cachelayer: cache of %d bytes is too small", bytes)
	}
	if n > 1<<31-1 {
		return nil, fmt.Errorf("cachelayer: cache of %d bytes is too large", bytes)
	}
	mem, err := syscall.Mmap(-1, 0, int(n*BlockSize), syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_ANON|syscall.MAP_PRIVATE)
	if err != nil {
		return nil, fmt.Errorf("cachelayer: map %d bytes of page cache: %w", n*BlockSize, err)
	}
	// Huge pages where the kernel allows them (advisory), then fault the
	// whole pool in now: the cache takes its memory up front, like a
	// database's buffer pool, instead of paying a page fault inside the
	// first write to every page (measured: half the daemon's CPU while a
	// fresh cache fills).
	_ = syscall.Madvise(mem, 14 /* MADV_HUGEPAGE */)
	for off := 0; off < len(mem); off += 4096 {
		mem[off] = 0
	}
	p := &pool{mem: mem, meta: make([]pageMeta, n), free: make([]uint32, 0, n), lruOld: -1, lruNew: -1}
	for i := n - 1; i >= 0; i-- {
		p.free = append(p.free, uint32(i))
		p.meta[i].prev, p.meta[i].next = -1, -1
	}
	return p, nil
}

func (p *pool) close() {
	if p.mem != nil {
		_ = syscall.Munmap(p.mem)
		p.mem = nil
	}
}

func (p *pool) pages() int { return len(p.meta) }

// data returns page i's bytes.
func (p *pool) data(i uint32) []byte {
	off := int(i) * BlockSize
	return p.mem[off : off+BlockSize : off+BlockSize]
}

// available is how many pages an allocation could get without waiting.
func (p *pool) available() int { return len(p.free) + p.nClean }

// takeFree pops a free page, or returns false.
func (p *pool) takeFree() (uint32, bool) {
	if len(p.free) == 0 {
		return 0, false
	}
	i := p.free[len(p.free)-1]
	p.free = p.free[:len(p.free)-1]
	return i, true
}

// oldestClean is the eviction candidate, or -1.
func (p *pool) oldestClean() int32 { return p.lruOld }

// assign gives a free page an owner in state s. Unless the caller is about
// to overwrite all of it (whole), it is zero-filled; a page never used
// before is zero already (fresh anonymous memory), and clearing it would
// only fault it in early.
func (p *pool) assign(i uint32, ino Ino, blk uint64, s pageState, whole bool) {
	m := &p.meta[i]
	if !whole && m.seq != 0 {
		clear(p.data(i))
	}
	m.ino, m.blk, m.ver, m.dirtyLSN, m.dirtyAt, m.prefetched = ino, blk, 0, 0, 0, false
	m.seq++
	m.state = pageFree
	p.setState(i, s)
}

// release returns a page to the free list.
func (p *pool) release(i uint32) {
	p.setState(i, pageFree)
	p.free = append(p.free, i)
}

// setState moves a page between free, clean (in the LRU) and dirty.
func (p *pool) setState(i uint32, s pageState) {
	m := &p.meta[i]
	switch m.state {
	case pageClean:
		p.lruUnlink(int32(i))
		p.nClean--
	case pageDirty:
		p.nDirty--
	}
	m.state = s
	switch s {
	case pageClean:
		p.lruPush(int32(i))
		p.nClean++
		m.dirtyLSN, m.dirtyAt = 0, 0
	case pageDirty:
		p.nDirty++
	}
}

// touch marks a clean page most recently used (LRU eviction only).
func (p *pool) touch(i uint32) {
	if p.fifo || p.meta[i].state != pageClean || p.lruNew == int32(i) {
		return
	}
	p.lruUnlink(int32(i))
	p.lruPush(int32(i))
}

// demote makes a clean page the next to be evicted.
func (p *pool) demote(i uint32) {
	if p.meta[i].state != pageClean || p.lruOld == int32(i) {
		return
	}
	p.lruUnlink(int32(i))
	m := &p.meta[i]
	m.prev, m.next = -1, p.lruOld
	p.meta[p.lruOld].prev = int32(i) // the list is not empty: i was in it
	p.lruOld = int32(i)
}

func (p *pool) lruPush(i int32) {
	m := &p.meta[i]
	m.prev, m.next = p.lruNew, -1
	if p.lruNew >= 0 {
		p.meta[p.lruNew].next = i
	} else {
		p.lruOld = i
	}
	p.lruNew = i
}

func (p *pool) lruUnlink(i int32) {
	m := &p.meta[i]
	if m.prev >= 0 {
		p.meta[m.prev].next = m.next
	} else {
		p.lruOld = m.next
	}
	if m.next >= 0 {
		p.meta[m.next].prev = m.prev
	} else {
		p.lruNew = m.prev
	}
	m.prev, m.next = -1, -1
}

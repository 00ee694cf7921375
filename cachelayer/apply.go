package cachelayer

import (
	"fmt"
	"syscall"
	"time"
)

// changeSet is the metadata changed since the last persisted checkpoint or
// delta: objects whose attributes, xattrs or extents changed (or that were
// deleted) and directory entries added or removed.
type changeSet struct {
	inos    map[Ino]struct{}
	dirents map[direntKey]struct{}
}

type direntKey struct {
	parent Ino
	name   string
}

func newChangeSet() changeSet {
	return changeSet{inos: make(map[Ino]struct{}), dirents: make(map[direntKey]struct{})}
}

func (c *changeSet) empty() bool { return len(c.inos) == 0 && len(c.dirents) == 0 }

// merge adds o's entries (a round that failed to persist gives them back).
func (c *changeSet) merge(o changeSet) {
	for k := range o.inos {
		c.inos[k] = struct{}{}
	}
	for k := range o.dirents {
		c.dirents[k] = struct{}{}
	}
}

// applyLocked applies one op's mutations, logged at lsn. It is the only
// code that changes the state, for live ops and for replay alike. Live ops
// have checked every precondition in build; replay may meet objects that a
// later checkpoint already removed, and skips what targets them.
func (e *Engine) applyLocked(muts []mutation, lsn uint64) {
	for i := range muts {
		m := &muts[i]
		switch m.kind {
		case mPutInode:
			in := m.inode
			old, ok := e.st.inode(in.Ino)
			if ok {
				in.Blocks = old.Blocks
			} else {
				in.Blocks = 0
			}
			e.st.putInode(in)
			e.quotaSizeLocked(in.Ino, old.Size, in.Size)
			e.changed.inos[in.Ino] = struct{}{}
		case mDelInode:
			e.deleteObjectLocked(m.ino)
		case mPutDirent:
			e.quotaDirentLocked(m.dirent)
			e.st.dirents.Set(m.dirent)
			e.changed.dirents[direntKey{m.dirent.Parent, m.dirent.Name}] = struct{}{}
		case mDelDirent:
			e.st.dirents.Delete(m.dirent)
			e.changed.dirents[direntKey{m.dirent.Parent, m.dirent.Name}] = struct{}{}
		case mPutXattr:
			if _, ok := e.st.inode(m.ino); !ok {
				continue
			}
			e.st.xattrs.Set(Xattr{Ino: m.ino, Name: m.name, Value: m.value})
			e.changed.inos[m.ino] = struct{}{}
		case mDelXattr:
			e.st.xattrs.Delete(Xattr{Ino: m.ino, Name: m.name})
			e.changed.inos[m.ino] = struct{}{}
		case mSymlink:
			if _, ok := e.st.inode(m.ino); !ok {
				continue
			}
			e.st.symlinks.Set(Symlink{Ino: m.ino, Target: m.name})
			e.changed.inos[m.ino] = struct{}{}
		case mWrite:
			e.applyWriteLocked(m, lsn)
		case mTruncate:
			e.applyTruncateLocked(m.ino, m.off, lsn)
		case mPunch:
			e.applyPunchLocked(m.ino, m.off, m.n, lsn)
		default:
			panic(fmt.Sprintf("cachelayer: apply mutation kind %d", m.kind))
		}
	}
	if lsn > e.lastLSN {
		e.lastLSN = lsn
	}
}

// deleteObjectLocked removes an object with everything it owns.
func (e *Engine) deleteObjectLocked(ino Ino) {
	e.quotaDeleteLocked(ino)
	e.st.inodes.Delete(Inode{Ino: ino})
	e.st.dropObject(ino)
	e.dropPagesLocked(ino, 0, ^uint64(0))
	delete(e.streams, ino)
	e.changed.inos[ino] = struct{}{}
}

// pageOfLocked returns the pool page of a cached block; it must exist.
func (e *Engine) pageOfLocked(ino Ino, blk uint64) uint32 {
	r, ok := e.pages.Get(pageRef{Ino: ino, Blk: blk})
	if !ok {
		panic(fmt.Sprintf("cachelayer: no page for object %d block %d", ino, blk))
	}
	return r.Page
}

// allocPageLocked takes a free page or evicts the least recently used clean
// one. The caller made sure one is available (pool.available() > 0). The
// page is zero-filled unless whole says the caller overwrites all of it.
func (e *Engine) allocPageLocked(ino Ino, blk uint64, s pageState, whole bool) uint32 {
	i, ok := e.pool.takeFree()
	if !ok {
		v := e.pool.oldestClean()
		if v < 0 {
			panic("cachelayer: page allocation with no free or clean page")
		}
		vm := &e.pool.meta[v]
		e.prefetchedGoneLocked(uint32(v))
		e.pages.Delete(pageRef{Ino: vm.ino, Blk: vm.blk})
		e.pool.release(uint32(v))
		e.stats.Evictions.Add(1)
		i, _ = e.pool.takeFree()
	}
	e.pool.assign(i, ino, blk, s, whole)
	e.pages.Set(pageRef{Ino: ino, Blk: blk, Page: i, Dirty: s == pageDirty})
	return i
}

// markDirtyLocked makes a cached block dirty as of lsn (if it is not already).
func (e *Engine) markDirtyLocked(r pageRef, lsn uint64) {
	if r.Dirty {
		return
	}
	m := &e.pool.meta[r.Page]
	m.prefetched = false // overwritten: neither read nor wasted
	e.pool.setState(r.Page, pageDirty)
	m.dirtyLSN, m.dirtyAt = lsn, time.Now().UnixNano()
	r.Dirty = true
	e.pages.Set(r)
	e.dirtyQ.Set(dirtyKey{LSN: lsn, Ino: r.Ino, Blk: r.Blk})
}

// markCleanLocked records that a dirty block's bytes are in the backend. A
// page of a sequential stream goes to the cold end of the eviction order.
func (e *Engine) markCleanLocked(r pageRef) {
	if !r.Dirty {
		return
	}
	m := &e.pool.meta[r.Page]
	stream := e.dqDeleteLocked(dirtyKey{LSN: m.dirtyLSN, Ino: r.Ino, Blk: r.Blk})
	e.pool.setState(r.Page, pageClean)
	if stream {
		e.pool.demote(r.Page)
	}
	r.Dirty = false
	e.pages.Set(r)
}

// redirtyLocked moves a dirty page's LSN forward: its bytes up to a destage
// copy are in the backend, and only ops after lsn-1 may be missing there.
func (e *Engine) redirtyLocked(r pageRef, lsn uint64) {
	m := &e.pool.meta[r.Page]
	if !r.Dirty || m.dirtyLSN >= lsn {
		return
	}
	stream := e.dqDeleteLocked(dirtyKey{LSN: m.dirtyLSN, Ino: r.Ino, Blk: r.Blk})
	m.dirtyLSN = lsn
	e.dirtyQ.Set(dirtyKey{LSN: lsn, Ino: r.Ino, Blk: r.Blk, Stream: stream})
	if stream {
		e.streamDirty++
	}
}

// dropPagesLocked frees the cached blocks [from, to) of ino and returns how
// many there were.
func (e *Engine) dropPagesLocked(ino Ino, from, to uint64) int {
	var refs []pageRef
	e.pages.Ascend(pageRef{Ino: ino, Blk: from}, func(r pageRef) bool {
		if r.Ino != ino || r.Blk >= to {
			return false
		}
		refs = append(refs, r)
		return true
	})
	for _, r := range refs {
		if r.Dirty {
			m := &e.pool.meta[r.Page]
			e.dqDeleteLocked(dirtyKey{LSN: m.dirtyLSN, Ino: r.Ino, Blk: r.Blk})
		}
		e.prefetchedGoneLocked(r.Page)
		e.pages.Delete(r)
		e.pool.release(r.Page)
	}
	if len(refs) > 0 {
		e.signalRoomLocked()
	}
	return len(refs)
}

// hasDataLocked reports whether a block holds data (cached or destaged).
func (e *Engine) hasDataLocked(ino Ino, blk uint64) bool {
	if _, ok := e.pages.Get(pageRef{Ino: ino, Blk: blk}); ok {
		return true
	}
	_, ok := e.st.extentAt(ino, blk*BlockSize)
	return ok
}

// writeNeedsLocked checks what writing [off, off+n) of ino requires: the
// partially covered blocks that hold destaged data must be cached first
// (read-modify-write), and the uncached blocks need pages that do not come
// from evicting the range's own clean pages.
func (e *Engine) writeNeedsLocked(ino Ino, off, n uint64) (fetch []uint64, short int) {
	if n == 0 {
		return nil, 0
	}
	first, last := off/BlockSize, (off+n-1)/BlockSize
	cached, clean := 0, 0
	e.pages.Ascend(pageRef{Ino: ino, Blk: first}, func(r pageRef) bool {
		if r.Ino != ino || r.Blk > last {
			return false
		}
		cached++
		if !r.Dirty {
			clean++
		}
		return true
	})
	newPages := int(last-first+1) - cached
	for _, b := range partialBlocks(off, off+n) {
		if _, ok := e.pages.Get(pageRef{Ino: ino, Blk: b}); ok {
			continue
		}
		if _, ok := e.st.extentAt(ino, b*BlockSize); ok {
			fetch = append(fetch, b)
		}
	}
	if avail := e.pool.available() - clean; avail < newPages {
		short = newPages - avail
	}
	return fetch, short
}

// applyWriteLocked copies a write's bytes into pages and updates size and
// times. Preconditions (live ops and replay check them first with
// writeNeedsLocked): partial blocks with destaged data are cached, and
// enough pages can be allocated.
func (e *Engine) applyWriteLocked(m *mutation, lsn uint64) {
	in, ok := e.st.inode(m.ino)
	if !ok {
		return
	}
	end := m.off + uint64(len(m.value))
	if len(m.value) > 0 {
		// Dirty the range's cached pages first, so that allocating pages
		// for the others cannot evict them.
		first, last := m.off/BlockSize, (end-1)/BlockSize
		var cached []pageRef
		e.pages.Ascend(pageRef{Ino: m.ino, Blk: first}, func(r pageRef) bool {
			if r.Ino != m.ino || r.Blk > last {
				return false
			}
			cached = append(cached, r)
			return true
		})
		for _, r := range cached {
			e.markDirtyLocked(r, lsn)
		}
	}
	data := m.value
	off := m.off
	for len(data) > 0 {
		blk := off / BlockSize
		bo := off % BlockSize
		c := min(uint64(len(data)), BlockSize-bo)
		r, ok := e.pages.Get(pageRef{Ino: m.ino, Blk: blk})
		if !ok {
			if _, ext := e.st.extentAt(m.ino, blk*BlockSize); !ext {
				in.Blocks++
			}
			p := e.allocPageLocked(m.ino, blk, pageClean, c == BlockSize)
			r = pageRef{Ino: m.ino, Blk: blk, Page: p}
			e.markDirtyLocked(r, lsn)
		}
		copy(e.pool.data(r.Page)[bo:], data[:c])
		e.pool.meta[r.Page].ver++
		data = data[c:]
		off += c
	}
	if end > in.Size {
		e.quotaSizeLocked(m.ino, in.Size, end)
		in.Size = end
	}
	if m.flags&writeKeepTimes == 0 {
		in.Mtime, in.Ctime = m.time, m.time
	}
	if m.flags&writeKillSuid != 0 {
		in.Mode = killSuid(in.Mode)
	}
	e.st.inodes.Set(in)
	e.changed.inos[m.ino] = struct{}{}
}

// killSuid clears setuid, and setgid when the group may execute (otherwise
// setgid means mandatory locking and stays), as the kernel does.
func killSuid(mode uint32) uint32 {
	mode &^= syscall.S_ISUID
	if mode&syscall.S_IXGRP != 0 {
		mode &^= syscall.S_ISGID
	}
	return mode
}

// zeroNeedsLocked says which block must be fetched before zeroing the
// partial block holding byte pos (nil if none).
func (e *Engine) zeroNeedsLocked(ino Ino, pos uint64) []uint64 {
	if pos%BlockSize == 0 {
		return nil
	}
	blk := pos / BlockSize
	if _, ok := e.pages.Get(pageRef{Ino: ino, Blk: blk}); ok {
		return nil
	}
	if _, ok := e.st.extentAt(ino, blk*BlockSize); ok {
		return []uint64{blk}
	}
	return nil
}

// zeroRangeInBlockLocked zeroes bytes [from, to) inside one block, making
// the block dirty. A block without data stays a hole.
func (e *Engine) zeroRangeInBlockLocked(ino Ino, blk, from, to uint64, lsn uint64) {
	r, ok := e.pages.Get(pageRef{Ino: ino, Blk: blk})
	if !ok {
		// Destaged data must have been fetched (zeroNeedsLocked); replay
		// fetches synchronously. No data: nothing to zero.
		return
	}
	e.markDirtyLocked(r, lsn)
	clear(e.pool.data(r.Page)[from:to])
	e.pool.meta[r.Page].ver++
}

// applyTruncateLocked sets the size, dropping data past it and zeroing the
// tail of the last block so that a later extension reads zeros.
func (e *Engine) applyTruncateLocked(ino Ino, size uint64, lsn uint64) {
	in, ok := e.st.inode(ino)
	if !ok {
		return
	}
	keep := (size + BlockSize - 1) / BlockSize // blocks [0, keep) stay
	in.Blocks -= e.dropDataLocked(ino, keep, ^uint64(0)/BlockSize)
	if size%BlockSize != 0 {
		e.zeroRangeInBlockLocked(ino, size/BlockSize, size%BlockSize, BlockSize, lsn)
	}
	e.quotaSizeLocked(ino, in.Size, size)
	in.Size = size
	e.st.inodes.Set(in)
	e.changed.inos[ino] = struct{}{}
}

// applyPunchLocked zeroes [off, off+n): whole blocks are dropped (holes),
// partial ones zeroed in place.
func (e *Engine) applyPunchLocked(ino Ino, off, n uint64, lsn uint64) {
	in, ok := e.st.inode(ino)
	if !ok || n == 0 {
		return
	}
	end := off + n
	if from, to := (off+BlockSize-1)/BlockSize, end/BlockSize; from < to {
		in.Blocks -= e.dropDataLocked(ino, from, to)
	}
	for _, b := range partialBlocks(off, end) {
		bs := b * BlockSize
		e.zeroRangeInBlockLocked(ino, b, max(off, bs)-bs, min(end, bs+BlockSize)-bs, lsn)
	}
	e.st.inodes.Set(in)
	e.changed.inos[ino] = struct{}{}
}

// partialBlocks lists the blocks that [off, end) covers only in part.
func partialBlocks(off, end uint64) []uint64 {
	if end <= off {
		return nil
	}
	var out []uint64
	fb, lb := off/BlockSize, (end-1)/BlockSize
	if off%BlockSize != 0 || end < (fb+1)*BlockSize {
		out = append(out, fb)
	}
	if lb != fb && end%BlockSize != 0 {
		out = append(out, lb)
	}
	return out
}

// dropDataLocked removes blocks [from, to) of ino from the cache and the
// extent map and returns how many blocks held data.
func (e *Engine) dropDataLocked(ino Ino, from, to uint64) uint64 {
	// Blocks with data = destaged blocks + cached blocks not destaged.
	var cachedOnly uint64
	e.pages.Ascend(pageRef{Ino: ino, Blk: from}, func(r pageRef) bool {
		if r.Ino != ino || r.Blk >= to {
			return false
		}
		if _, ok := e.st.extentAt(ino, r.Blk*BlockSize); !ok {
			cachedOnly++
		}
		return true
	})
	e.dropPagesLocked(ino, from, to)
	endByte := to * BlockSize
	if to > ^uint64(0)/BlockSize {
		endByte = ^uint64(0) &^ (BlockSize - 1)
	}
	destaged := e.st.punchExtents(ino, from*BlockSize, endByte)
	e.changed.inos[ino] = struct{}{}
	return destaged + cachedOnly
}

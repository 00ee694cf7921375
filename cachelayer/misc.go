package cachelayer

import (
	"context"

	"github.com/tidwall/btree"
)

// Xattr flags, as setxattr(2).
const (
	XattrCreate  = 1
	XattrReplace = 2
)

// MaxXattrName is the longest xattr name.
const MaxXattrName = 255

// xattrRecordRoom is the log room an xattr op needs besides the name and
// value: the encodings' overhead and the object's inode (a symlink's
// target is not in it: TestXattrRecordRoom).
const xattrRecordRoom = 1024

// GetXattr returns the value of attribute name.
func (e *Engine) GetXattr(ino Ino, name string) ([]byte, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if _, ok := e.st.inode(ino); !ok {
		return nil, ErrNotExist
	}
	x, ok := e.st.xattrs.Get(Xattr{Ino: ino, Name: name})
	if !ok {
		return nil, ErrNoAttr
	}
	return x.Value, nil
}

// ListXattr returns the attribute names of ino.
func (e *Engine) ListXattr(ino Ino) ([]string, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if _, ok := e.st.inode(ino); !ok {
		return nil, ErrNotExist
	}
	var names []string
	e.st.xattrsOf(ino, func(x Xattr) bool {
		names = append(names, x.Name)
		return true
	})
	return names, nil
}

// SetXattr sets attribute name (flags: XattrCreate, XattrReplace).
func (e *Engine) SetXattr(ctx context.Context, ino Ino, name string, value []byte, flags uint32) error {
	if name == "" || len(name) > MaxXattrName {
		return ErrRange
	}
	if len(value) > MaxXattrValue {
		return ErrTooBig
	}
	if flags&^(XattrCreate|XattrReplace) != 0 {
		return ErrInvalid
	}
	v := append([]byte(nil), value...)
	_, err := e.run(ctx, len(name)+len(v)+xattrRecordRoom, nil, func() (*txn, error) {
		b := e.newBuilder(OpSetxattr, ino)
		in, ok := b.get(ino)
		if !ok {
			return nil, ErrNotExist
		}
		_, exists := e.st.xattrs.Get(Xattr{Ino: ino, Name: name})
		if flags&XattrCreate != 0 && exists {
			return nil, ErrExist
		}
		if flags&XattrReplace != 0 && !exists {
			return nil, ErrNoAttr
		}
		b.t.add(mutation{kind: mPutXattr, ino: ino, name: name, value: v})
		in.Ctime = now()
		b.put(in)
		return b.txn(), nil
	})
	return err
}

// RemoveXattr removes attribute name.
func (e *Engine) RemoveXattr(ctx context.Context, ino Ino, name string) error {
	if name == "" || len(name) > MaxXattrName {
		return ErrRange
	}
	_, err := e.run(ctx, len(name)+xattrRecordRoom, nil, func() (*txn, error) {
		b := e.newBuilder(OpRemovexattr, ino)
		in, ok := b.get(ino)
		if !ok {
			return nil, ErrNotExist
		}
		if _, exists := e.st.xattrs.Get(Xattr{Ino: ino, Name: name}); !exists {
			return nil, ErrNoAttr
		}
		b.t.add(mutation{kind: mDelXattr, ino: ino, name: name})
		in.Ctime = now()
		b.put(in)
		return b.txn(), nil
	})
	return err
}

// Fallocate modes, as fallocate(2).
const (
	FallocKeepSize  = 0x01
	FallocPunchHole = 0x02
	FallocZeroRange = 0x10
)

// Fallocate reserves (a no-op beyond the size change: space is allocated
// at destage), punches holes or zeroes a range.
func (e *Engine) Fallocate(ctx context.Context, ino Ino, mode uint32, off, n uint64) error {
	if n == 0 || off+n < off {
		return ErrInvalid
	}
	if off+n > MaxFileSize {
		return ErrTooBig
	}
	if mode&^(FallocKeepSize|FallocPunchHole|FallocZeroRange) != 0 {
		return ErrNotSupp
	}
	punch := mode&FallocPunchHole != 0
	zero := mode&FallocZeroRange != 0
	if punch && (zero || mode&FallocKeepSize == 0) {
		return ErrNotSupp // PUNCH_HOLE must come with KEEP_SIZE, and alone
	}
	_, err := e.run(ctx, maxMetaPayload, nil, func() (*txn, error) {
		b := e.newBuilder(OpFallocate, ino)
		b.t.off, b.t.n = off, uint32(min(n, 1<<32-1))
		in, ok := b.get(ino)
		if !ok {
			return nil, ErrNotExist
		}
		if in.IsDir() {
			return nil, ErrIsDir
		}
		if !in.IsReg() {
			return nil, ErrInvalid
		}
		ts := now()
		if punch || zero {
			var fetch []uint64
			for _, blk := range partialBlocks(off, off+n) {
				fetch = append(fetch, e.zeroNeedsLocked(ino, blk*BlockSize+1)...)
			}
			if len(fetch) > 0 {
				return nil, &errNeedFetch{ino: ino, blks: fetch}
			}
			b.t.add(mutation{kind: mPunch, ino: ino, off: off, n: n})
			in.Mtime, in.Ctime = ts, ts
		}
		if mode&FallocKeepSize == 0 && off+n > in.Size {
			if err := e.quotaGrowLocked(ino, in.Size, off+n); err != nil {
				return nil, err
			}
			in.Size = off + n
			in.Mtime, in.Ctime = ts, ts
		}
		b.put(in)
		return b.txn(), nil
	})
	return err
}

// Whence values for Lseek.
const (
	SeekData = 3
	SeekHole = 4
)

// Lseek finds the next data (SeekData) or hole (SeekHole) at or after off.
func (e *Engine) Lseek(ino Ino, off uint64, whence int) (uint64, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	in, ok := e.st.inode(ino)
	if !ok {
		return 0, ErrNotExist
	}
	if off >= in.Size {
		return 0, ErrNoData
	}
	switch whence {
	case SeekData:
		blk, ok := e.nextDataLocked(ino, off/BlockSize)
		if !ok || blk*BlockSize >= in.Size {
			return 0, ErrNoData
		}
		return max(off, blk*BlockSize), nil
	case SeekHole:
		blk := e.nextHoleLocked(ino, off/BlockSize, (in.Size+BlockSize-1)/BlockSize)
		return min(max(off, blk*BlockSize), in.Size), nil
	}
	return 0, ErrInvalid
}

// nextDataLocked finds the first block >= from holding data.
func (e *Engine) nextDataLocked(ino Ino, from uint64) (uint64, bool) {
	if _, ok := e.st.extentAt(ino, from*BlockSize); ok {
		return from, true
	}
	best, found := uint64(0), false
	e.pages.Ascend(pageRef{Ino: ino, Blk: from}, func(r pageRef) bool {
		if r.Ino == ino {
			best, found = r.Blk, true
		}
		return false
	})
	e.st.extents.Ascend(Extent{Ino: ino, Off: from * BlockSize}, func(x Extent) bool {
		if x.Ino == ino && (!found || x.Off/BlockSize < best) {
			best, found = x.Off/BlockSize, true
		}
		return false
	})
	return best, found
}

// nextHoleLocked finds the first block >= from without data (or limit).
func (e *Engine) nextHoleLocked(ino Ino, from, limit uint64) uint64 {
	b := from
	for b < limit {
		if x, ok := e.st.extentAt(ino, b*BlockSize); ok {
			b = x.End() / BlockSize
			continue
		}
		if _, ok := e.pages.Get(pageRef{Ino: ino, Blk: b}); ok {
			b++
			continue
		}
		return b
	}
	return limit
}

// DirEntry is one entry of a directory listing.
type DirEntry struct {
	Name string
	Ino  Ino
	Type uint32 // file type bits
}

// DirHandle is an open directory: a consistent view of its entries taken at
// open (or rewind), read in pieces. Offsets: 1 is ".", 2 is "..", 3+i is
// the i-th entry of the view.
type DirHandle struct {
	e      *Engine
	ino    Ino
	parent Ino
	view   *btree.BTreeG[Dirent]
	// cursor: the entry at offset curOff is curName (a sequential reader
	// resumes in O(log n)).
	curOff  uint64
	curName string
}

// OpenDir opens directory ino for reading.
func (e *Engine) OpenDir(ino Ino) (*DirHandle, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	in, ok := e.st.inode(ino)
	if !ok {
		return nil, ErrNotExist
	}
	if !in.IsDir() {
		return nil, ErrNotDir
	}
	return &DirHandle{e: e, ino: ino, parent: in.Parent, view: e.st.dirents.Copy()}, nil
}

// Rewind refreshes the view (rewinddir).
func (d *DirHandle) Rewind() {
	d.e.mu.Lock()
	d.view = d.e.st.dirents.Copy()
	if in, ok := d.e.st.inode(d.ino); ok {
		d.parent = in.Parent
	}
	d.e.mu.Unlock()
	d.curOff, d.curName = 0, ""
}

// Read calls fn with the entries from offset off on, each with the offset
// of the entry after it, until fn returns false. The caller serializes
// calls on one handle.
func (d *DirHandle) Read(off uint64, fn func(ent DirEntry, next uint64) bool) {
	if off == 0 {
		if !fn(DirEntry{Name: ".", Ino: d.ino, Type: dirType}, 1) {
			return
		}
		off = 1
	}
	if off == 1 {
		p := d.parent
		if p == 0 {
			p = d.ino
		}
		if !fn(DirEntry{Name: "..", Ino: p, Type: dirType}, 2) {
			return
		}
		off = 2
	}
	// Entries: offset 3+i is the i-th. Find the pivot for the entry at off+1.
	idx := off - 2 // number of entries already returned
	pivot := Dirent{Parent: d.ino}
	skip := idx
	exclusive := false
	if d.curName != "" && d.curOff == off {
		pivot.Name = d.curName
		skip = 0
		exclusive = true
	}
	pos := off
	d.view.Ascend(pivot, func(de Dirent) bool {
		if de.Parent != d.ino {
			return false
		}
		if exclusive && de.Name == pivot.Name {
			return true
		}
		if skip > 0 {
			skip--
			return true
		}
		pos++
		if !fn(DirEntry{Name: de.Name, Ino: de.Ino, Type: de.Type}, pos) {
			return false
		}
		d.curOff, d.curName = pos, de.Name
		return true
	})
}

const dirType = 0o040000

// FSInfo is what statfs reports.
type FSInfo struct {
	Total, Free, Avail uint64 // bytes of the backend's filesystem
	Objects            uint64
	BlockSize          uint32
	NameLen            uint32
	// Files and FreeFiles limit the objects (a quota's, StatFSAt); 0 Files
	// is no limit.
	Files, FreeFiles uint64
}

// StatFS reports the backend's capacity and the object count.
func (e *Engine) StatFS() (FSInfo, error) {
	total, free, avail, err := e.be.StatFS()
	if err != nil {
		return FSInfo{}, err
	}
	e.mu.Lock()
	n := uint64(e.st.inodes.Len())
	dirty := uint64(e.pool.nDirty) * BlockSize
	e.mu.Unlock()
	// Dirty bytes are promised to the backend already.
	free -= min(free, dirty)
	avail -= min(avail, dirty)
	return FSInfo{Total: total, Free: free, Avail: avail, Objects: n, BlockSize: BlockSize, NameLen: MaxNameLen}, nil
}

package cachelayer

import (
	"github.com/tidwall/btree"
)

// meta is the persistent metadata: what checkpoints hold. A value of meta
// is a set of tree handles; copy() is O(1) (copy-on-write) and gives a
// consistent cut that can be read without the engine lock while the live
// trees change.
type meta struct {
	inodes   *btree.BTreeG[Inode]
	dirents  *btree.BTreeG[Dirent]
	xattrs   *btree.BTreeG[Xattr]
	extents  *btree.BTreeG[Extent]
	symlinks *btree.BTreeG[Symlink]
	nextIno  Ino
	// usage, when set, is kept up to date with every extent change made
	// through the methods below. Only the live state has one; copy()
	// leaves it nil, so a cut never counts twice.
	usage *segUsage
}

var treeOpts = btree.Options{NoLocks: true}

func newMeta() meta {
	return meta{
		inodes:   btree.NewBTreeGOptions(inodeLess, treeOpts),
		dirents:  btree.NewBTreeGOptions(direntLess, treeOpts),
		xattrs:   btree.NewBTreeGOptions(xattrLess, treeOpts),
		extents:  btree.NewBTreeGOptions(extentLess, treeOpts),
		symlinks: btree.NewBTreeGOptions(symlinkLess, treeOpts),
		nextIno:  RootIno + 1,
	}
}

func (m *meta) copy() meta {
	return meta{
		inodes:   m.inodes.Copy(),
		dirents:  m.dirents.Copy(),
		xattrs:   m.xattrs.Copy(),
		extents:  m.extents.Copy(),
		symlinks: m.symlinks.Copy(),
		nextIno:  m.nextIno,
	}
}

func (m *meta) inode(ino Ino) (Inode, bool) { return m.inodes.Get(Inode{Ino: ino}) }

func (m *meta) lookup(parent Ino, name string) (Dirent, bool) {
	return m.dirents.Get(Dirent{Parent: parent, Name: name})
}

// putInode stores in; the ino allocator never hands out a number in use.
func (m *meta) putInode(in Inode) {
	m.inodes.Set(in)
	if in.Ino >= m.nextIno {
		m.nextIno = in.Ino + 1
	}
}

// dirEmpty reports whether directory ino has no entries.
func (m *meta) dirEmpty(ino Ino) bool {
	empty := true
	m.dirents.Ascend(Dirent{Parent: ino}, func(d Dirent) bool {
		empty = d.Parent != ino
		return false
	})
	return empty
}

// xattrsOf calls fn for each xattr of ino in name order.
func (m *meta) xattrsOf(ino Ino, fn func(Xattr) bool) {
	m.xattrs.Ascend(Xattr{Ino: ino}, func(x Xattr) bool {
		if x.Ino != ino {
			return false
		}
		return fn(x)
	})
}

// extentAt returns the extent covering byte pos of ino.
func (m *meta) extentAt(ino Ino, pos uint64) (Extent, bool) {
	var found Extent
	ok := false
	m.extents.Descend(Extent{Ino: ino, Off: pos}, func(x Extent) bool {
		if x.Ino == ino && x.Off <= pos && pos < x.End() {
			found, ok = x, true
		}
		return false
	})
	return found, ok
}

// extentsIn calls fn for each extent of ino overlapping [off, end), in order.
func (m *meta) extentsIn(ino Ino, off, end uint64, fn func(Extent) bool) {
	start := off
	if x, ok := m.extentAt(ino, off); ok {
		start = x.Off
	}
	m.extents.Ascend(Extent{Ino: ino, Off: start}, func(x Extent) bool {
		if x.Ino != ino || x.Off >= end {
			return false
		}
		if x.End() <= off {
			return true
		}
		return fn(x)
	})
}

// punchExtents removes [off, end) of ino from the extent map, splitting
// extents that straddle the edges. It returns the number of blocks removed.
// off and end are block aligned.
func (m *meta) punchExtents(ino Ino, off, end uint64) (blocks uint64) {
	var over []Extent
	m.extentsIn(ino, off, end, func(x Extent) bool {
		over = append(over, x)
		return true
	})
	for _, x := range over {
		m.extents.Delete(x)
		m.usage.sub(x)
		lo, hi := max(x.Off, off), min(x.End(), end)
		blocks += (hi - lo) / BlockSize
		if x.Off < off {
			head := x
			head.Len = uint32(off - x.Off)
			m.extents.Set(head)
			m.usage.add(head)
		}
		if x.End() > end {
			tail := x
			tail.Off = end
			tail.Skip = x.Skip + uint32(end-x.Off)
			tail.Len = uint32(x.End() - end)
			m.extents.Set(tail)
			m.usage.add(tail)
		}
	}
	return blocks
}

// setExtent maps x's range to x's record, replacing what was there. It
// returns how many blocks of the range had no extent before.
func (m *meta) setExtent(x Extent) (newBlocks uint64) {
	covered := m.punchExtents(x.Ino, x.Off, x.End())
	m.extents.Set(x)
	m.usage.add(x)
	return uint64(x.Len)/BlockSize - covered
}

// dropObject removes every xattr, extent and symlink target of ino.
func (m *meta) dropObject(ino Ino) {
	m.symlinks.Delete(Symlink{Ino: ino})
	var xs []Xattr
	m.xattrsOf(ino, func(x Xattr) bool { xs = append(xs, x); return true })
	for _, x := range xs {
		m.xattrs.Delete(x)
	}
	var es []Extent
	m.extents.Ascend(Extent{Ino: ino}, func(x Extent) bool {
		if x.Ino != ino {
			return false
		}
		es = append(es, x)
		return true
	})
	for _, x := range es {
		m.extents.Delete(x)
		m.usage.sub(x)
	}
}

// extentBlocks counts the blocks of ino covered by extents.
func (m *meta) extentBlocks(ino Ino) uint64 {
	var n uint64
	m.extents.Ascend(Extent{Ino: ino}, func(x Extent) bool {
		if x.Ino != ino {
			return false
		}
		n += uint64(x.Len) / BlockSize
		return true
	})
	return n
}

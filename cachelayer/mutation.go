package cachelayer

import (
	"encoding/binary"
	"fmt"
)

// OpType is the kind of user op a log record holds (the record header's
// type). It is informative (statistics, debugging); replay acts on the
// mutations in the payload.
type OpType uint8

// Op types. Part of the log format: never renumber.
const (
	OpWrite OpType = 1 + iota
	OpCreate
	OpMkdir
	OpMknod
	OpSymlink
	OpLink
	OpUnlink
	OpRmdir
	OpRename
	OpSetattr
	OpSetxattr
	OpRemovexattr
	OpFallocate
	OpFree // an unlinked object's last reference went away
)

var opNames = [...]string{"", "write", "create", "mkdir", "mknod", "symlink", "link", "unlink", "rmdir", "rename", "setattr", "setxattr", "removexattr", "fallocate", "free"}

func (t OpType) String() string {
	if int(t) < len(opNames) && t != 0 {
		return opNames[t]
	}
	return fmt.Sprintf("op(%d)", t)
}

// mutKind is one physical change to the state. Part of the log and
// checkpoint-delta format: never renumber.
type mutKind uint8

const (
	mPutInode  mutKind = 1  // inode: replace (or insert) the object's attributes
	mDelInode  mutKind = 2  // ino: remove the object, its xattrs, extents and pages
	mPutDirent mutKind = 3  // dirent
	mDelDirent mutKind = 4  // dirent.Parent, dirent.Name
	mPutXattr  mutKind = 5  // ino, name, value
	mDelXattr  mutKind = 6  // ino, name
	mWrite     mutKind = 7  // ino, off, data, time; size = max(size, end); mtime = ctime = time unless writeKeepTimes
	mTruncate  mutKind = 8  // ino, off = new size: drop data past it, zero the tail of the last block
	mPunch     mutKind = 9  // ino, off, n: zero the range (whole blocks are dropped)
	mSymlink   mutKind = 10 // ino, name = target: a symlink's target
)

// Write flags (the record header's flags for OpWrite).
const (
	writeKillSuid  uint8 = 1 // clear setuid, and setgid if group-executable
	writeKeepTimes uint8 = 2 // leave mtime and ctime (the kernel sets them)
)

// mutation is one physical change. Which fields matter depends on kind.
type mutation struct {
	kind   mutKind
	flags  uint8
	inode  Inode
	dirent Dirent
	ino    Ino
	name   string
	value  []byte
	off    uint64
	n      uint64
	time   Time
}

// txn is the mutations of one op, applied in order, logged as one record.
type txn struct {
	op    OpType
	obj   Ino
	off   uint64
	n     uint32
	flags uint8
	muts  []mutation
	refs  []Ino // references the op takes once committed (not logged)
}

func (t *txn) add(m mutation) { t.muts = append(t.muts, m) }

func (t *txn) putInode(in Inode) { t.add(mutation{kind: mPutInode, inode: in}) }

func (t *txn) putDirent(d Dirent) { t.add(mutation{kind: mPutDirent, dirent: d}) }

func (t *txn) delDirent(parent Ino, name string) {
	t.add(mutation{kind: mDelDirent, dirent: Dirent{Parent: parent, Name: name}})
}

// appendMutation encodes m. The encoding is part of the log format.
func appendMutation(b []byte, m *mutation) []byte {
	b = append(b, byte(m.kind))
	switch m.kind {
	case mPutInode:
		b = appendInode(b, &m.inode)
	case mDelInode:
		b = binary.AppendUvarint(b, uint64(m.ino))
	case mPutDirent:
		b = binary.AppendUvarint(b, uint64(m.dirent.Parent))
		b = appendString(b, m.dirent.Name)
		b = binary.AppendUvarint(b, uint64(m.dirent.Ino))
		b = binary.AppendUvarint(b, uint64(m.dirent.Type))
	case mDelDirent:
		b = binary.AppendUvarint(b, uint64(m.dirent.Parent))
		b = appendString(b, m.dirent.Name)
	case mPutXattr:
		b = binary.AppendUvarint(b, uint64(m.ino))
		b = appendString(b, m.name)
		b = appendBytes(b, m.value)
	case mDelXattr, mSymlink:
		b = binary.AppendUvarint(b, uint64(m.ino))
		b = appendString(b, m.name)
	case mWrite:
		b = append(b, m.flags)
		b = binary.AppendUvarint(b, uint64(m.ino))
		b = binary.AppendUvarint(b, m.off)
		b = appendTime(b, m.time)
		b = appendBytes(b, m.value)
	case mTruncate:
		b = binary.AppendUvarint(b, uint64(m.ino))
		b = binary.AppendUvarint(b, m.off)
	case mPunch:
		b = binary.AppendUvarint(b, uint64(m.ino))
		b = binary.AppendUvarint(b, m.off)
		b = binary.AppendUvarint(b, m.n)
	default:
		panic(fmt.Sprintf("cachelayer: encode mutation kind %d", m.kind))
	}
	return b
}

// decodeMutations parses a payload produced by appending mutations. Byte
// slices in the result alias p.
func decodeMutations(p []byte) ([]mutation, error) {
	var out []mutation
	d := decoder{b: p}
	for len(d.b) > 0 && d.err == nil {
		var m mutation
		m.kind = mutKind(d.byte())
		switch m.kind {
		case mPutInode:
			m.inode = d.inode()
		case mDelInode:
			m.ino = Ino(d.uvarint())
		case mPutDirent:
			m.dirent.Parent = Ino(d.uvarint())
			m.dirent.Name = d.string()
			m.dirent.Ino = Ino(d.uvarint())
			m.dirent.Type = uint32(d.uvarint())
		case mDelDirent:
			m.dirent.Parent = Ino(d.uvarint())
			m.dirent.Name = d.string()
		case mPutXattr:
			m.ino = Ino(d.uvarint())
			m.name = d.string()
			m.value = d.bytes()
		case mDelXattr, mSymlink:
			m.ino = Ino(d.uvarint())
			m.name = d.string()
		case mWrite:
			m.flags = d.byte()
			m.ino = Ino(d.uvarint())
			m.off = d.uvarint()
			m.time = d.time()
			m.value = d.bytes()
		case mTruncate:
			m.ino = Ino(d.uvarint())
			m.off = d.uvarint()
		case mPunch:
			m.ino = Ino(d.uvarint())
			m.off = d.uvarint()
			m.n = d.uvarint()
		default:
			return nil, fmt.Errorf("cachelayer: unknown mutation kind %d", m.kind)
		}
		out = append(out, m)
	}
	if d.err != nil {
		return nil, d.err
	}
	return out, nil
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendBytes(b []byte, p []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(p)))
	return append(b, p...)
}

func appendTime(b []byte, t Time) []byte {
	b = binary.AppendVarint(b, t.Sec())
	return binary.AppendUvarint(b, uint64(t.Nsec()))
}

func appendInode(b []byte, in *Inode) []byte {
	b = binary.AppendUvarint(b, uint64(in.Ino))
	b = binary.AppendUvarint(b, uint64(in.Parent))
	b = binary.AppendUvarint(b, uint64(in.Mode))
	b = binary.AppendUvarint(b, uint64(in.Nlink))
	b = binary.AppendUvarint(b, uint64(in.Uid))
	b = binary.AppendUvarint(b, uint64(in.Gid))
	b = binary.AppendUvarint(b, uint64(in.Rdev))
	b = binary.AppendUvarint(b, in.Size)
	b = appendTime(b, in.Atime)
	b = appendTime(b, in.Mtime)
	return appendTime(b, in.Ctime)
}

// decoder reads the encodings above; the first error sticks.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail() {
	if d.err == nil {
		d.err = fmt.Errorf("cachelayer: truncated or malformed encoding")
	}
	d.b = nil
}

func (d *decoder) byte() byte {
	if len(d.b) < 1 {
		d.fail()
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

func (d *decoder) uvarint() uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint() int64 {
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) bytes() []byte {
	n := d.uvarint()
	if n > uint64(len(d.b)) {
		d.fail()
		return nil
	}
	v := d.b[:n:n]
	d.b = d.b[n:]
	return v
}

func (d *decoder) string() string { return string(d.bytes()) }

func (d *decoder) time() Time {
	s := d.varint()
	ns := d.uvarint()
	if ns >= 1e9 {
		d.fail()
	}
	return MakeTime(s, uint32(ns))
}

func (d *decoder) inode() Inode {
	var in Inode
	in.Ino = Ino(d.uvarint())
	in.Parent = Ino(d.uvarint())
	in.Mode = uint32(d.uvarint())
	in.Nlink = uint32(d.uvarint())
	in.Uid = uint32(d.uvarint())
	in.Gid = uint32(d.uvarint())
	in.Rdev = uint32(d.uvarint())
	in.Size = d.uvarint()
	in.Atime = d.time()
	in.Mtime = d.time()
	in.Ctime = d.time()
	return in
}

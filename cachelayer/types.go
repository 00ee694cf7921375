package cachelayer

import (
	"strings"
	"syscall"
	"time"

	"github.com/dcache/dcache/backend"
)

// Ino is a user object's id; it doubles as the inode number users see.
// Numbers are never reused within one filesystem.
type Ino uint64

// RootIno is the root directory's id.
const RootIno Ino = 1

// BlockSize is the unit of caching, dirty tracking and extent alignment.
const BlockSize = 4096

// MaxRecord is the largest run of one object's bytes destaged as one backend
// record (and so read back and checksum-verified as one unit).
const MaxRecord = 64 << 10

// MaxNameLen is the longest directory entry name, in bytes.
const MaxNameLen = 255

// MaxSymlinkLen is the longest symlink target.
const MaxSymlinkLen = 4095

// MaxXattrValue is the largest extended attribute value (as Linux).
const MaxXattrValue = 64 << 10

// MaxFileSize is the largest file size accepted (EFBIG beyond).
const MaxFileSize = 1 << 50

// Time is a timestamp with nanosecond precision and the full range of
// stat(2)'s 64-bit seconds. It is 12 bytes with 4-byte alignment, so an
// inode's three times take 36 bytes rather than 48 (every inode is kept in
// memory).
type Time struct {
	secLo, secHi uint32
	nsec         uint32
}

// MakeTime builds a Time from seconds and nanoseconds (< 1e9).
func MakeTime(sec int64, nsec uint32) Time {
	return Time{secLo: uint32(uint64(sec)), secHi: uint32(uint64(sec) >> 32), nsec: nsec}
}

// TimeOf converts a time.Time.
func TimeOf(t time.Time) Time { return MakeTime(t.Unix(), uint32(t.Nanosecond())) }

// Sec is the seconds since the epoch.
func (t Time) Sec() int64 { return int64(uint64(t.secHi)<<32 | uint64(t.secLo)) }

// Nsec is the nanoseconds within the second.
func (t Time) Nsec() uint32 { return t.nsec }

// Std converts to time.Time.
func (t Time) Std() time.Time { return time.Unix(t.Sec(), int64(t.nsec)) }

// Inode is one user object's attributes. It is stored by value in the inode
// tree; change it by replacing the item. Every object's inode stays in
// memory, so the layout is packed (88 bytes); a symlink's target lives in
// its own tree.
type Inode struct {
	Ino    Ino
	Parent Ino    // directories: the directory holding it (the root: itself)
	Size   uint64 // bytes; a symlink's is its target's length
	Blocks uint64 // blocks holding data (cached or destaged); derived, recomputed on load
	Mode   uint32 // file type and permission bits, as st_mode
	Nlink  uint32
	Uid    uint32
	Gid    uint32
	Rdev   uint32
	Atime  Time
	Mtime  Time
	Ctime  Time
}

// Symlink is a symlink's target.
type Symlink struct {
	Ino    Ino
	Target string
}

// IsDir reports whether the object is a directory.
func (in *Inode) IsDir() bool { return in.Mode&syscall.S_IFMT == syscall.S_IFDIR }

// IsReg reports whether the object is a regular file.
func (in *Inode) IsReg() bool { return in.Mode&syscall.S_IFMT == syscall.S_IFREG }

// IsSymlink reports whether the object is a symlink.
func (in *Inode) IsSymlink() bool { return in.Mode&syscall.S_IFMT == syscall.S_IFLNK }

// Dirent is one directory entry.
type Dirent struct {
	Parent Ino
	Name   string
	Ino    Ino
	Type   uint32 // file type bits of the target (Mode & S_IFMT)
}

// Xattr is one extended attribute. Value is never modified in place.
type Xattr struct {
	Ino   Ino
	Name  string
	Value []byte
}

// Extent maps Len bytes of an object starting at file offset Off (both
// multiples of BlockSize) to bytes of a backend record: the extent's first
// byte is at Skip within the record at Addr. Splitting an extent keeps Addr,
// so a read always verifies the whole record's checksum.
type Extent struct {
	Ino  Ino
	Off  uint64
	Len  uint32
	Skip uint32
	Addr backend.Addr
}

// End is the file offset just past the extent.
func (x Extent) End() uint64 { return x.Off + uint64(x.Len) }

// pageRef is the page index's item: which pool page caches block Blk of Ino.
type pageRef struct {
	Ino   Ino
	Blk   uint64
	Page  uint32
	Dirty bool
}

// mixIno spreads object ids over the key space (a bijection: splitmix64's
// finalizer). The trees keyed by object order by it, because new ids come
// in ascending order and ascending inserts leave every B-tree node half
// full, while spread inserts fill them to about 70%; nothing needs the
// objects of those trees in id order.
func mixIno(i Ino) uint64 {
	x := uint64(i)
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

func inodeLess(a, b Inode) bool { return mixIno(a.Ino) < mixIno(b.Ino) }

func symlinkLess(a, b Symlink) bool { return mixIno(a.Ino) < mixIno(b.Ino) }

func direntLess(a, b Dirent) bool {
	if a.Parent != b.Parent {
		return a.Parent < b.Parent
	}
	return a.Name < b.Name
}

func xattrLess(a, b Xattr) bool {
	if a.Ino != b.Ino {
		return a.Ino < b.Ino
	}
	return a.Name < b.Name
}

func extentLess(a, b Extent) bool {
	if a.Ino != b.Ino {
		return mixIno(a.Ino) < mixIno(b.Ino)
	}
	return a.Off < b.Off
}

func pageRefLess(a, b pageRef) bool {
	if a.Ino != b.Ino {
		return mixIno(a.Ino) < mixIno(b.Ino)
	}
	return a.Blk < b.Blk
}

// validName checks a directory entry name.
func validName(name string) error {
	if name == "" || name == "." || name == ".." || strings.IndexByte(name, '/') >= 0 || strings.IndexByte(name, 0) >= 0 {
		return ErrInvalid
	}
	if len(name) > MaxNameLen {
		return ErrNameTooLong
	}
	return nil
}

// Attr is what the filesystem layer reports for an object.
type Attr struct {
	Inode
}

// Caller identifies who asks for an op (for ownership of new objects).
type Caller struct {
	Uid, Gid uint32
	Pid      uint32
	// Groups are the supplementary groups, where the filesystem layer
	// needed to find them (a setgid file created in a setgid directory).
	Groups []uint32
}

// inGroup reports whether the caller is a member of group gid.
func (c *Caller) inGroup(gid uint32) bool {
	if c.Gid == gid {
		return true
	}
	for _, g := range c.Groups {
		if g == gid {
			return true
		}
	}
	return false
}

// WriteOpts qualify a write.
type WriteOpts struct {
	// KillSuidGid clears setuid, and setgid when group-executable (a write
	// by someone without CAP_FSETID).
	KillSuidGid bool
	// Sync makes the write durable before it returns (O_SYNC, O_DSYNC).
	Sync bool
	// KeepTimes leaves mtime and ctime alone: the caller keeps them and
	// sets them itself. The kernel does so for FUSE's write-back cache: it
	// stamps the times when the application writes and sends them with a
	// setattr later, while the data may reach the engine much later, or
	// after a time update the kernel skipped because the clock had not
	// ticked; stamping the write's arrival then would leave the engine
	// with times the kernel never showed.
	KeepTimes bool
}

// SetAttr says which attributes to change; nil fields are left alone.
type SetAttr struct {
	Mode        *uint32 // permission bits (file type bits ignored)
	Uid, Gid    *uint32
	Size        *uint64
	Atime       *Time
	Mtime       *Time
	Ctime       *Time // explicit ctime (kernel writeback of times); otherwise ctime = now
	KillSuidGid bool  // clear setuid/setgid (truncate by a non-owner)
}

package backend

import (
	"errors"
	"fmt"
	iofs "io/fs"
	"os"
	"path/filepath"
	"syscall"

	"github.com/sirupsen/logrus"
)

// segSpace is where segments live: numbered files in DIR/segments, or slots
// at fixed offsets of a device. The Store does all segment I/O through it.
// Calls that change the set of segments (create, remove, syncNames) come
// with Store.mu held; open may be called concurrently with them.
type segSpace interface {
	// create makes a new, empty segment num for writing. It fails if num exists.
	create(num uint64) (File, error)
	// open returns segment num for reading. A missing segment is an error
	// wrapping iofs.ErrNotExist.
	open(num uint64) (File, error)
	// remove deletes segment num. After a successful remove and syncNames
	// the segment does not come back after a crash.
	remove(num uint64) error
	// syncNames makes creations and removals durable.
	syncNames() error
	// list returns every segment and its length (header and records).
	list() (map[uint64]int64, error)
	// path names segment num in messages.
	path(num uint64) string
	statFS() (FSStat, error)
}

// dirSpace keeps segments as files in DIR/segments.
type dirSpace struct {
	fsys FS
	dir  string // DIR/segments
	log  *logrus.Entry
	// direct, when set and true, opens new segments for direct I/O; it
	// turns false for good when the filesystem refuses it.
	direct *bool
}

var _ segSpace = dirSpace{}

func (d dirSpace) path(num uint64) string { return filepath.Join(d.dir, segmentName(num)) }

// create makes segment num. With direct I/O, segments are written past the
// page cache: a segment's data is in the DRAM cache already, goes to the
// backend once, in large aligned writes (the write buffer), and is read
// again only after eviction; copying it into the page cache as well costs
// a copy and memory the cache could use, and makes the next sync write
// it all at once.
func (d dirSpace) create(num uint64) (File, error) {
	if d.direct == nil || !*d.direct {
		return d.fsys.Create(d.path(num))
	}
	f, err := d.fsys.OpenFile(d.path(num), os.O_RDWR|os.O_CREATE|os.O_EXCL|syscall.O_DIRECT, 0o644)
	if !errors.Is(err, syscall.EINVAL) {
		return f, err
	}
	// The filesystem does not do direct I/O (tmpfs before Linux 6.6, some
	// FUSE filesystems). Linux checks O_DIRECT after creating the file, so
	// an empty file may be left: it goes before the buffered create.
	*d.direct = false
	d.log.WithError(err).Warn("the backend's filesystem refuses direct I/O; writing segments through the page cache")
	if rerr := d.fsys.Remove(d.path(num)); rerr != nil && !errors.Is(rerr, iofs.ErrNotExist) {
		return nil, rerr
	}
	return d.fsys.Create(d.path(num))
}

func (d dirSpace) open(num uint64) (File, error) { return d.fsys.OpenFile(d.path(num), os.O_RDONLY, 0) }

func (d dirSpace) remove(num uint64) error { return d.fsys.Remove(d.path(num)) }

func (d dirSpace) syncNames() error { return d.fsys.SyncDir(d.dir) }

func (d dirSpace) statFS() (FSStat, error) { return d.fsys.StatFS(d.dir) }

func (d dirSpace) list() (map[uint64]int64, error) {
	ents, err := d.fsys.ReadDir(d.dir)
	if err != nil {
		return nil, fmt.Errorf("backend: list segments: %w", err)
	}
	out := make(map[uint64]int64, len(ents))
	for _, e := range ents {
		num, ok := parseSegmentName(e.Name())
		if !ok || !e.Type().IsRegular() {
			d.log.WithField("name", e.Name()).Warn("ignoring unknown entry in segments directory")
			continue
		}
		info, err := e.Info()
		if err != nil {
			return nil, fmt.Errorf("backend: stat segment %d: %w", num, err)
		}
		out[num] = info.Size()
	}
	return out, nil
}

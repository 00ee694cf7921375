package cachelayer

import (
	"context"
	"fmt"
	"path"
	"slices"
	"syscall"
	"time"

	"github.com/dcache/dcache/logarea"
)

// objLog is what the engine remembers of one object for .dcache/objects:
// the LSN range of the log records about it that the log still holds, and
// the destage rounds that took its data since it last had none in the log.
// Kept in Engine.objLogs under Engine.mu; an entry goes when the log is
// trimmed past its last record.
type objLog struct {
	first, last uint64 // LSNs; first may be a lower bound after a trim
	attempts    int32  // destage rounds that took some of its dirty pages
	lastErr     string // the last failed round's error
}

// noteLogLocked records that the op logged at lsn is about ino.
func (e *Engine) noteLogLocked(ino Ino, lsn uint64) {
	if !trackObjects {
		return
	}
	// Ops come in runs on one object (a file being written): the entry
	// of the last one is kept at hand, sparing the map lookup.
	if o := e.lastObjLog; o != nil && e.lastObjIno == ino {
		o.last = lsn
		return
	}
	o, ok := e.objLogs[ino]
	if !ok {
		o = &objLog{first: lsn}
		e.objLogs[ino] = o
	}
	o.last = lsn
	e.lastObjIno, e.lastObjLog = ino, o
}

// noteAttemptLocked counts a destage round taking the dirty pages of the
// objects in picks (sorted by object).
func (e *Engine) noteAttemptLocked(picks []blockKey) {
	for i, k := range picks {
		if i > 0 && picks[i-1].ino == k.ino {
			continue
		}
		if o, ok := e.objLogs[k.ino]; ok {
			o.attempts++
		}
	}
}

// noteFailureLocked records a failed round's error on the objects it took.
func (e *Engine) noteFailureLocked(picks []blockKey, err error) {
	for i, k := range picks {
		if i > 0 && picks[i-1].ino == k.ino {
			continue
		}
		if o, ok := e.objLogs[k.ino]; ok {
			o.lastErr = err.Error()
		}
	}
}

// noteTrimLocked forgets the records up to lsn, which the log dropped.
func (e *Engine) noteTrimLocked(lsn uint64) {
	for ino, o := range e.objLogs {
		if o.last <= lsn {
			delete(e.objLogs, ino)
			if o == e.lastObjLog {
				e.lastObjLog = nil
			}
			continue
		}
		if o.first <= lsn {
			o.first = lsn + 1
		}
	}
}

// DestageProgress is the state of the destage round running now.
type DestageProgress struct {
	Running     bool
	QueuedBytes int64 // bytes the round copies out
	DoneBytes   int64 // of which already appended to the backend
	Started     time.Time
}

// Progress reports the running destage round.
func (e *Engine) Progress() DestageProgress {
	st := e.roundStart.Load()
	p := DestageProgress{Running: st != 0, QueuedBytes: e.roundTotal.Load(), DoneBytes: e.roundDone.Load()}
	if st != 0 {
		p.Started = time.Unix(0, st)
	}
	return p
}

// CachedRun is a run of cached blocks of one object in one state.
type CachedRun struct {
	Off, Len uint64
	Dirty    bool
	// MinLSN is the oldest LSN that made a block of the run dirty.
	MinLSN uint64
}

// ObjectInfo is one object's state, for .dcache/objects/INO.
type ObjectInfo struct {
	Inode
	Paths      []string // names from the root, at most maxPaths
	DirtyBytes int64
	CleanBytes int64
	Cached     []CachedRun // cached blocks, by offset
	Extents    []Extent    // blocks in backend segments, by offset
	// Truncated says Cached or Extents were cut at maxRuns entries.
	Truncated bool
	// LogFirst..LogLast is the LSN range of the log records about the
	// object that the log still holds; 0, 0 when there are none.
	LogFirst, LogLast uint64
	DestageAttempts   int
	LastError         string
}

const (
	maxPaths = 16
	maxRuns  = 4096
)

// ObjectInfo reports the state of object ino.
func (e *Engine) ObjectInfo(ino Ino) (ObjectInfo, error) {
	e.mu.Lock()
	in, ok := e.st.inode(ino)
	if !ok {
		e.mu.Unlock()
		return ObjectInfo{}, ErrNotExist
	}
	oi := ObjectInfo{Inode: in}
	e.pages.Ascend(pageRef{Ino: ino}, func(r pageRef) bool {
		if r.Ino != ino {
			return false
		}
		m := &e.pool.meta[r.Page]
		if r.Dirty {
			oi.DirtyBytes += BlockSize
		} else {
			oi.CleanBytes += BlockSize
		}
		off := r.Blk * BlockSize
		if n := len(oi.Cached); n > 0 && oi.Cached[n-1].Dirty == r.Dirty && oi.Cached[n-1].Off+oi.Cached[n-1].Len == off {
			c := &oi.Cached[n-1]
			c.Len += BlockSize
			if r.Dirty && m.dirtyLSN < c.MinLSN {
				c.MinLSN = m.dirtyLSN
			}
			return true
		}
		if len(oi.Cached) == maxRuns {
			oi.Truncated = true
			return false
		}
		c := CachedRun{Off: off, Len: BlockSize, Dirty: r.Dirty}
		if r.Dirty {
			c.MinLSN = m.dirtyLSN
		}
		oi.Cached = append(oi.Cached, c)
		return true
	})
	e.st.extents.Ascend(Extent{Ino: ino}, func(x Extent) bool {
		if x.Ino != ino {
			return false
		}
		if len(oi.Extents) == maxRuns {
			oi.Truncated = true
			return false
		}
		oi.Extents = append(oi.Extents, x)
		return true
	})
	if o, ok := e.objLogs[ino]; ok {
		oi.LogFirst, oi.LogLast = o.first, o.last
		oi.DestageAttempts, oi.LastError = int(o.attempts), o.lastErr
	}
	cut := e.st.copy()
	e.mu.Unlock()
	oi.Paths = cut.pathsOf(in)
	return oi, nil
}

// pathsOf finds up to maxPaths names of in from the root. Files keep no
// link back to their directories, so this scans the directory entries:
// fine for an inspection file, not for a hot path. m is a cut, read
// without the engine lock.
func (m *meta) pathsOf(in Inode) []string {
	if in.Ino == RootIno {
		return []string{"/"}
	}
	if in.IsDir() {
		if p, ok := m.dirPath(in.Ino); ok {
			return []string{p}
		}
		return nil
	}
	var out []string
	m.dirents.Scan(func(d Dirent) bool {
		if d.Ino != in.Ino {
			return true
		}
		if dp, ok := m.dirPath(d.Parent); ok {
			out = append(out, path.Join(dp, d.Name))
		}
		return len(out) < maxPaths
	})
	slices.Sort(out)
	return out
}

// dirPath is the path of directory dir, through its parent links.
func (m *meta) dirPath(dir Ino) (string, bool) {
	var names []string
	for depth := 0; dir != RootIno; depth++ {
		in, ok := m.inode(dir)
		if !ok || depth > 4096 {
			return "", false
		}
		name, found := "", false
		m.dirents.Ascend(Dirent{Parent: in.Parent}, func(d Dirent) bool {
			if d.Parent != in.Parent {
				return false
			}
			if d.Ino == dir {
				name, found = d.Name, true
				return false
			}
			return true
		})
		if !found {
			return "", false
		}
		names = append(names, name)
		dir = in.Parent
	}
	slices.Reverse(names)
	return "/" + path.Join(names...), true
}

// LogStats returns the log's figures when the engine runs on a logarea log.
func (e *Engine) LogStats() (logarea.Stats, bool) {
	if w, ok := e.wal.(logWAL); ok {
		return w.l.Stats(), true
	}
	return logarea.Stats{}, false
}

// FlushTree destages the dirty data of ino and, for a directory, of every
// object under it, then persists the metadata (all of it: a delta holds
// every change since the last one). Other objects stay dirty.
func (e *Engine) FlushTree(ctx context.Context, ino Ino) error {
	e.mu.Lock()
	in, ok := e.st.inode(ino)
	if !ok {
		e.mu.Unlock()
		return ErrNotExist
	}
	set := map[Ino]struct{}{ino: {}}
	if in.IsDir() {
		queue := []Ino{ino}
		for len(queue) > 0 {
			d := queue[0]
			queue = queue[1:]
			e.st.dirents.Ascend(Dirent{Parent: d}, func(de Dirent) bool {
				if de.Parent != d {
					return false
				}
				if _, seen := set[de.Ino]; !seen {
					set[de.Ino] = struct{}{}
					if de.Type == syscall.S_IFDIR {
						queue = append(queue, de.Ino)
					}
				}
				return true
			})
		}
	}
	e.mu.Unlock()
	for i := 0; ; i++ {
		if err := e.destageRound(ctx, destageAll, true, set); err != nil {
			return err
		}
		if !e.anyDirty(set) || i >= 3 {
			return nil
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
}

// anyDirty reports whether an object of set has dirty pages.
func (e *Engine) anyDirty(set map[Ino]struct{}) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	for ino := range set {
		dirty := false
		e.pages.Ascend(pageRef{Ino: ino}, func(r pageRef) bool {
			if r.Ino != ino {
				return false
			}
			dirty = r.Dirty
			return !dirty
		})
		if dirty {
			return true
		}
	}
	return false
}

// String renders a cached run for humans.
func (c CachedRun) String() string {
	state := "clean"
	if c.Dirty {
		state = fmt.Sprintf("dirty since lsn %d", c.MinLSN)
	}
	return fmt.Sprintf("%d+%d cache %s", c.Off, c.Len, state)
}

// LoggedObjects returns up to n objects that have records in the log, in
// ascending order.
func (e *Engine) LoggedObjects(n int) []Ino {
	e.mu.Lock()
	out := make([]Ino, 0, min(n, len(e.objLogs)))
	for ino := range e.objLogs {
		out = append(out, ino)
	}
	e.mu.Unlock()
	slices.Sort(out)
	if len(out) > n {
		out = out[:n]
	}
	return out
}

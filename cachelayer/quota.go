package cachelayer

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"syscall"

	"github.com/sirupsen/logrus"
)

// Directory quotas, like XFS project quotas.
//
// A quota limits the bytes and the objects of one directory tree. Its root
// is named by a path from the mount root and bound to the directory's
// inode when the engine opens (or when a directory is made at that path
// later); from then on the quota follows the inode, not the name. Quotas
// may nest: an object counts against every quota whose tree holds it.
//
// What is counted: bytes are apparent sizes (st_size) of the objects in
// the tree, as `du --apparent-size` adds them, so a sparse file counts at
// its full size and a write, an extending truncate or an extending
// fallocate is charged the growth it causes; directories count 0 bytes,
// symlinks the length of their target. Inodes are the objects of the tree,
// its root included. An object unlinked while still open stays charged
// until its last reference goes, as a disk filesystem frees its blocks.
//
// Crossing a quota boundary: a rename or a link whose object and target
// directory do not lie in the same innermost quota fails with
// ErrCrossQuota (EXDEV, so that mv copies and deletes, which charges the
// bytes where they land), as XFS does for project quotas. A quota root
// itself cannot be renamed (it is in its own quota and its parent is not),
// nor can a directory holding one, so the configured paths stay bound to
// the same directories across remounts. Hard links therefore never span
// two quotas, and every object has exactly one innermost quota.
//
// Usage is not persisted: Open recomputes it after recovery (checkpoint
// plus log replay) by walking each quota's tree, so it is right after a
// clean remount and after a crash alike. Ops that replay apply charges to
// nothing: the walk comes after. A configured path that does not exist (or
// is not a directory) at open is inactive until a directory is made at
// that path; removing a quota root makes its quota inactive again.
//
// Objects' quotas are kept in a map from object to innermost quota, for
// the objects inside quota trees only; Engine.mu guards it all.

// DirQuota is one directory quota of the configuration. A zero limit is no
// limit for that dimension.
type DirQuota struct {
	Path   string // from the mount root: "projects/a" or "/projects/a"
	Bytes  uint64 // apparent bytes of the tree
	Inodes uint64 // objects of the tree, its root included
}

// QuotaInfo is one quota's limits and usage.
type QuotaInfo struct {
	DirQuota
	Root       Ino // the tree's root directory; 0 while inactive
	UsedBytes  uint64
	UsedInodes uint64
}

// dirQuota is a quota bound to a directory. An entry is never reused: a
// quota that becomes inactive and active again gets a new one, so that
// objects still charged to the old one (open, unlinked) cannot disturb it.
type dirQuota struct {
	cfg    int   // index in quotaState.cfgs
	root   Ino   // 0 once retired
	parent int32 // innermost enclosing quota, -1 for none
	bytes  int64
	inodes int64
}

type quotaState struct {
	cfgs   []DirQuota
	parts  [][]string    // path components of each cfgs entry
	active []int32       // cfgs index -> list index, -1 while inactive
	list   []dirQuota    // every quota bound so far
	of     map[Ino]int32 // object -> innermost quota, for objects in quota trees
}

// splitQuotaPath returns the components of a quota path.
func splitQuotaPath(p string) ([]string, error) {
	var parts []string
	for _, c := range strings.Split(p, "/") {
		switch c {
		case "", ".":
			continue
		case "..":
			return nil, fmt.Errorf("quota path %q: .. is not allowed", p)
		}
		if len(c) > MaxNameLen {
			return nil, fmt.Errorf("quota path %q: component too long", p)
		}
		parts = append(parts, c)
	}
	return parts, nil
}

func validateQuotas(qs []DirQuota) error {
	var errs []error
	seen := map[string]int{}
	for i, q := range qs {
		parts, err := splitQuotaPath(q.Path)
		if err != nil {
			errs = append(errs, fmt.Errorf("quota %d: %w", i, err))
			continue
		}
		k := strings.Join(parts, "/")
		if j, dup := seen[k]; dup {
			errs = append(errs, fmt.Errorf("quota %d: path %q is also quota %d", i, q.Path, j))
		}
		seen[k] = i
	}
	return errors.Join(errs...)
}

// initQuotasLocked binds the configured quotas to their directories and
// computes their usage from the tree (after recovery, before any op).
func (e *Engine) initQuotasLocked() {
	qs := &e.quota
	qs.cfgs = e.cfg.Quotas
	qs.parts = make([][]string, len(qs.cfgs))
	qs.active = make([]int32, len(qs.cfgs))
	qs.list = nil
	qs.of = nil
	for i, q := range qs.cfgs {
		qs.parts[i], _ = splitQuotaPath(q.Path) // validated
		qs.active[i] = -1
	}
	if len(qs.cfgs) == 0 {
		return
	}
	qs.of = make(map[Ino]int32)
	// Outer trees first, so that an inner walk overrides the outer one's
	// assignment and finds its enclosing quota.
	order := make([]int, len(qs.cfgs))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int { return len(qs.parts[a]) - len(qs.parts[b]) })
	for _, ci := range order {
		dir, ok := e.resolvePathLocked(qs.parts[ci])
		if !ok {
			e.log.WithField("path", qs.cfgs[ci].Path).Warn("quota directory does not exist; the quota starts when it is made")
			continue
		}
		qi := e.bindQuotaLocked(ci, dir, e.quotaOfLocked(dir))
		stack := []Ino{dir}
		for len(stack) > 0 {
			d := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			e.st.dirents.Ascend(Dirent{Parent: d}, func(de Dirent) bool {
				if de.Parent != d {
					return false
				}
				qs.of[de.Ino] = qi
				if de.Type == syscall.S_IFDIR {
					stack = append(stack, de.Ino)
				}
				return true
			})
		}
	}
	for ino, qi := range qs.of {
		if in, ok := e.st.inode(ino); ok {
			e.chargeLocked(qi, int64(in.Size), 1)
		}
	}
	for _, qi := range qs.active {
		if qi < 0 {
			continue
		}
		q := &qs.list[qi]
		e.log.WithFields(logrus.Fields{
			"path": qs.cfgs[q.cfg].Path, "root": q.root, "bytes": q.bytes, "inodes": q.inodes,
		}).Info("quota")
	}
}

// resolvePathLocked follows path components from the root to a directory.
func (e *Engine) resolvePathLocked(parts []string) (Ino, bool) {
	dir := RootIno
	for _, c := range parts {
		d, ok := e.st.lookup(dir, c)
		if !ok || d.Type != syscall.S_IFDIR {
			return 0, false
		}
		dir = d.Ino
	}
	return dir, true
}

// bindQuotaLocked makes quota ci active on directory dir, inside quota
// parent (-1 for none), with no usage.
func (e *Engine) bindQuotaLocked(ci int, dir Ino, parent int32) int32 {
	qs := &e.quota
	qs.list = append(qs.list, dirQuota{cfg: ci, root: dir, parent: parent})
	qi := int32(len(qs.list) - 1)
	qs.active[ci] = qi
	qs.of[dir] = qi
	return qi
}

// quotaOfLocked is the innermost quota holding ino, or -1.
func (e *Engine) quotaOfLocked(ino Ino) int32 {
	if qi, ok := e.quota.of[ino]; ok {
		return qi
	}
	return -1
}

// chargeLocked adds usage to quota qi and every quota around it.
func (e *Engine) chargeLocked(qi int32, bytes, inodes int64) {
	for qi >= 0 {
		q := &e.quota.list[qi]
		q.bytes += bytes
		q.inodes += inodes
		qi = q.parent
	}
}

// quotaCheckLocked fails with ErrQuota when adding bytes and inodes to the
// quotas holding ino would exceed a limit.
func (e *Engine) quotaCheckLocked(ino Ino, bytes, inodes int64) error {
	if bytes <= 0 && inodes <= 0 {
		return nil
	}
	for qi := e.quotaOfLocked(ino); qi >= 0; qi = e.quota.list[qi].parent {
		q := &e.quota.list[qi]
		lim := e.quota.cfgs[q.cfg]
		if bytes > 0 && lim.Bytes > 0 && q.bytes+bytes > int64(lim.Bytes) {
			return fmt.Errorf("%w: %s: %d bytes used, %d more asked, limit %d", ErrQuota, lim.Path, q.bytes, bytes, lim.Bytes)
		}
		if inodes > 0 && lim.Inodes > 0 && q.inodes+inodes > int64(lim.Inodes) {
			return fmt.Errorf("%w: %s: %d inodes used, limit %d", ErrQuota, lim.Path, q.inodes, lim.Inodes)
		}
	}
	return nil
}

// quotaGrowLocked checks growing ino from size old to size new.
func (e *Engine) quotaGrowLocked(ino Ino, old, new uint64) error {
	if new <= old || e.quota.of == nil {
		return nil
	}
	return e.quotaCheckLocked(ino, int64(new-old), 0)
}

// quotaMoveLocked fails with ErrCrossQuota when object ino may not be
// placed in directory dir: their innermost quotas differ, or ino is a
// directory holding a quota root.
func (e *Engine) quotaMoveLocked(ino Ino, isDir bool, dir Ino) error {
	if e.quota.of == nil {
		return nil
	}
	if e.quotaOfLocked(ino) != e.quotaOfLocked(dir) {
		return ErrCrossQuota
	}
	if isDir {
		for _, qi := range e.quota.active {
			if qi >= 0 && e.isAncestorLocked(ino, e.quota.list[qi].root) {
				return ErrCrossQuota
			}
		}
	}
	return nil
}

// quotaTargetLocked fails with ErrCrossQuota when a rename would replace
// a quota root (dst, when it exists), or move a directory to the path of
// a quota not started yet: either would leave the configured path and the
// bound directory apart until the next mount. (mv then copies: it makes
// the directory, which starts the quota, and charges what it copies.)
func (e *Engine) quotaTargetLocked(parent Ino, name string, dst Ino, dstExists, srcDir bool) error {
	if e.quota.of == nil {
		return nil
	}
	if dstExists {
		if qi, ok := e.quota.of[dst]; ok && e.quota.list[qi].root == dst {
			return ErrCrossQuota
		}
	}
	if !srcDir {
		return nil
	}
	for ci, parts := range e.quota.parts {
		if e.quota.active[ci] >= 0 || len(parts) == 0 || parts[len(parts)-1] != name {
			continue
		}
		if p, ok := e.resolvePathLocked(parts[:len(parts)-1]); ok && p == parent {
			return ErrCrossQuota
		}
	}
	return nil
}

// quotaDirentLocked runs when an entry is put: a new object joins the
// quota of its directory (or starts the quota configured at its path).
func (e *Engine) quotaDirentLocked(d Dirent) {
	if e.quota.of == nil {
		return
	}
	if _, exists := e.st.inode(d.Ino); exists {
		return // a rename or a link: within one quota (quotaMoveLocked)
	}
	qi := e.quotaOfLocked(d.Parent)
	if d.Type == syscall.S_IFDIR {
		for ci, parts := range e.quota.parts {
			if e.quota.active[ci] >= 0 || len(parts) == 0 || parts[len(parts)-1] != d.Name {
				continue
			}
			if p, ok := e.resolvePathLocked(parts[:len(parts)-1]); ok && p == d.Parent {
				qi = e.bindQuotaLocked(ci, d.Ino, qi)
				e.log.WithFields(logrus.Fields{"path": e.quota.cfgs[ci].Path, "root": d.Ino}).Info("quota starts")
				break
			}
		}
	}
	if qi < 0 {
		return
	}
	e.quota.of[d.Ino] = qi
	e.chargeLocked(qi, 0, 1)
}

// quotaSizeLocked charges a size change of ino.
func (e *Engine) quotaSizeLocked(ino Ino, old, new uint64) {
	if old == new || e.quota.of == nil {
		return
	}
	if qi := e.quotaOfLocked(ino); qi >= 0 {
		e.chargeLocked(qi, int64(new)-int64(old), 0)
	}
}

// quotaDeleteLocked gives back what a deleted object was charged; a quota
// root's quota becomes inactive.
func (e *Engine) quotaDeleteLocked(ino Ino) {
	qi, ok := e.quota.of[ino]
	if !ok {
		return
	}
	delete(e.quota.of, ino)
	in, _ := e.st.inode(ino)
	e.chargeLocked(qi, -int64(in.Size), -1)
	q := &e.quota.list[qi]
	if q.root == ino {
		e.log.WithField("path", e.quota.cfgs[q.cfg].Path).Info("quota directory removed; the quota stops")
		e.quota.active[q.cfg] = -1
		q.root = 0
	}
}

// Quotas reports every configured quota's limits and usage.
func (e *Engine) Quotas() []QuotaInfo {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]QuotaInfo, len(e.quota.cfgs))
	for ci, c := range e.quota.cfgs {
		out[ci].DirQuota = c
		if qi := e.quota.active[ci]; qi >= 0 {
			q := &e.quota.list[qi]
			out[ci].Root, out[ci].UsedBytes, out[ci].UsedInodes = q.root, uint64(max(q.bytes, 0)), uint64(max(q.inodes, 0))
		}
	}
	return out
}

// StatFSAt is StatFS as seen from object ino: inside a quota tree, the
// innermost quota's limits replace the filesystem's size and free space
// (and Files and FreeFiles its object count), as df shows a project quota
// on XFS. Free space is never more than the filesystem has.
func (e *Engine) StatFSAt(ino Ino) (FSInfo, error) {
	info, err := e.StatFS()
	if err != nil {
		return info, err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	qi := e.quotaOfLocked(ino)
	if qi < 0 {
		return info, nil
	}
	q := &e.quota.list[qi]
	lim := e.quota.cfgs[q.cfg]
	if lim.Bytes > 0 {
		used := uint64(max(q.bytes, 0))
		left := lim.Bytes - min(used, lim.Bytes)
		info.Total = lim.Bytes
		info.Free = min(info.Free, left)
		info.Avail = min(info.Avail, left)
	}
	if lim.Inodes > 0 {
		used := uint64(max(q.inodes, 0))
		info.Files = lim.Inodes
		info.FreeFiles = lim.Inodes - min(used, lim.Inodes)
	}
	return info, nil
}

// writeQuota checks a whole write ending at end before its first chunk;
// each chunk checks again when it applies.
func (e *Engine) writeQuota(ino Ino, end uint64) error {
	if len(e.cfg.Quotas) == 0 {
		return nil
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.quota.of == nil {
		return nil
	}
	in, ok := e.st.inode(ino)
	if !ok {
		return nil // the chunk reports it
	}
	return e.quotaGrowLocked(ino, in.Size, end)
}

// InQuota reports whether ino lies in a directory quota's tree. The
// filesystem layer opens such files without the kernel's page cache, so
// that a write past the quota fails in write(2) itself rather than at a
// later fsync after the kernel has already shown the new size.
func (e *Engine) InQuota(ino Ino) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.quotaOfLocked(ino) >= 0
}

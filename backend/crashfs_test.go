package backend

import (
	"errors"
	"io"
	iofs "io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

// crashFS is an in-memory FS that remembers what has been made durable:
// file contents at the last Sync/SyncData, directory entries at the last
// SyncDir. crash returns the filesystem as a power loss could leave it.
type crashFS struct {
	mu    sync.Mutex
	root  *memNode
	locks map[string]bool
}

type memNode struct {
	dir bool
	// files
	data, synced []byte
	// directories
	children, syncedChildren map[string]*memNode
}

func newDirNode() *memNode {
	return &memNode{dir: true, children: map[string]*memNode{}, syncedChildren: map[string]*memNode{}}
}

func newCrashFS() *crashFS { return &crashFS{root: newDirNode(), locks: map[string]bool{}} }

var _ FS = (*crashFS)(nil)

func splitPath(name string) []string {
	name = filepath.Clean(name)
	if name == "/" {
		return nil
	}
	return strings.Split(strings.TrimPrefix(name, "/"), "/")
}

// lookupLocked returns the node at name, or nil.
func (c *crashFS) lookupLocked(name string) *memNode {
	n := c.root
	for _, part := range splitPath(name) {
		if !n.dir {
			return nil
		}
		if n = n.children[part]; n == nil {
			return nil
		}
	}
	return n
}

// parentLocked returns the directory holding name and name's last element.
func (c *crashFS) parentLocked(op, name string) (*memNode, string, error) {
	parts := splitPath(name)
	if len(parts) == 0 {
		return nil, "", &os.PathError{Op: op, Path: name, Err: syscall.EINVAL}
	}
	dir := c.lookupLocked("/" + strings.Join(parts[:len(parts)-1], "/"))
	if dir == nil {
		return nil, "", &os.PathError{Op: op, Path: name, Err: iofs.ErrNotExist}
	}
	if !dir.dir {
		return nil, "", &os.PathError{Op: op, Path: name, Err: syscall.ENOTDIR}
	}
	return dir, parts[len(parts)-1], nil
}

func (c *crashFS) Create(name string) (File, error) {
	return c.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
}

func (c *crashFS) OpenFile(name string, flag int, perm os.FileMode) (File, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	dir, base, err := c.parentLocked("open", name)
	if err != nil {
		return nil, err
	}
	n := dir.children[base]
	switch {
	case n == nil && flag&os.O_CREATE == 0:
		return nil, &os.PathError{Op: "open", Path: name, Err: iofs.ErrNotExist}
	case n != nil && flag&os.O_CREATE != 0 && flag&os.O_EXCL != 0:
		return nil, &os.PathError{Op: "open", Path: name, Err: iofs.ErrExist}
	case n == nil:
		n = &memNode{}
		dir.children[base] = n
	}
	if n.dir {
		return nil, &os.PathError{Op: "open", Path: name, Err: syscall.EISDIR}
	}
	if flag&os.O_TRUNC != 0 {
		n.data = nil
	}
	return &memFile{fs: c, n: n, name: name, writable: flag&(os.O_WRONLY|os.O_RDWR) != 0}, nil
}

func (c *crashFS) Rename(oldname, newname string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	od, ob, err := c.parentLocked("rename", oldname)
	if err != nil {
		return err
	}
	nd, nb, err := c.parentLocked("rename", newname)
	if err != nil {
		return err
	}
	n := od.children[ob]
	if n == nil {
		return &os.PathError{Op: "rename", Path: oldname, Err: iofs.ErrNotExist}
	}
	delete(od.children, ob)
	nd.children[nb] = n
	return nil
}

func (c *crashFS) Remove(name string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	dir, base, err := c.parentLocked("remove", name)
	if err != nil {
		return err
	}
	n := dir.children[base]
	if n == nil {
		return &os.PathError{Op: "remove", Path: name, Err: iofs.ErrNotExist}
	}
	if n.dir && len(n.children) > 0 {
		return &os.PathError{Op: "remove", Path: name, Err: syscall.ENOTEMPTY}
	}
	delete(dir.children, base)
	return nil
}

func (c *crashFS) MkdirAll(name string, perm os.FileMode) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.root
	for _, part := range splitPath(name) {
		child := n.children[part]
		if child == nil {
			child = newDirNode()
			n.children[part] = child
		}
		if !child.dir {
			return &os.PathError{Op: "mkdir", Path: name, Err: syscall.ENOTDIR}
		}
		n = child
	}
	return nil
}

func (c *crashFS) ReadDir(name string) ([]iofs.DirEntry, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.lookupLocked(name)
	if n == nil || !n.dir {
		return nil, &os.PathError{Op: "readdir", Path: name, Err: iofs.ErrNotExist}
	}
	var out []iofs.DirEntry
	for base, child := range n.children {
		out = append(out, iofs.FileInfoToDirEntry(child.info(base)))
	}
	slices.SortFunc(out, func(a, b iofs.DirEntry) int { return strings.Compare(a.Name(), b.Name()) })
	return out, nil
}

func (c *crashFS) Stat(name string) (iofs.FileInfo, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.lookupLocked(name)
	if n == nil {
		return nil, &os.PathError{Op: "stat", Path: name, Err: iofs.ErrNotExist}
	}
	return n.info(filepath.Base(name)), nil
}

func (c *crashFS) SyncDir(name string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.lookupLocked(name)
	if n == nil || !n.dir {
		return &os.PathError{Op: "fsync", Path: name, Err: iofs.ErrNotExist}
	}
	n.syncedChildren = make(map[string]*memNode, len(n.children))
	for k, v := range n.children {
		n.syncedChildren[k] = v
	}
	return nil
}

func (c *crashFS) Lock(name string) (io.Closer, error) {
	f, err := c.OpenFile(name, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.locks[name] {
		return nil, &os.PathError{Op: "flock", Path: name, Err: syscall.EWOULDBLOCK}
	}
	c.locks[name] = true
	f.(*memFile).n.data = []byte("1\n")
	return closerFunc(func() error {
		c.mu.Lock()
		defer c.mu.Unlock()
		delete(c.locks, name)
		return nil
	}), nil
}

type closerFunc func() error

func (f closerFunc) Close() error { return f() }

func (c *crashFS) StatFS(string) (FSStat, error) {
	return FSStat{Total: 1 << 30, Free: 1 << 29, Avail: 1 << 28}, nil
}

// crash returns what survives a power loss now. Strict (rng nil): exactly
// the durable state. Otherwise each file also keeps a random part of its
// unsynced tail, and each directory entry changed since the directory's
// last sync is, at random, in its old or its new state.
func (c *crashFS) crash(rng *rand.Rand) *crashFS {
	c.mu.Lock()
	defer c.mu.Unlock()
	seen := map[*memNode]*memNode{}
	var cp func(n *memNode) *memNode
	cp = func(n *memNode) *memNode {
		if m, ok := seen[n]; ok {
			return m
		}
		if !n.dir {
			data := slices.Clone(n.synced)
			if rng != nil && len(n.data) > len(n.synced) {
				keep := len(n.synced) + rng.IntN(len(n.data)-len(n.synced)+1)
				data = slices.Clone(n.data[:keep])
				copy(data, n.synced) // unsynced overwrites of the synced prefix are lost
			}
			m := &memNode{data: data, synced: slices.Clone(data)}
			seen[n] = m
			return m
		}
		m := newDirNode()
		seen[n] = m
		names := map[string]bool{}
		for k := range n.syncedChildren {
			names[k] = true
		}
		for k := range n.children {
			names[k] = true
		}
		for k := range names {
			child := n.syncedChildren[k]
			if rng != nil && n.children[k] != child && rng.IntN(2) == 0 {
				child = n.children[k]
			}
			if child != nil {
				m.children[k] = cp(child)
				m.syncedChildren[k] = m.children[k]
			}
		}
		return m
	}
	return &crashFS{root: cp(c.root), locks: map[string]bool{}}
}

func (n *memNode) info(name string) iofs.FileInfo {
	return memInfo{name: name, size: int64(len(n.data)), dir: n.dir}
}

type memInfo struct {
	name string
	size int64
	dir  bool
}

func (i memInfo) Name() string { return i.name }
func (i memInfo) Size() int64  { return i.size }
func (i memInfo) Mode() iofs.FileMode {
	if i.dir {
		return iofs.ModeDir | 0o755
	}
	return 0o644
}
func (i memInfo) ModTime() time.Time { return time.Time{} }
func (i memInfo) IsDir() bool        { return i.dir }
func (i memInfo) Sys() any           { return nil }

type memFile struct {
	fs       *crashFS
	n        *memNode
	name     string
	writable bool
	closed   bool
}

func (f *memFile) ReadAt(p []byte, off int64) (int, error) {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if f.closed {
		return 0, os.ErrClosed
	}
	if off >= int64(len(f.n.data)) {
		return 0, io.EOF
	}
	n := copy(p, f.n.data[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (f *memFile) WriteAt(p []byte, off int64) (int, error) {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if f.closed {
		return 0, os.ErrClosed
	}
	if !f.writable {
		return 0, &os.PathError{Op: "write", Path: f.name, Err: syscall.EBADF}
	}
	if end := off + int64(len(p)); end > int64(len(f.n.data)) {
		f.n.data = append(f.n.data, make([]byte, end-int64(len(f.n.data)))...)
	}
	copy(f.n.data[off:], p)
	return len(p), nil
}

func (f *memFile) Sync() error {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if f.closed {
		return os.ErrClosed
	}
	f.n.synced = slices.Clone(f.n.data)
	return nil
}

func (f *memFile) SyncData() error { return f.Sync() }

func (f *memFile) Stat() (iofs.FileInfo, error) {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	return f.n.info(filepath.Base(f.name)), nil
}

func (f *memFile) Close() error {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if f.closed {
		return errors.New("close of closed memFile")
	}
	f.closed = true
	return nil
}

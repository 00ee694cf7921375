package fs

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dcache/dcache/cachelayer"
)

// treeObject is what the generator made: one object, under one or more
// names.
type treeObject struct {
	kind         uint32 // S_IFREG, S_IFDIR, S_IFLNK, S_IFIFO
	perm         uint32
	uid, gid     uint32
	atime, mtime unix.Timespec
	size         int64
	sum          [sha256.Size]byte
	target       string
	xattrs       map[string]string
	names        []string // paths relative to the tree's root
	subdirs      int

	// Regular files: bytes [dataOff, dataEnd) come from seed, the rest is
	// holes.
	seed             uint64
	compressible     bool
	dataOff, dataEnd int64
}

// treeEntry is what one name of the mount shows.
type treeEntry struct {
	Mode, Uid, Gid      uint32
	Nlink, Ino, Rdev    uint64
	Size                int64
	Atime, Mtime, Ctime syscall.Timespec
	Target              string
	Sum                 [sha256.Size]byte
	Xattrs              map[string]string
}

// treeWorkers is how many goroutines do a tree's I/O: enough to keep the
// daemon busy while each waits for the kernel.
const treeWorkers = 4

// parallel runs fn for i in [0, n) on treeWorkers goroutines, each with its
// own 1 MiB buffer, and returns the first error.
func parallel(n int, fn func(buf []byte, i int) error) error {
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make([]error, treeWorkers)
	for w := range treeWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 1<<20)
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if err := fn(buf, i); err != nil {
					errs[w] = err
					next.Store(int64(n)) // stop the others
					return
				}
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// treeGen plans a random tree and makes it on a mount. Every random choice
// is made in order from one seed; the I/O runs in parallel.
type treeGen struct {
	t      *testing.T
	root   string
	rng    *rand.Rand
	data   *rand.ChaCha8
	objs   []*treeObject
	dirs   []*treeObject
	files  []*treeObject
	byPath map[string]*treeObject
	bytes  int64
}

func newTreeGen(t *testing.T, root string, seed uint64) *treeGen {
	g := &treeGen{
		t:      t,
		root:   root,
		rng:    rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		data:   rand.NewChaCha8(seed32(seed)),
		byPath: map[string]*treeObject{},
	}
	g.add(&treeObject{kind: syscall.S_IFDIR}, ".")
	g.dirs = append(g.dirs, g.objs[0])
	return g
}

func seed32(seed uint64) [32]byte {
	var cs [32]byte
	binary.LittleEndian.PutUint64(cs[:], seed)
	binary.LittleEndian.PutUint64(cs[8:], ^seed)
	return cs
}

func (g *treeGen) abs(rel string) string { return filepath.Join(g.root, rel) }

// name returns a fresh name in dir: mostly short, some with spaces and
// UTF-8, a few of the maximum length.
func (g *treeGen) name(dir *treeObject) string {
	const chars = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.,+= "
	for {
		var b strings.Builder
		switch r := g.rng.IntN(100); {
		case r < 2:
			for b.Len() < cachelayer.MaxNameLen {
				b.WriteByte(chars[g.rng.IntN(len(chars)-1)])
			}
		case r < 6:
			b.WriteString("ünï-çødé-")
			b.WriteString(fmt.Sprint(g.rng.IntN(1000)))
		default:
			n := 1 + g.rng.IntN(24)
			for range n {
				b.WriteByte(chars[g.rng.IntN(len(chars))])
			}
		}
		s := b.String()
		if s == "." || s == ".." {
			continue
		}
		p := filepath.Join(dir.names[0], s)
		if _, ok := g.byPath[p]; !ok {
			return p
		}
	}
}

// add records name p of o (its first name adds the object).
func (g *treeGen) add(o *treeObject, p string) {
	o.names = append(o.names, p)
	g.byPath[p] = o
	if len(o.names) == 1 {
		g.objs = append(g.objs, o)
	}
}

func (g *treeGen) randDir() *treeObject { return g.dirs[g.rng.IntN(len(g.dirs))] }

// mkdirs makes n directories, each under a random earlier one (depth at
// most 8).
func (g *treeGen) mkdirs(n int) {
	for range n {
		parent := g.randDir()
		if strings.Count(parent.names[0], "/") >= 7 {
			parent = g.dirs[0]
		}
		p := g.name(parent)
		if err := os.Mkdir(g.abs(p), 0o700); err != nil {
			g.t.Fatal(err)
		}
		o := &treeObject{kind: syscall.S_IFDIR}
		g.add(o, p)
		parent.subdirs++
		g.dirs = append(g.dirs, o)
	}
}

// fill puts random bytes into b, or with compressible, text with a few
// random bytes.
func fill(b []byte, rng *rand.Rand, data *rand.ChaCha8, compressible bool) {
	if !compressible {
		data.Read(b)
		return
	}
	const text = "the quick brown fox jumps over the lazy dog; dcache destages it all. "
	for i := 0; i < len(b); {
		i += copy(b[i:], text)
		if i < len(b) && rng.IntN(8) == 0 {
			b[i] = byte(rng.Uint32())
			i++
		}
	}
}

// randBytes returns n bytes from the generator's streams.
func (g *treeGen) randBytes(n int, compressible bool) []byte {
	b := make([]byte, n)
	fill(b, g.rng, g.data, compressible)
	return b
}

// file plans a regular file of size bytes. A sparse one starts with a
// hole and ends with one.
func (g *treeGen) file(size int64, compressible, sparse bool) {
	o := &treeObject{kind: syscall.S_IFREG, size: size, seed: g.rng.Uint64(), compressible: compressible, dataEnd: size}
	if sparse && size > 1 {
		o.dataOff = g.rng.Int64N(size)
		o.dataEnd = o.dataOff + (size-o.dataOff)/2
	}
	g.add(o, g.name(g.randDir()))
	g.files = append(g.files, o)
	g.bytes += size
}

var zeros = make([]byte, 1<<20)

// writeFile makes a planned regular file and records its SHA-256.
func (g *treeGen) writeFile(o *treeObject, buf []byte) error {
	f, err := os.OpenFile(g.abs(o.names[0]), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	h := sha256.New()
	hashZeros := func(n int64) {
		for n > 0 {
			c := min(n, int64(len(zeros)))
			h.Write(zeros[:c])
			n -= c
		}
	}
	rng := rand.New(rand.NewPCG(o.seed, 1))
	data := rand.NewChaCha8(seed32(o.seed))
	hashZeros(o.dataOff)
	for off := o.dataOff; off < o.dataEnd; {
		b := buf[:min(o.dataEnd-off, int64(len(buf)))]
		fill(b, rng, data, o.compressible)
		if _, err := f.WriteAt(b, off); err != nil {
			return err
		}
		h.Write(b)
		off += int64(len(b))
	}
	if o.dataEnd < o.size {
		if err := f.Truncate(o.size); err != nil {
			return err
		}
		hashZeros(o.size - o.dataEnd)
	}
	copy(o.sum[:], h.Sum(nil))
	return f.Close()
}

// writeFiles makes every planned regular file, the largest first.
func (g *treeGen) writeFiles() {
	files := slices.Clone(g.files)
	slices.SortStableFunc(files, func(a, b *treeObject) int { return int(b.size>>20 - a.size>>20) })
	if err := parallel(len(files), func(buf []byte, i int) error { return g.writeFile(files[i], buf) }); err != nil {
		g.t.Fatal(err)
	}
}

// smallSize is a small file's size: many tiny, most a few KiB, some up to
// 256 KiB.
func (g *treeGen) smallSize() int64 {
	switch r := g.rng.IntN(100); {
	case r < 5:
		return 0
	case r < 35:
		return g.rng.Int64N(512)
	case r < 85:
		return 512 + g.rng.Int64N(16<<10)
	default:
		return 16<<10 + g.rng.Int64N(240<<10)
	}
}

func (g *treeGen) links(n int) {
	for range n {
		o := g.files[g.rng.IntN(len(g.files))]
		p := g.name(g.randDir())
		if err := os.Link(g.abs(o.names[0]), g.abs(p)); err != nil {
			g.t.Fatal(err)
		}
		g.add(o, p)
	}
}

func (g *treeGen) symlinks(n int) {
	for range n {
		dir := g.randDir()
		var target string
		switch r := g.rng.IntN(10); {
		case r < 5: // an existing object, relative to the link
			depth := strings.Count(dir.names[0], "/") + 1
			if dir.names[0] == "." {
				depth = 0
			}
			target = strings.Repeat("../", depth) + g.objs[g.rng.IntN(len(g.objs))].names[0]
		case r < 7: // absolute, dangling
			target = "/nonexistent/" + fmt.Sprint(g.rng.IntN(1e6))
		case r < 9: // anything
			target = strings.ReplaceAll(string(g.randBytes(1+g.rng.IntN(200), true)), "\x00", "0")
		default: // long
			target = strings.Repeat("long/", 1+g.rng.IntN(cachelayer.MaxSymlinkLen/5))
		}
		p := g.name(dir)
		if err := os.Symlink(target, g.abs(p)); err != nil {
			g.t.Fatal(err)
		}
		g.add(&treeObject{kind: syscall.S_IFLNK, perm: 0o777, target: target, size: int64(len(target))}, p)
	}
}

func (g *treeGen) fifos(n int) {
	for range n {
		p := g.name(g.randDir())
		if err := syscall.Mkfifo(g.abs(p), 0o600); err != nil {
			g.t.Fatal(err)
		}
		g.add(&treeObject{kind: syscall.S_IFIFO}, p)
	}
}

func (g *treeGen) randTime() unix.Timespec {
	sec := g.rng.Int64N(4_000_000_000) - 500_000_000 // some before 1970
	return unix.Timespec{Sec: sec, Nsec: g.rng.Int64N(1e9)}
}

// metadata plans xattrs (for some), an owner, a mode and times for every
// object, then sets them in that order (chown clears setuid; utimensat
// comes last).
func (g *treeGen) metadata() {
	for _, o := range g.objs {
		o.xattrs = map[string]string{}
		if g.rng.IntN(10) == 0 || o.kind == syscall.S_IFDIR && g.rng.IntN(3) == 0 {
			ns := "user."
			if o.kind == syscall.S_IFLNK || o.kind == syscall.S_IFIFO {
				ns = "trusted." // user.* is for files and directories only
			}
			for i := range 1 + g.rng.IntN(3) {
				n := g.rng.IntN(2048)
				if g.rng.IntN(50) == 0 {
					n = cachelayer.MaxXattrValue
				}
				o.xattrs[fmt.Sprintf("%sattr%d", ns, i)] = string(g.randBytes(n, g.rng.IntN(2) == 0))
			}
		}
		if o.names[0] != "." {
			o.uid, o.gid = uint32(g.rng.IntN(70000)), uint32(g.rng.IntN(70000))
		}
		switch {
		case o.kind == syscall.S_IFLNK:
		case o.names[0] == ".":
			o.perm = 0o755
		default:
			o.perm = uint32(g.rng.IntN(0o10000))
		}
		o.atime, o.mtime = g.randTime(), g.randTime()
	}
	err := parallel(len(g.objs), func(_ []byte, i int) error {
		o := g.objs[i]
		p := g.abs(o.names[0])
		for _, name := range slices.Sorted(mapKeys(o.xattrs)) {
			if err := unix.Lsetxattr(p, name, []byte(o.xattrs[name]), 0); err != nil {
				return fmt.Errorf("setxattr %s %s: %w", p, name, err)
			}
		}
		if err := os.Lchown(p, int(o.uid), int(o.gid)); err != nil {
			return err
		}
		if o.kind != syscall.S_IFLNK {
			if err := syscall.Chmod(p, o.perm); err != nil {
				return fmt.Errorf("chmod %s: %w", p, err)
			}
		}
		if err := unix.UtimesNanoAt(unix.AT_FDCWD, p, []unix.Timespec{o.atime, o.mtime}, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return fmt.Errorf("utimensat %s: %w", p, err)
		}
		return nil
	})
	if err != nil {
		g.t.Fatal(err)
	}
}

// snapshotTree records every name under root: attributes, xattrs, symlink
// targets and, with hash, the SHA-256 of every regular file.
func snapshotTree(t *testing.T, root string, hash bool) map[string]*treeEntry {
	t.Helper()
	// The names, from the directories alone; then everything else about
	// each, in parallel.
	rels := []string{"."}
	dirs := []string{"."}
	for len(dirs) > 0 {
		dir := dirs[len(dirs)-1]
		dirs = dirs[:len(dirs)-1]
		ents, err := os.ReadDir(filepath.Join(root, dir))
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range ents {
			rel := filepath.Join(dir, e.Name())
			rels = append(rels, rel)
			if e.IsDir() {
				dirs = append(dirs, rel)
			}
		}
	}
	entries := make([]*treeEntry, len(rels))
	err := parallel(len(rels), func(buf []byte, i int) error {
		var err error
		entries[i], err = snapshotEntry(filepath.Join(root, rels[i]), hash, buf)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[string]*treeEntry, len(rels))
	for i, rel := range rels {
		out[rel] = entries[i]
	}
	return out
}

// snapshotEntry records one name.
func snapshotEntry(p string, hash bool, buf []byte) (*treeEntry, error) {
	var st syscall.Stat_t
	if err := syscall.Lstat(p, &st); err != nil {
		return nil, err
	}
	xs, err := readXattrs(p)
	if err != nil {
		return nil, err
	}
	e := &treeEntry{
		Mode: st.Mode, Uid: st.Uid, Gid: st.Gid, Nlink: st.Nlink, Ino: st.Ino, Rdev: st.Rdev,
		Size: st.Size, Atime: st.Atim, Mtime: st.Mtim, Ctime: st.Ctim,
		Xattrs: map[string]string{},
	}
	for k, v := range xs {
		e.Xattrs[k] = string(v)
	}
	switch st.Mode & syscall.S_IFMT {
	case syscall.S_IFLNK:
		if e.Target, err = os.Readlink(p); err != nil {
			return nil, err
		}
	case syscall.S_IFREG:
		if !hash {
			break
		}
		f, err := os.Open(p)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		h := sha256.New()
		for {
			n, err := f.Read(buf)
			h.Write(buf[:n])
			if err == io.EOF {
				break
			}
			if err != nil {
				return nil, fmt.Errorf("read %s: %w", p, err)
			}
		}
		copy(e.Sum[:], h.Sum(nil))
	}
	return e, nil
}

// checkModel compares what the mount shows with what was made.
func checkModel(t *testing.T, objs []*treeObject, snap map[string]*treeEntry) {
	t.Helper()
	errs := 0
	fail := func(format string, args ...any) {
		t.Helper()
		if errs++; errs <= 20 {
			t.Errorf(format, args...)
		}
	}
	names := 0
	for _, o := range objs {
		inos := map[uint64]bool{}
		for _, p := range o.names {
			names++
			e, ok := snap[p]
			if !ok {
				fail("%s: missing", p)
				continue
			}
			inos[e.Ino] = true
			wantNlink := uint64(len(o.names))
			if o.kind == syscall.S_IFDIR {
				wantNlink = uint64(2 + o.subdirs)
			}
			if e.Mode != o.kind|o.perm || e.Uid != o.uid || e.Gid != o.gid || e.Nlink != wantNlink {
				fail("%s: mode %#o owner %d:%d nlink %d, want %#o %d:%d %d", p, e.Mode, e.Uid, e.Gid, e.Nlink, o.kind|o.perm, o.uid, o.gid, wantNlink)
			}
			if !sameTime(e.Atime, o.atime) || !sameTime(e.Mtime, o.mtime) {
				fail("%s: atime %v mtime %v, want %v %v", p, e.Atime, e.Mtime, o.atime, o.mtime)
			}
			if o.kind == syscall.S_IFREG && (e.Size != o.size || e.Sum != o.sum) {
				fail("%s: size %d sha256 %x, want %d %x", p, e.Size, e.Sum, o.size, o.sum)
			}
			if e.Target != o.target {
				fail("%s: symlink target %.40q, want %.40q", p, e.Target, o.target)
			}
			if !reflect.DeepEqual(e.Xattrs, o.xattrs) {
				fail("%s: xattrs %v, want %v", p, slices.Sorted(mapKeys(e.Xattrs)), slices.Sorted(mapKeys(o.xattrs)))
			}
		}
		if len(inos) != 1 {
			fail("%v: %d inode numbers for one object", o.names, len(inos))
		}
	}
	if len(snap) != names {
		fail("%d names on the mount, %d made", len(snap), names)
	}
	if errs > 20 {
		t.Errorf("... %d differences in all", errs)
	}
}

// compareSnapshots requires two snapshots to be identical.
func compareSnapshots(t *testing.T, before, after map[string]*treeEntry) {
	t.Helper()
	var diffs []string
	for p, b := range before {
		a, ok := after[p]
		switch {
		case !ok:
			diffs = append(diffs, p+": gone")
		case !reflect.DeepEqual(a, b):
			diffs = append(diffs, fmt.Sprintf("%s:\n\tbefore %+v\n\tafter  %+v", p, *b, *a))
		}
	}
	for p := range after {
		if _, ok := before[p]; !ok {
			diffs = append(diffs, p+": new")
		}
	}
	sort.Strings(diffs)
	for i, d := range diffs {
		if i == 20 {
			t.Errorf("... %d differences in all", len(diffs))
			break
		}
		t.Error(d)
	}
}

// TestRemountRoundTrip writes a generated tree of more than 10,000 files
// and 1 GiB, records everything the mount shows, remounts cleanly and
// requires exactly the same: contents, modes, owners, times to the
// nanosecond, xattrs, symlink targets, link counts and inode numbers.
func TestRemountRoundTrip(t *testing.T) {
	if testing.Short() {
		t.Skip("writes 1 GiB")
	}
	tm := newTestMount(t, cachelayer.Config{CacheSize: 256 << 20})
	root := tm.path("tree")
	if err := os.Mkdir(root, 0o755); err != nil {
		t.Fatal(err)
	}
	const seed = 20240611
	g := newTreeGen(t, root, seed)
	start := time.Now()
	phase := func(name string) {
		t.Logf("%s: %v", name, time.Since(start).Round(time.Millisecond))
		start = time.Now()
	}
	g.mkdirs(400)
	for range 10_000 {
		r := g.rng.IntN(100)
		g.file(g.smallSize(), r < 20, r == 99)
	}
	// A few medium and large files up to 1 GiB in all, at unaligned sizes.
	for range 20 {
		g.file(1<<20+g.rng.Int64N(8<<20), g.rng.IntN(4) == 0, g.rng.IntN(5) == 0)
	}
	for i := 0; g.bytes < 1<<30; i++ {
		g.file(min(1<<30-g.bytes+g.rng.Int64N(1<<20), 64<<20+g.rng.Int64N(256<<20)), i == 1, i == 2)
	}
	g.writeFiles()
	phase("files")
	g.links(300)
	g.symlinks(300)
	g.fifos(20)
	g.metadata()
	phase("links and metadata")
	t.Logf("seed %d: %d objects, %d regular files, %d dirs, %d names, %d MiB", seed, len(g.objs), len(g.files), len(g.dirs), len(g.byPath), g.bytes>>20)

	// Before the remount the kernel's page cache holds the files: their
	// hashes are the ones computed while writing.
	before := snapshotTree(t, root, false)
	for p, e := range before {
		if o := g.byPath[p]; o != nil && o.kind == syscall.S_IFREG {
			e.Sum = o.sum
		}
	}
	phase("snapshot")
	checkModel(t, g.objs, before)
	tm.remount()
	phase("remount")
	after := snapshotTree(t, root, true)
	phase("snapshot after remount")
	compareSnapshots(t, before, after)
}

// TestLargerThanCache writes four times the page pool (sixteen times the
// dirty budget) and reads it back from the backend, before and after a
// remount. One file is written in random order at unaligned offsets, so
// that writes land on blocks whose other bytes were destaged and evicted.
func TestLargerThanCache(t *testing.T) {
	if testing.Short() {
		t.Skip("writes 256 MiB")
	}
	const cacheSize = 32 << 20
	tm := newTestMount(t, cachelayer.Config{CacheSize: cacheSize, DirtyBytes: 16 << 20})
	rng := rand.New(rand.NewPCG(7, 11))
	data := rand.NewChaCha8([32]byte{1, 2, 3})
	const total = 256 << 20
	sizes := []int64{100 << 20, 64<<20 + 12345, 48<<20 - 4097, 32 << 20}
	sizes = append(sizes, total-(sizes[0]+sizes[1]+sizes[2]+sizes[3]))
	sums := map[string][sha256.Size]byte{}
	buf := make([]byte, 1<<20)
	for i, size := range sizes {
		name := tm.path(fmt.Sprintf("big%d", i))
		content := make([]byte, size)
		data.Read(content)
		flags := os.O_CREATE | os.O_EXCL | os.O_WRONLY
		if i == 2 {
			// Past the kernel's page cache, so that dcache sees the
			// unaligned pieces.
			flags |= syscall.O_DIRECT
		}
		f, err := os.OpenFile(name, flags, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		if i == 2 {
			// Random order, random unaligned pieces.
			type piece struct{ off, n int64 }
			var ps []piece
			for off := int64(0); off < size; {
				n := min(size-off, 1+rng.Int64N(300<<10))
				ps = append(ps, piece{off, n})
				off += n
			}
			rng.Shuffle(len(ps), func(a, b int) { ps[a], ps[b] = ps[b], ps[a] })
			for _, p := range ps {
				if _, err := f.WriteAt(content[p.off:p.off+p.n], p.off); err != nil {
					t.Fatal(err)
				}
			}
		} else {
			for off := int64(0); off < size; off += int64(len(buf)) {
				if _, err := f.WriteAt(content[off:min(size, off+int64(len(buf)))], off); err != nil {
					t.Fatal(err)
				}
			}
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
		sums[name] = sha256.Sum256(content)
	}
	if info := tm.eng.Info(); info.PoolBytes > cacheSize {
		t.Errorf("page pool holds %d bytes, budget %d", info.PoolBytes, cacheSize)
	}

	check := func(when string) {
		t.Helper()
		misses := tm.eng.Stats().ReadMisses.Load()
		for name, want := range sums {
			f, err := os.Open(name)
			if err != nil {
				t.Fatal(err)
			}
			// Drop the kernel's copy, so that the bytes come from dcache.
			if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
				t.Fatal(err)
			}
			h := sha256.New()
			if _, err := io.CopyBuffer(h, struct{ io.Reader }{f}, buf); err != nil {
				t.Fatal(err)
			}
			f.Close()
			if got := h.Sum(nil); !bytes.Equal(got, want[:]) {
				t.Errorf("%s: %s: sha256 %x, want %x", when, name, got, want)
			}
		}
		if tm.eng.Stats().ReadMisses.Load() == misses {
			t.Errorf("%s: no read reached the backend", when)
		}
		if info := tm.eng.Info(); info.PoolBytes > cacheSize {
			t.Errorf("%s: page pool holds %d bytes, budget %d", when, info.PoolBytes, cacheSize)
		}
	}
	check("before remount")
	tm.remount()
	check("after remount")
}

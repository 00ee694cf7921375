package main

// TestCrash kills the dcache daemon with SIGKILL under a writer, again and
// again, and checks after each restart that everything the writer had
// acknowledged is there.
//
// The writer is this test binary run again as a helper process
// (TestHelperProcess). It creates, writes (at random offsets, with holes),
// truncates, renames and unlinks files in two directories of the mount,
// through a descriptor of the mount's root. Before each op it appends the
// op to a journal outside the mount ("I ..."); after the op's fsync (of the
// file, or of the directories a namespace op changed) it appends "A seq"
// and fsyncs the journal. So the journal holds every acknowledged op and at
// most one op in flight, which the kill may have left undone, done, or (a
// write) partly done.
//
// The test keeps the expected tree. After each kill it restarts dcache on
// the same data dir, which must clean up the stale mount and recover; it
// applies the round's acknowledged ops to the expected tree and compares
// every file byte for byte, allowing the op in flight only its possible
// outcomes. The tree read back then becomes the expected tree of the next
// round. Kills land while writing, while destaging, during a clean
// shutdown (SIGTERM then SIGKILL), and during recovery (right after a
// restart, at a random step of it).
//
// DCACHE_CRASH_ROUNDS sets the number of rounds (default 24, half with one
// log replica and half with two); DCACHE_CRASH_DURATION runs rounds for
// that long instead (scripts/crash-test.sh); DCACHE_CRASH_SEED repeats the
// random choices of a run (not its timing).

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

const (
	crashRoundsEnv   = "DCACHE_CRASH_ROUNDS"
	crashDurationEnv = "DCACHE_CRASH_DURATION"
	crashSeedEnv     = "DCACHE_CRASH_SEED"

	// Environment of the writer helper process.
	helperEnv        = "DCACHE_HELPER" // "crash-writer"
	helperMntEnv     = "DCACHE_HELPER_MNT"
	helperJournalEnv = "DCACHE_HELPER_JOURNAL"
	helperSeedEnv    = "DCACHE_HELPER_SEED"
	helperRoundEnv   = "DCACHE_HELPER_ROUND"

	crashMaxFiles = 24
	crashMaxSize  = 4 << 20 // largest file the writer makes
)

// crashDirs are the directories the writer works in; the test makes them.
var crashDirs = []string{"d0", "d1"}

// crashData is the content of a write: n bytes determined by seed.
func crashData(seed uint64, n int) []byte {
	b := make([]byte, n+8)
	r := rand.NewPCG(seed, 0x6463616368652121)
	for i := 0; i < n; i += 8 {
		binary.LittleEndian.PutUint64(b[i:], r.Uint64())
	}
	return b[:n]
}

// crashOp is one op of the writer.
type crashOp struct {
	seq  int
	kind string // create, write, trunc, rename, unlink
	path string
	to   string // rename
	off  int64  // write
	n    int64  // write: length; trunc: new size
	seed uint64 // write: crashData seed
}

func (o crashOp) String() string {
	switch o.kind {
	case "write":
		return fmt.Sprintf("%d write %s %d %d %d", o.seq, o.path, o.off, o.n, o.seed)
	case "trunc":
		return fmt.Sprintf("%d trunc %s %d", o.seq, o.path, o.n)
	case "rename":
		return fmt.Sprintf("%d rename %s %s", o.seq, o.path, o.to)
	}
	return fmt.Sprintf("%d %s %s", o.seq, o.kind, o.path)
}

func parseCrashOp(s string) (crashOp, error) {
	f := strings.Fields(s)
	bad := fmt.Errorf("bad op %q", s)
	if len(f) < 3 {
		return crashOp{}, bad
	}
	seq, err := strconv.Atoi(f[0])
	if err != nil {
		return crashOp{}, bad
	}
	o := crashOp{seq: seq, kind: f[1], path: f[2]}
	num := func(i int) int64 {
		if i >= len(f) {
			err = bad
			return 0
		}
		v, e := strconv.ParseUint(f[i], 10, 64)
		if e != nil {
			err = bad
		}
		return int64(v)
	}
	switch o.kind {
	case "create", "unlink":
	case "write":
		o.off, o.n, o.seed = num(3), num(4), uint64(num(5))
	case "trunc":
		o.n = num(3)
	case "rename":
		if len(f) < 4 {
			return o, bad
		}
		o.to = f[3]
	default:
		return o, bad
	}
	return o, err
}

// --- the writer process ---

func TestHelperProcess(t *testing.T) {
	if os.Getenv(helperEnv) != "crash-writer" {
		return
	}
	seed, _ := strconv.ParseUint(os.Getenv(helperSeedEnv), 10, 64)
	round, _ := strconv.Atoi(os.Getenv(helperRoundEnv))
	os.Exit(crashWriter(os.Getenv(helperMntEnv), os.Getenv(helperJournalEnv), seed, round))
}

// crashWriter runs ops on the mount until one fails (the daemon was
// killed) and returns the exit code.
func crashWriter(mnt, journal string, seed uint64, round int) int {
	fail := func(format string, a ...any) int {
		fmt.Fprintf(os.Stderr, "crash writer: "+format+"\n", a...)
		return 1
	}
	// Everything goes through the root's descriptor, so that a mount
	// detached lazily (SIGTERM with files open) keeps being written, and
	// nothing ever lands in the directory under the mount.
	root, err := unix.Open(mnt, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fail("open %s: %v", mnt, err)
	}
	j, err := os.OpenFile(journal, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return fail("%v", err)
	}
	sizes := map[string]int64{}
	var files []string
	for _, d := range crashDirs {
		ents, err := os.ReadDir(filepath.Join(mnt, d))
		if err != nil {
			return fail("%v", err)
		}
		for _, e := range ents {
			p := d + "/" + e.Name()
			var st unix.Stat_t
			if err := unix.Fstatat(root, p, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
				return fail("stat %s: %v", p, err)
			}
			files = append(files, p)
			sizes[p] = st.Size
		}
	}
	fmt.Println("ready") // the test starts its clock for the kill now
	rng := rand.New(rand.NewPCG(seed, uint64(round)))
	for seq := 1; ; seq++ {
		op := pickCrashOp(rng, files, sizes, round, seq)
		if _, err := fmt.Fprintf(j, "I %s\n", op); err != nil {
			return fail("journal: %v", err)
		}
		if err := doCrashOp(root, op); err != nil {
			return fail("op %s: %v", op, err)
		}
		if _, err := fmt.Fprintf(j, "A %d\n", op.seq); err != nil {
			return fail("journal: %v", err)
		}
		if err := j.Sync(); err != nil {
			return fail("journal: %v", err)
		}
		switch op.kind {
		case "create":
			files = append(files, op.path)
			sizes[op.path] = 0
		case "write":
			sizes[op.path] = max(sizes[op.path], op.off+op.n)
		case "trunc":
			sizes[op.path] = op.n
		case "rename":
			if _, ok := sizes[op.to]; !ok {
				files = append(files, op.to)
			}
			sizes[op.to] = sizes[op.path]
			delete(sizes, op.path)
			files = slices.DeleteFunc(files, func(p string) bool { return p == op.path })
		case "unlink":
			delete(sizes, op.path)
			files = slices.DeleteFunc(files, func(p string) bool { return p == op.path })
		}
	}
}

func pickCrashOp(rng *rand.Rand, files []string, sizes map[string]int64, round, seq int) crashOp {
	op := crashOp{seq: seq}
	newName := func() string {
		return fmt.Sprintf("%s/f%d-%d", crashDirs[rng.IntN(len(crashDirs))], round, seq)
	}
	n := len(files)
	x := rng.IntN(100)
	switch {
	case n < 3 || (x < 12 && n < crashMaxFiles):
		op.kind, op.path = "create", newName()
	case x < 70 || n < 4:
		op.kind, op.path = "write", files[rng.IntN(n)]
		size := sizes[op.path]
		switch y := rng.IntN(10); {
		case y < 6:
			op.n = 1 + rng.Int64N(16<<10)
		case y < 9:
			op.n = 16<<10 + rng.Int64N(240<<10)
		default:
			op.n = 256<<10 + rng.Int64N(768<<10)
		}
		switch y := rng.IntN(10); {
		case y < 5:
			op.off = size
		case y < 8:
			op.off = rng.Int64N(size + 1)
		default:
			op.off = size + rng.Int64N(256<<10) // leaves a hole
		}
		if op.off+op.n > crashMaxSize {
			op.off = rng.Int64N(crashMaxSize - op.n)
		}
		op.seed = rng.Uint64()
	case x < 77:
		op.kind, op.path = "trunc", files[rng.IntN(n)]
		op.n = min(rng.Int64N(sizes[op.path]+128<<10+1), crashMaxSize)
	case x < 90:
		op.kind, op.path = "rename", files[rng.IntN(n)]
		op.to = newName()
		if rng.IntN(3) == 0 { // over an existing file
			if to := files[rng.IntN(n)]; to != op.path {
				op.to = to
			}
		}
	default:
		op.kind, op.path = "unlink", files[rng.IntN(n)]
	}
	return op
}

// retryEINTR runs a system call again while it fails with EINTR, as Go's
// os package does: the runtime's preemption signals interrupt slow system
// calls, and a FUSE request the kernel was told to interrupt may fail so
// before it did anything.
func retryEINTR(f func() error) error {
	for {
		if err := f(); err != unix.EINTR {
			return err
		}
	}
}

// doCrashOp performs op and makes it durable.
func doCrashOp(root int, op crashOp) error {
	openat := func(path string, flags int, mode uint32) (fd int, err error) {
		err = retryEINTR(func() (err error) {
			fd, err = unix.Openat(root, path, flags|unix.O_CLOEXEC, mode)
			return err
		})
		return fd, err
	}
	closeSync := func(fd int, err error) error {
		if err == nil {
			err = retryEINTR(func() error { return unix.Fsync(fd) })
		}
		if cerr := unix.Close(fd); err == nil {
			err = cerr
		}
		return err
	}
	switch op.kind {
	case "create":
		fd, err := openat(op.path, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY, 0o644)
		if err != nil {
			return err
		}
		if err := unix.Close(fd); err != nil {
			return err
		}
		return syncDir(root, filepath.Dir(op.path))
	case "write":
		fd, err := openat(op.path, unix.O_WRONLY, 0)
		if err != nil {
			return err
		}
		b := crashData(op.seed, int(op.n))
		for off := 0; off < len(b) && err == nil; {
			var w int
			err = retryEINTR(func() (err error) {
				w, err = unix.Pwrite(fd, b[off:], op.off+int64(off))
				return err
			})
			off += w
		}
		return closeSync(fd, err)
	case "trunc":
		fd, err := openat(op.path, unix.O_WRONLY, 0)
		if err != nil {
			return err
		}
		return closeSync(fd, retryEINTR(func() error { return unix.Ftruncate(fd, op.n) }))
	case "rename":
		if err := retryEINTR(func() error { return unix.Renameat(root, op.path, root, op.to) }); err != nil {
			return err
		}
		if err := syncDir(root, filepath.Dir(op.path)); err != nil {
			return err
		}
		if filepath.Dir(op.to) != filepath.Dir(op.path) {
			return syncDir(root, filepath.Dir(op.to))
		}
		return nil
	case "unlink":
		if err := retryEINTR(func() error { return unix.Unlinkat(root, op.path, 0) }); err != nil {
			return err
		}
		return syncDir(root, filepath.Dir(op.path))
	}
	return fmt.Errorf("unknown op %q", op.kind)
}

func syncDir(root int, dir string) error {
	var fd int
	err := retryEINTR(func() (err error) {
		fd, err = unix.Openat(root, dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		return err
	})
	if err != nil {
		return err
	}
	err = retryEINTR(func() error { return unix.Fsync(fd) })
	if cerr := unix.Close(fd); err == nil {
		err = cerr
	}
	return err
}

// crashWrites are the writes of every round (acknowledged or in flight),
// so that a difference can be traced to the write whose bytes were found
// and the one whose bytes were expected.
var crashWrites struct {
	sync.Mutex
	ops []crashWrite
}

type crashWrite struct {
	round int
	op    crashOp
}

func noteCrashWrite(round int, op crashOp) {
	if op.kind != "write" {
		return
	}
	crashWrites.Lock()
	crashWrites.ops = append(crashWrites.ops, crashWrite{round, op})
	crashWrites.Unlock()
}

// whoseBytes names the writes (of any file: renames move data) whose data
// at the same file offset starts with b.
func whoseBytes(b []byte, off int) string {
	if len(b) > 64 {
		b = b[:64]
	}
	if len(b) < 8 {
		return "too short to tell"
	}
	crashWrites.Lock()
	defer crashWrites.Unlock()
	var names []string
	for _, w := range crashWrites.ops {
		o := w.op
		if int64(off) < o.off || int64(off+len(b)) > o.off+o.n {
			continue
		}
		d := crashData(o.seed, int(o.n))
		if bytes.Equal(d[off-int(o.off):off-int(o.off)+len(b)], b) {
			names = append(names, fmt.Sprintf("round %d op %s", w.round, o))
		}
	}
	if len(names) == 0 {
		if !slices.ContainsFunc(b, func(c byte) bool { return c != 0 }) {
			return "zeros"
		}
		return "no write's data"
	}
	return strings.Join(names, ", ")
}

// describeDifference says where the first run of differing bytes, from i,
// ends, how many bytes differ in all, and whose data each side holds.
func describeDifference(g, w []byte, i int) string {
	if i >= len(g) || i >= len(w) {
		return ""
	}
	j, n := i, 0
	for j < len(g) && j < len(w) && g[j] != w[j] {
		j++
	}
	for k := i; k < len(g) && k < len(w); k++ {
		if g[k] != w[k] {
			n++
		}
	}
	return fmt.Sprintf("; the run differs up to offset %d, %d bytes differ in all; found: %s; expected: %s",
		j, n, whoseBytes(g[i:j], i), whoseBytes(w[i:j], i))
}

// --- the expected tree ---

// crashTree is the tree of files the mount must hold, by path.
type crashTree map[string][]byte

func (tr crashTree) clone() crashTree {
	c := make(crashTree, len(tr))
	for p, b := range tr {
		c[p] = slices.Clone(b)
	}
	return c
}

// apply changes the tree as op does when it completes.
func (tr crashTree) apply(op crashOp) {
	switch op.kind {
	case "create":
		tr[op.path] = []byte{}
	case "write":
		b := tr[op.path]
		if end := int(op.off + op.n); end > len(b) {
			b = append(b, make([]byte, end-len(b))...)
		}
		copy(b[op.off:], crashData(op.seed, int(op.n)))
		tr[op.path] = b
	case "trunc":
		b := tr[op.path]
		if int(op.n) <= len(b) {
			b = b[:op.n]
		} else {
			b = append(b, make([]byte, int(op.n)-len(b))...)
		}
		tr[op.path] = b
	case "rename":
		tr[op.to] = tr[op.path]
		delete(tr, op.path)
	case "unlink":
		delete(tr, op.path)
	}
}

// diff describes how got differs from want, one line per file; why gives
// the last acknowledged op that touched a path.
func (tr crashTree) diff(got crashTree, why map[string]string) []string {
	var out []string
	for _, p := range slices.Sorted(maps.Keys(tr)) {
		w := tr[p]
		g, ok := got[p]
		switch {
		case !ok:
			out = append(out, fmt.Sprintf("%s: missing (last acknowledged: %s)", p, why[p]))
		case !bytes.Equal(g, w):
			i := 0
			for i < len(g) && i < len(w) && g[i] == w[i] {
				i++
			}
			out = append(out, fmt.Sprintf("%s: %d bytes, want %d; first difference at offset %d (last acknowledged: %s)%s",
				p, len(g), len(w), i, why[p], describeDifference(g, w, i)))
		}
	}
	for _, p := range slices.Sorted(maps.Keys(got)) {
		if _, ok := tr[p]; !ok {
			out = append(out, fmt.Sprintf("%s: exists with %d bytes, want none (last acknowledged: %s)", p, len(got[p]), why[p]))
		}
	}
	return out
}

// equalExcept reports whether tr and got hold the same files, not looking
// at path p.
func (tr crashTree) equalExcept(got crashTree, p string) bool {
	for q, b := range tr {
		if q == p {
			continue
		}
		if g, ok := got[q]; !ok || !bytes.Equal(g, b) {
			return false
		}
	}
	for q := range got {
		if _, ok := tr[q]; !ok && q != p {
			return false
		}
	}
	return true
}

// writeOutcome checks a file that an unacknowledged write may have changed
// in part: the size is between the old one and the new one, and every byte
// is either what it was (zero past the old end) or what the write put
// there. It says how much of the write is there.
func writeOutcome(old, got []byte, op crashOp) (string, error) {
	full := crashTree{"f": slices.Clone(old)}
	full.apply(crashOp{kind: "write", path: "f", off: op.off, n: op.n, seed: op.seed})
	nw := full["f"]
	if len(got) < len(old) || len(got) > len(nw) {
		return "", fmt.Errorf("%d bytes, want between %d and %d", len(got), len(old), len(nw))
	}
	for i, g := range got {
		o := byte(0)
		if i < len(old) {
			o = old[i]
		}
		if g != o && g != nw[i] {
			return "", fmt.Errorf("byte %d is %#x: neither the old %#x nor the written %#x", i, g, o, nw[i])
		}
	}
	switch {
	case bytes.Equal(got, old):
		return "not done", nil
	case bytes.Equal(got, nw):
		return "done", nil
	}
	return "partly done", nil
}

// checkCrashTree compares the tree read back with the expected one, allowing
// the op in flight (pending, may be nil) its possible outcomes. It returns
// the problems, and what became of the pending op.
func checkCrashTree(want, got crashTree, pending *crashOp, why map[string]string) ([]string, string) {
	if pending == nil {
		return want.diff(got, why), ""
	}
	if pending.kind == "write" {
		if _, ok := want[pending.path]; !ok {
			return []string{fmt.Sprintf("journal: pending %s on a file that does not exist", pending)}, ""
		}
		g, ok := got[pending.path]
		if !ok || !want.equalExcept(got, pending.path) {
			return want.diff(got, why), ""
		}
		outcome, err := writeOutcome(want[pending.path], g, *pending)
		if err != nil {
			return []string{fmt.Sprintf("%s: %v (pending: %s; before it: %s)", pending.path, err, pending, why[pending.path])}, ""
		}
		return nil, outcome
	}
	if len(want.diff(got, why)) == 0 {
		return nil, "not done"
	}
	done := want.clone()
	done.apply(*pending)
	if len(done.diff(got, why)) == 0 {
		return nil, "done"
	}
	return want.diff(got, why), ""
}

// readCrashTree reads the writer's directories through the mount.
func readCrashTree(mnt string) (crashTree, error) {
	tr := crashTree{}
	for _, d := range crashDirs {
		ents, err := os.ReadDir(filepath.Join(mnt, d))
		if err != nil {
			return nil, err
		}
		for _, e := range ents {
			p := d + "/" + e.Name()
			if !e.Type().IsRegular() {
				return nil, fmt.Errorf("%s is a %v, the writer makes only files", p, e.Type())
			}
			b, err := os.ReadFile(filepath.Join(mnt, p))
			if err != nil {
				return nil, err
			}
			tr[p] = b
		}
	}
	return tr, nil
}

// readJournal returns the acknowledged ops of a journal in order and the
// op in flight when the writer stopped, if any.
func readJournal(path string) (acked []crashOp, pending *crashOp, err error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, err
	}
	var intents []crashOp
	ackd := map[int]bool{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "I "):
			op, err := parseCrashOp(line[2:])
			if err != nil {
				return nil, nil, fmt.Errorf("%s: %v", path, err)
			}
			intents = append(intents, op)
		case strings.HasPrefix(line, "A "):
			seq, err := strconv.Atoi(line[2:])
			if err != nil {
				return nil, nil, fmt.Errorf("%s: bad line %q", path, line)
			}
			ackd[seq] = true
		default:
			return nil, nil, fmt.Errorf("%s: bad line %q", path, line)
		}
	}
	for i, op := range intents {
		switch {
		case ackd[op.seq]:
			acked = append(acked, op)
		case i == len(intents)-1:
			pending = &intents[i]
		default:
			return nil, nil, fmt.Errorf("%s: op %s was never acknowledged but the writer went on", path, op)
		}
	}
	return acked, pending, nil
}

// --- the test ---

// crashWriterProc is a running writer.
type crashWriterProc struct {
	cmd    *exec.Cmd
	stderr bytes.Buffer
	ready  chan struct{} // closed when the writer is about to start writing
	done   chan struct{} // closed when it ended
}

func startCrashWriter(t *testing.T, mnt, journal string, seed uint64, round int) *crashWriterProc {
	t.Helper()
	w := &crashWriterProc{ready: make(chan struct{}), done: make(chan struct{})}
	w.cmd = exec.Command(os.Args[0], "-test.run=^TestHelperProcess$")
	w.cmd.Env = childEnv(helperEnv+"=crash-writer", helperMntEnv+"="+mnt, helperJournalEnv+"="+journal,
		helperSeedEnv+"="+strconv.FormatUint(seed, 10), helperRoundEnv+"="+strconv.Itoa(round))
	w.cmd.Stderr = &w.stderr
	out, err := w.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := w.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if sc.Text() == "ready" {
				close(w.ready)
				break
			}
		}
		for sc.Scan() {
		}
		w.cmd.Wait()
		close(w.done)
	}()
	t.Cleanup(func() {
		w.cmd.Process.Kill()
		<-w.done
	})
	return w
}

// crashCounts adds up what the rounds checked.
type crashCounts struct {
	rounds, recoveryKills, termKills, stuck, ops, creates, writes, truncs, renames, unlinks int
	writeBytes, replayed                                                                    int64
	pending                                                                                 map[string]int
}

func (c *crashCounts) String() string {
	return fmt.Sprintf("%d rounds, %d kills during recovery, %d during shutdown, %d daemons freed from their own hung mount; "+
		"%d acknowledged ops verified (%d writes of %s, %d creates, %d truncates, %d renames, %d unlinks); "+
		"%d log records replayed; ops in flight: %v",
		c.rounds, c.recoveryKills, c.termKills, c.stuck, c.ops, c.writes, mib(c.writeBytes), c.creates, c.truncs, c.renames, c.unlinks, c.replayed, c.pending)
}

func mib(n int64) string { return fmt.Sprintf("%.1fMiB", float64(n)/(1<<20)) }

// recoverySteps are log lines after which a restarted daemon is killed:
// one of them, chosen at random, or a random delay after the start.
var recoverySteps = []*regexp.Regexp{
	regexp.MustCompile(`state=create`),
	regexp.MustCompile(`state=init`),
	regexp.MustCompile(`msg="backend open"`),
	regexp.MustCompile(`msg="log opened"`),
	regexp.MustCompile(`state=recover`),
	regexp.MustCompile(`msg="log replayed"`),
	regexp.MustCompile(`msg=recovered`),
	nil,
}

func TestCrash(t *testing.T) {
	requireFUSE(t)
	rounds, duration := 24, time.Duration(0)
	if testing.Short() {
		rounds = 6
	}
	if v := os.Getenv(crashRoundsEnv); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("%s=%q: want a number of rounds", crashRoundsEnv, v)
		}
		rounds = n
	}
	if v := os.Getenv(crashDurationEnv); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			t.Fatalf("%s=%q: want a duration such as 30m", crashDurationEnv, v)
		}
		duration = d
	}
	seed := crashSeed(t)
	rng := rand.New(rand.NewPCG(seed, 0))
	start := time.Now()
	counts := &crashCounts{pending: map[string]int{}}
	for seq := 0; ; seq++ {
		n := rounds / 2
		if seq == 1 {
			n = rounds - rounds/2
		}
		if duration > 0 {
			n = 40 // a fresh data dir every 40 rounds bounds the disk used
		}
		two := seq%2 == 1
		name := fmt.Sprintf("%d-one-replica", seq)
		if two {
			name = fmt.Sprintf("%d-two-replicas", seq)
		}
		ok := t.Run(name, func(t *testing.T) {
			crashSequence(t, rng, two, false, n, start, duration, counts)
		})
		if !ok {
			break
		}
		if duration > 0 && time.Since(start) >= duration || duration == 0 && seq == 1 {
			break
		}
	}
	t.Logf("crash test: %s in %v", counts, time.Since(start).Round(time.Second))
}

// crashSeed returns the seed of a crash test's choices: crashSeedEnv, or
// the clock. It is logged, so that a failing run can be repeated.
func crashSeed(t *testing.T) uint64 {
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv(crashSeedEnv); v != "" {
		var err error
		if seed, err = strconv.ParseUint(v, 10, 64); err != nil {
			t.Fatalf("%s=%q: want a number", crashSeedEnv, v)
		}
	}
	t.Logf("seed %d (%s=%d repeats the choices, not the timing)", seed, crashSeedEnv, seed)
	return seed
}

// TestCrashDevice is TestCrash with the backend on a device file: kills
// during writes and during recovery, then the tree is checked.
func TestCrashDevice(t *testing.T) {
	requireFUSE(t)
	seed := crashSeed(t)
	counts := &crashCounts{pending: map[string]int{}}
	crashSequence(t, rand.New(rand.NewPCG(seed, 0)), false, true, 6, time.Now(), 0, counts)
	t.Logf("crash test on a device backend: %s", counts)
}

// crashSequence runs rounds on one fresh data dir; device puts the backend
// on a device file instead of a directory.
func crashSequence(t *testing.T, rng *rand.Rand, two, device bool, rounds int, start time.Time, duration time.Duration, counts *crashCounts) {
	s := newSite(t)
	replicas := filepath.Join(s.data, "log") + ":ssd:64MiB"
	if two {
		replicas = filepath.Join(s.data, "log-a") + ":ssd:64MiB," + filepath.Join(s.data, "log-b") + ":aep:64MiB"
	}
	s.flags = smallFlags(s.data, replicas)
	if device {
		dev := filepath.Join(s.dir, "backend.img")
		if err := os.WriteFile(dev, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(dev, 512<<20); err != nil {
			t.Fatal(err)
		}
		s.flags = append(s.flags, "--backend.type", "device", "--backend.path", dev)
	}
	// Per start: how the log syncs, how long dirty data may wait, the
	// quorum; a kill may come in any of these settings.
	startFlags := func() []string {
		f := []string{"--flush.max_dirty_age", []string{"100ms", "1s", "30s"}[rng.IntN(3)]}
		switch x := rng.IntN(20); {
		case x < 3:
			f = append(f, "--log.sync", "always")
		case x < 6:
			f = append(f, "--log.sync", "interval", "--log.sync_interval", "20ms")
		}
		if two {
			f = append(f, "--log.write_quorum", []string{"all", "majority", "one"}[rng.IntN(3)])
		}
		return f
	}
	settings := func(f []string) string {
		return strings.ReplaceAll(strings.Join(f, " "), "--", "")
	}
	flagsNow := startFlags()
	d := s.start(flagsNow...)
	d.waitActive(t)
	for _, sub := range crashDirs {
		if err := os.Mkdir(filepath.Join(s.mnt, sub), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := syncDir(unix.AT_FDCWD, s.mnt); err != nil {
		t.Fatal(err)
	}
	want := crashTree{}
	why := map[string]string{}

	for r := 0; r < rounds; r++ {
		if duration > 0 && time.Since(start) >= duration {
			break
		}
		journal := filepath.Join(s.dir, fmt.Sprintf("journal-%d", r))
		w := startCrashWriter(t, s.mnt, journal, rng.Uint64(), r)
		term := rng.IntN(5) == 0
		delay := time.Duration(rng.Int64N(int64(1500 * time.Millisecond)))
		select {
		case <-w.ready:
		case <-w.done:
		}
		select {
		case <-w.done:
			t.Fatalf("round %d: the writer stopped while dcache was running:\n%s\ndcache log:\n%s", r, w.stderr.String(), d.log())
		case <-time.After(delay):
		}
		how := fmt.Sprintf("[%s] SIGKILL after %v", settings(flagsNow), delay.Round(time.Millisecond))
		if term {
			// A clean shutdown has begun (the writer keeps the mount
			// busy, so it is detached lazily and the daemon drains).
			d.signal(syscall.SIGTERM)
			grace := time.Duration(rng.Int64N(int64(300 * time.Millisecond)))
			time.Sleep(grace)
			how = fmt.Sprintf("[%s] SIGTERM after %v, SIGKILL %v later", settings(flagsNow), delay.Round(time.Millisecond), grace.Round(time.Millisecond))
			counts.termKills++
		}
		d.kill()
		killed := []*daemon{d}
		select {
		case <-w.done:
		case <-time.After(time.Minute):
			w.cmd.Process.Kill()
			<-w.done
			t.Fatalf("round %d: the writer did not stop within a minute of the daemon's death:\n%s", r, w.stderr.String())
		}

		// Kill again during recovery, at a random step.
		kills := 0
		for rng.IntN(5) < 2 && kills < 3 {
			d = s.start(startFlags()...)
			step := recoverySteps[rng.IntN(len(recoverySteps))]
			if step != nil {
				d.waitLine(step, time.Minute)
				time.Sleep(time.Duration(rng.Int64N(int64(2 * time.Millisecond))))
			} else {
				time.Sleep(time.Duration(rng.Int64N(int64(40 * time.Millisecond))))
			}
			d.kill()
			killed = append(killed, d)
			kills++
			counts.recoveryKills++
			how += fmt.Sprintf("; killed restart %d after %v", kills, stepName(step))
		}

		// Restart for good: a stale mount must be cleaned up. A daemon
		// killed while mounting may still be a zombie with a thread
		// stuck on its own mount, the connection hung (statfs would
		// hang too); the restart must abort that connection and free it.
		stale := mountCount(s.mnt) > 0
		stuck := 0
		for _, k := range killed {
			// A killed process takes a moment to exit; one that has not
			// after a second is stuck.
			if _, ok := k.wait(time.Second); !ok {
				stuck++
			}
		}
		if stale && stuck == 0 {
			var st syscall.Statfs_t
			if err := syscall.Statfs(s.mnt, &st); !errors.Is(err, syscall.ENOTCONN) {
				t.Fatalf("round %d: statfs of the dead daemon's mount: %v, want ENOTCONN", r, err)
			}
		}
		flagsNow = startFlags()
		d = s.start(flagsNow...)
		d.waitActive(t)
		if stale && d.waitLine(regexp.MustCompile(`found a stale mount`), 0) == "" {
			t.Errorf("round %d: no log line about the stale mount it cleaned up:\n%s", r, d.log())
		}
		if n := mountCount(s.mnt); n != 1 {
			t.Fatalf("round %d: %d mounts on %s, want 1", r, n, s.mnt)
		}
		for _, k := range killed {
			if _, ok := k.wait(time.Minute); !ok {
				t.Fatalf("round %d: killed dcache pid %d has not exited a minute after the next mount:\n%s", r, k.pid, k.log())
			}
		}
		if stuck > 0 {
			counts.stuck += stuck
			how += fmt.Sprintf("; %d killed daemon(s) stuck on their own mount until the restart aborted it", stuck)
		}

		// Everything acknowledged is there.
		acked, pending, err := readJournal(journal)
		if err != nil {
			t.Fatal(err)
		}
		if pending != nil {
			noteCrashWrite(r, *pending)
		}
		for _, op := range acked {
			noteCrashWrite(r, op)
			want.apply(op)
			desc := fmt.Sprintf("round %d op %s", r, op)
			why[op.path] = desc
			if op.kind == "rename" {
				why[op.to] = desc
			}
			counts.ops++
			switch op.kind {
			case "create":
				counts.creates++
			case "write":
				counts.writes++
				counts.writeBytes += op.n
			case "trunc":
				counts.truncs++
			case "rename":
				counts.renames++
			case "unlink":
				counts.unlinks++
			}
		}
		got, err := readCrashTree(s.mnt)
		if err != nil {
			t.Fatalf("round %d: read back: %v\ndcache log:\n%s", r, err, d.log())
		}
		problems, outcome := checkCrashTree(want, got, pending, why)
		if len(problems) > 0 {
			t.Fatalf("round %d (%s): %d acknowledged ops, in flight: %v; the recovered tree differs:\n  %s\ndcache log of the recovery:\n%s",
				r, how, len(acked), pending, strings.Join(problems, "\n  "), d.log())
		}
		var total int64
		for _, b := range got {
			total += int64(len(b))
		}
		rep := replayed(d.logLines())
		counts.replayed += int64(max(rep, 0))
		counts.rounds++
		inflight := "none"
		if pending != nil {
			inflight = pending.kind + " " + outcome
			counts.pending[inflight]++
		}
		t.Logf("round %d: %s; %d acknowledged ops, in flight: %s; replayed %d records; verified %d files, %s",
			r, how, len(acked), inflight, rep, len(got), mib(total))
		// What was read back is the tree from now on (it holds the
		// outcome of the op in flight).
		want = got
	}

	// A clean stop leaves an empty log, and the tree as it was.
	d.signal(syscall.SIGTERM)
	if code, ok := d.wait(2 * time.Minute); !ok || code != 0 {
		t.Fatalf("clean stop: exit %d (ended %v); log:\n%s", code, ok, d.log())
	}
	d = s.start()
	d.waitActive(t)
	if n := replayed(d.logLines()); n != 0 {
		t.Errorf("the mount after a clean stop replayed %d records, want 0", n)
	}
	got, err := readCrashTree(s.mnt)
	if err != nil {
		t.Fatal(err)
	}
	if problems := want.diff(got, why); len(problems) > 0 {
		t.Errorf("after a clean stop and remount:\n  %s", strings.Join(problems, "\n  "))
	}
	d.signal(syscall.SIGTERM)
	if code, _ := d.wait(2 * time.Minute); code != 0 {
		t.Fatalf("clean stop: exit %d; log:\n%s", code, d.log())
	}
}

func stepName(re *regexp.Regexp) string {
	if re == nil {
		return "a random delay"
	}
	return re.String()
}

package cachelayer

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/tidwall/btree"

	"github.com/dcache/dcache/backend"
	"github.com/dcache/dcache/internal/inflight"
)

// SyncMode says when logged ops become durable without an explicit fsync.
type SyncMode int

const (
	SyncOnFsync  SyncMode = iota // fsync, fdatasync, O_SYNC and O_DSYNC writes
	SyncAlways                   // every op waits for the log
	SyncInterval                 // and, in the background, every Config.SyncInterval
)

func (m SyncMode) String() string {
	switch m {
	case SyncOnFsync:
		return "fsync"
	case SyncAlways:
		return "always"
	case SyncInterval:
		return "interval"
	}
	return fmt.Sprintf("SyncMode(%d)", int(m))
}

// Config is the engine's part of the configuration. Zero values get defaults.
type Config struct {
	CacheSize     int64         // page pool bytes (default 1 GiB)
	DirtyBytes    int64         // dirty budget (default half the cache)
	HighWatermark float64       // fraction of DirtyBytes that starts destage (default 0.5)
	LowWatermark  float64       // fraction at which a destage pass may stop (default 0.3)
	MaxDirtyAge   time.Duration // no dirty byte older than this (default 30 s)
	// ThrottleWatermark is the fraction of DirtyBytes above which writers
	// are delayed in proportion to how far above they are (default 0.9);
	// at 1 they wait for room.
	ThrottleWatermark float64
	// SequentialCutoff: in write-back, a sequential stream of one object
	// longer than this is destaged at once and not kept as hot clean data
	// (0: never).
	SequentialCutoff int64
	// WritebackJobs is how many destage batches (of up to 4 MiB) are in
	// flight at once: the copy of the next batches out of the cache
	// overlaps the backend appends of the one before (default 4; 1: copy
	// and append in turn).
	WritebackJobs int
	Mode          Mode     // initial cache mode (default write-back)
	Eviction      Eviction // clean-page eviction order (default LRU)
	Sync          SyncMode
	SyncInterval  time.Duration // for SyncInterval (default 5 s)
	RootUid       uint32        // owner of a new filesystem's root directory
	RootGid       uint32
	RootMode      uint32 // permission bits of a new root (default 0755)
	// CleanThreshold is the live fraction below which a backend segment
	// is cleaned (its live extents rewritten, then the segment freed); in
	// [0, 1). Unlike the fields above, zero keeps its meaning: no cleaning.
	CleanThreshold float64
	Quotas         []DirQuota // directory quotas (quota.go)
	// Prefetch reads ahead from the backend (prefetch.go); the zero
	// value reads only what is asked.
	Prefetch          PrefetchPolicy
	PrefetchMaxWindow int64 // largest sequential window (default 8 MiB)
}

func (c *Config) setDefaults() {
	if c.CacheSize == 0 {
		c.CacheSize = 1 << 30
	}
	if c.DirtyBytes == 0 {
		c.DirtyBytes = c.CacheSize / 2
	}
	if c.HighWatermark == 0 {
		c.HighWatermark = 0.5
	}
	if c.LowWatermark == 0 {
		c.LowWatermark = 0.3
	}
	if c.MaxDirtyAge == 0 {
		c.MaxDirtyAge = 30 * time.Second
	}
	if c.ThrottleWatermark == 0 {
		c.ThrottleWatermark = 0.9
	}
	if c.WritebackJobs == 0 {
		c.WritebackJobs = 4
	}
	if c.SyncInterval == 0 {
		c.SyncInterval = 5 * time.Second
	}
	if c.RootMode == 0 {
		c.RootMode = 0o755
	}
	if c.PrefetchMaxWindow == 0 {
		c.PrefetchMaxWindow = 8 << 20
	}
}

func (c *Config) validate() error {
	var errs []error
	if c.CacheSize < 64*BlockSize {
		errs = append(errs, fmt.Errorf("cache size %d is below the minimum %d", c.CacheSize, 64*BlockSize))
	}
	if c.DirtyBytes < 16*BlockSize || c.DirtyBytes > c.CacheSize {
		errs = append(errs, fmt.Errorf("dirty budget %d must be between %d and the cache size %d", c.DirtyBytes, 16*BlockSize, c.CacheSize))
	}
	if c.LowWatermark < 0 || c.HighWatermark <= c.LowWatermark || c.HighWatermark > 1 {
		errs = append(errs, fmt.Errorf("watermarks low %v high %v: need 0 <= low < high <= 1", c.LowWatermark, c.HighWatermark))
	}
	if c.ThrottleWatermark <= 0 || c.ThrottleWatermark > 1 {
		errs = append(errs, fmt.Errorf("throttle watermark %v: need 0 < throttle <= 1", c.ThrottleWatermark))
	}
	if c.SequentialCutoff < 0 {
		errs = append(errs, fmt.Errorf("sequential cutoff %d is negative", c.SequentialCutoff))
	}
	if c.WritebackJobs < 1 || c.WritebackJobs > maxWritebackJobs {
		errs = append(errs, fmt.Errorf("writeback jobs %d: need 1..%d", c.WritebackJobs, maxWritebackJobs))
	}
	if _, err := ParseMode(c.Mode.String()); err != nil {
		errs = append(errs, err)
	}
	if c.Eviction != EvictLRU && c.Eviction != EvictFIFO {
		errs = append(errs, fmt.Errorf("eviction %v is unknown", c.Eviction))
	}
	if !(c.CleanThreshold >= 0 && c.CleanThreshold < 1) {
		errs = append(errs, fmt.Errorf("clean threshold %v: need 0 <= threshold < 1", c.CleanThreshold))
	}
	if c.PrefetchMaxWindow < BlockSize {
		errs = append(errs, fmt.Errorf("prefetch window %d is below one block", c.PrefetchMaxWindow))
	}
	if err := validateQuotas(c.Quotas); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// LogRecord is one op as the engine hands it to the write-ahead log.
type LogRecord struct {
	Type    uint8
	Flags   uint8
	Obj     uint64
	Off     uint64
	Len     uint32
	Payload []byte
}

// WALEntry is a reservation in the write-ahead log.
type WALEntry any

// WAL is the write-ahead log as the engine uses it. logarea provides the
// real one; a replicated log across nodes can slot in behind the same calls.
type WAL interface {
	// Reserve prepares rec (compression, checksums) and waits for room.
	// Called without the engine lock.
	Reserve(ctx context.Context, rec LogRecord) (WALEntry, error)
	// ReserveSpace waits for room for one record of up to maxPayload payload
	// bytes, whose content is given to Commit. Called without the engine lock.
	ReserveSpace(ctx context.Context, maxPayload int) (WALEntry, error)
	// Commit appends a reserved entry (with rec, for ReserveSpace entries)
	// and returns its LSN. Called under the engine lock; never waits for I/O.
	Commit(e WALEntry, rec *LogRecord) (uint64, error)
	// Cancel gives back a reservation that will not be committed.
	Cancel(e WALEntry)
	// Sync waits until every record up to lsn is durable.
	Sync(ctx context.Context, lsn uint64) error
	// Trim says records up to lsn are no longer needed.
	Trim(lsn uint64) error
	// LastLSN is the last committed LSN.
	LastLSN() uint64
	// Replay calls fn for each record after lsn, in order; before any Reserve.
	Replay(after uint64, fn func(lsn uint64, rec LogRecord) error) (uint64, error)
	// Usage is the bytes in use and the capacity of the log.
	Usage() (used, capacity int64)
}

// Engine is one mounted filesystem's state. Methods are safe for concurrent use.
type Engine struct {
	cfg Config
	be  *backend.Store
	wal WAL
	log *logrus.Entry

	destageMu sync.Mutex // one destage round at a time; before mu
	stageBufs [][]byte   // destage's copies of pages, one per writeback job (under destageMu)
	afterCopy func()     // tests only: runs between a round's copy and its repointing
	clean     cleanState // segment cleaning (clean.go)

	mu          sync.Mutex
	st          meta
	pages       *btree.BTreeG[pageRef]  // (ino, blk) -> cached page
	dirtyQ      *btree.BTreeG[dirtyKey] // dirty pages by the LSN that made them dirty
	pool        *pool
	refs        map[Ino]int32 // references held by the filesystem layer (kernel lookups, open files)
	changed     changeSet     // metadata changed since the last persisted checkpoint or delta
	lastLSN     uint64        // last LSN applied
	reserved    int           // pages reserved by writers between throttle and apply
	roomCh      chan struct{} // closed (and replaced) when dirty pages are cleaned or pages freed
	closed      bool
	lastErr     error // last destage error (cleared by a successful round)
	lastPersist time.Time
	metaSeq     uint64
	deltaSize   int64             // bytes of deltas since the last full checkpoint
	cpSize      int64             // bytes of the last full checkpoint
	streams     map[Ino]streamPos // write-back sequential stream detection
	streamDirty int               // dirty pages of sequential streams (dirtyKey.Stream)
	failing     bool              // destage is failing (one Error log per episode)
	draining    bool              // dirty data reached the high watermark and is not yet down to the low one

	mode        atomic.Int32  // the cache Mode
	backendLSN  atomic.Uint64 // every op up to this LSN has its effects in the backend
	destageRate atomic.Int64  // recent destage throughput, bytes per second (0: not measured yet)
	quota       quotaState
	pf          prefetcher

	kick    chan struct{}
	stop    chan struct{}
	done    sync.WaitGroup
	started time.Time

	stats Stats

	// objLogs tracks objects with records in the log (under mu).
	objLogs map[Ino]*objLog
	// lastObjIno and lastObjLog are the entry noteLogLocked touched last
	// (nil when none or deleted).
	lastObjIno Ino
	lastObjLog *objLog
	// The running destage round, for Progress: its start (unix ns, 0 when
	// none), the bytes it copies out and those already appended.
	roundStart, roundTotal, roundDone atomic.Int64
}

// dirtyKey orders dirty pages by the LSN of the op that made them dirty.
type dirtyKey struct {
	LSN uint64
	Ino Ino
	Blk uint64
	// Stream marks a page written by a sequential stream past the
	// cutoff: destaged at once. Not part of the order.
	Stream bool
}

func dirtyKeyLess(a, b dirtyKey) bool {
	if a.LSN != b.LSN {
		return a.LSN < b.LSN
	}
	if a.Ino != b.Ino {
		return a.Ino < b.Ino
	}
	return a.Blk < b.Blk
}

// Stats are the engine's counters.
type Stats struct {
	BytesWritten   atomic.Int64
	BytesRead      atomic.Int64
	ReadHits       atomic.Int64 // blocks served from the cache
	ReadMisses     atomic.Int64 // blocks read from the backend
	Evictions      atomic.Int64
	DestageRounds  atomic.Int64
	DestageBytes   atomic.Int64
	DestageErrors  atomic.Int64
	Checkpoints    atomic.Int64
	Deltas         atomic.Int64
	ThrottleWaits  atomic.Int64 // writes delayed above the throttle watermark or waiting for room
	ThrottleWaitNs atomic.Int64
	ThroughWrites  atomic.Int64 // writes that waited for the backend (write-through, write-around)
	StreamBytes    atomic.Int64 // write-back bytes of sequential streams past the cutoff
	ModeSwitches   atomic.Int64
	Ops            [len(opNames)]atomic.Int64

	PrefetchBytes   atomic.Int64 // bytes read ahead from the backend into pages
	PrefetchHits    atomic.Int64 // prefetched pages read afterwards
	PrefetchWaste   atomic.Int64 // prefetched pages evicted or dropped unread
	PrefetchDropped atomic.Int64 // prefetch jobs dropped (queue full) or abandoned (pool short)
}

// Snapshot of the cache's occupancy.
type CacheInfo struct {
	PoolBytes     int64
	DirtyBytes    int64
	CleanBytes    int64
	DirtyBudget   int64
	Objects       int
	OldestDirtyAt time.Time // zero when nothing is dirty
	LastLSN       uint64
	LastError     error // the last destage failure, nil once a round succeeds
	Mode          Mode
}

// Info reports the cache's occupancy.
func (e *Engine) Info() CacheInfo {
	e.mu.Lock()
	defer e.mu.Unlock()
	ci := CacheInfo{
		PoolBytes:   int64(e.pool.pages()) * BlockSize,
		DirtyBytes:  int64(e.pool.nDirty) * BlockSize,
		CleanBytes:  int64(e.pool.nClean) * BlockSize,
		DirtyBudget: e.cfg.DirtyBytes,
		Objects:     e.st.inodes.Len(),
		LastLSN:     e.lastLSN,
		LastError:   e.lastErr,
		Mode:        e.Mode(),
	}
	if k, ok := e.dirtyQ.Min(); ok {
		ci.OldestDirtyAt = time.Unix(0, e.pool.meta[e.pageOfLocked(k.Ino, k.Blk)].dirtyAt)
	}
	return ci
}

// Stats returns the live counters.
func (e *Engine) Stats() *Stats { return &e.stats }

// errNeedFetch asks the op loop to read these blocks into the cache (outside
// the lock) and try again.
type errNeedFetch struct {
	ino  Ino
	blks []uint64
}

func (*errNeedFetch) Error() string { return "cachelayer: blocks must be fetched" }

// errNeedPages asks the op loop to wait until n pages can be allocated.
type errNeedPages struct{ n int }

func (*errNeedPages) Error() string { return "cachelayer: waiting for free pages" }

// maxMetaPayload bounds the payload of a namespace op's record.
const maxMetaPayload = 16 << 10

// run executes one op: build computes the op's mutations from the current
// state under e.mu without changing anything; run then commits them to the
// log and applies them. rec, when not nil, is a record prepared outside the
// lock (data writes); otherwise the record is encoded from the txn.
func (e *Engine) run(ctx context.Context, space int, rec *LogRecord, build func() (*txn, error)) (uint64, error) {
	var ent WALEntry
	var err error
	inflight.SetStage(ctx, inflight.StageLog)
	if rec != nil {
		ent, err = e.wal.Reserve(ctx, *rec)
	} else {
		ent, err = e.wal.ReserveSpace(ctx, space)
	}
	if err != nil {
		return 0, e.logErr(err)
	}
	inflight.SetStage(ctx, inflight.StageCache)
	committed := false
	defer func() {
		if !committed {
			e.wal.Cancel(ent)
		}
	}()
	for {
		e.mu.Lock()
		if e.closed {
			e.mu.Unlock()
			return 0, ErrClosed
		}
		t, err := build()
		if err != nil {
			e.mu.Unlock()
			var nf *errNeedFetch
			var np *errNeedPages
			switch {
			case errors.As(err, &nf):
				if err := e.fetchBlocks(ctx, nf.ino, nf.blks); err != nil {
					return 0, err
				}
				continue
			case errors.As(err, &np):
				if err := e.waitPages(ctx, np.n); err != nil {
					return 0, err
				}
				continue
			}
			return 0, err
		}
		if len(t.muts) == 0 {
			e.mu.Unlock()
			return 0, nil // nothing changes (a rename onto itself)
		}
		var lrec *LogRecord
		if rec == nil {
			var payload []byte
			for i := range t.muts {
				payload = appendMutation(payload, &t.muts[i])
			}
			lrec = &LogRecord{Type: uint8(t.op), Flags: t.flags, Obj: uint64(t.obj), Off: t.off, Len: t.n, Payload: payload}
		}
		lsn, err := e.wal.Commit(ent, lrec)
		if err != nil {
			e.mu.Unlock()
			return 0, e.logErr(err)
		}
		committed = true
		e.applyLocked(t.muts, lsn)
		if rec != nil {
			e.noteLogLocked(Ino(rec.Obj), lsn)
		} else {
			e.noteLogLocked(t.obj, lsn)
		}
		for _, ino := range t.refs {
			e.refs[ino]++
		}
		e.mu.Unlock()
		e.stats.Ops[t.op].Add(1)
		if e.cfg.Sync == SyncAlways {
			// The op has taken effect: an interrupted request must not
			// report it failed (the caller would retry a done create or
			// rename), so the wait for durability ignores cancellation.
			inflight.SetStage(ctx, inflight.StageLog)
			if err := e.wal.Sync(context.WithoutCancel(ctx), lsn); err != nil {
				return lsn, e.logErr(err)
			}
		}
		return lsn, nil
	}
}

// logErr wraps a log failure so the filesystem layer reports EIO, keeping
// context cancellation (an interrupted request) as it is.
func (e *Engine) logErr(err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return fmt.Errorf("%w: %w", ErrLog, err)
}

// Sync makes every op acknowledged so far durable in the log (fsync,
// fdatasync, syncfs).
func (e *Engine) Sync(ctx context.Context) error {
	e.mu.Lock()
	lsn := e.lastLSN
	e.mu.Unlock()
	if lsn == 0 {
		return nil
	}
	inflight.SetStage(ctx, inflight.StageLog)
	if err := e.wal.Sync(ctx, lsn); err != nil {
		return e.logErr(err)
	}
	return nil
}

// now is the time stamped on ops.
func now() Time { return TimeOf(time.Now()) }

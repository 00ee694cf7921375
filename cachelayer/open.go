package cachelayer

import (
	"context"
	"fmt"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/tidwall/btree"

	"github.com/dcache/dcache/backend"
)

// Open starts the engine on a backend and a log: it loads the newest
// metadata image, replays the log after it, deletes objects that were
// unlinked but still open when the previous run stopped, destages what the
// replay dirtied and persists a fresh image, so that the log is empty when
// Open returns. A backend without metadata gets a new, empty filesystem.
func Open(cfg Config, be *backend.Store, wal WAL, log *logrus.Entry) (*Engine, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("cachelayer: %w", err)
	}
	p, err := newPool(cfg.CacheSize)
	if err != nil {
		return nil, err
	}
	e := &Engine{
		cfg:     cfg,
		be:      be,
		wal:     wal,
		log:     log,
		pages:   btree.NewBTreeGOptions(pageRefLess, treeOpts),
		dirtyQ:  btree.NewBTreeGOptions(dirtyKeyLess, treeOpts),
		pool:    p,
		refs:    make(map[Ino]int32),
		objLogs: make(map[Ino]*objLog),
		changed: newChangeSet(),
		streams: make(map[Ino]streamPos),
		roomCh:  make(chan struct{}),
		kick:    make(chan struct{}, 1),
		stop:    make(chan struct{}),
		started: time.Now(),
	}
	p.fifo = cfg.Eviction == EvictFIFO
	e.mode.Store(int32(cfg.Mode))
	if err := e.recover(); err != nil {
		p.close()
		return nil, err
	}
	e.mu.Lock()
	e.initQuotasLocked()
	e.mu.Unlock()
	e.startPrefetch()
	e.lastPersist = time.Now()
	e.done.Add(1)
	go e.flusher()
	if cfg.CleanThreshold > 0 {
		e.done.Add(1)
		go e.cleaner()
	}
	if cfg.Sync == SyncInterval {
		e.done.Add(1)
		go e.syncer()
	}
	return e, nil
}

func (e *Engine) recover() error {
	ctx := context.Background()
	m, h, seq, ok, err := loadMeta(e.be)
	if err != nil {
		return fmt.Errorf("cachelayer: load metadata: %w", err)
	}
	if !ok {
		return e.format()
	}
	e.st = m
	e.trackUsage()
	e.metaSeq = seq
	e.lastLSN = h.cut
	// Blocks is derived: count the destaged blocks of every object.
	var ins []Inode
	e.st.inodes.Scan(func(in Inode) bool {
		if n := e.st.extentBlocks(in.Ino); n != in.Blocks {
			in.Blocks = n
			ins = append(ins, in)
		}
		return true
	})
	for _, in := range ins {
		e.st.inodes.Set(in)
	}
	replayAfter := h.replay - 1
	if last := e.wal.LastLSN(); last < h.cut {
		// The engine syncs the log past a cut before it persists the cut,
		// so a log that ends before it was formatted (dcache format) or
		// replaced. Its records are not this image's continuation: skip
		// them; Replay moves the log's LSNs past the image.
		f := logrus.Fields{"log_last_lsn": last, "image_lsn": h.cut}
		if h.replay <= h.cut {
			e.log.WithFields(f).WithField("lost_from_lsn", h.replay).Error("the log ends before the backend's metadata image: it was formatted or replaced, and the ops it held that were not destaged yet are lost")
		} else {
			e.log.WithFields(f).Warn("the log ends before the backend's metadata image (it was formatted); nothing was pending in it")
		}
		replayAfter = h.cut
	}

	start := time.Now()
	var records, first uint64
	last, err := e.wal.Replay(replayAfter, func(lsn uint64, rec LogRecord) error {
		if first == 0 {
			first = lsn
			if lsn != replayAfter+1 {
				return fmt.Errorf("cachelayer: the log starts at LSN %d but replay must start at %d", lsn, replayAfter+1)
			}
		}
		records++
		return e.replayRecord(ctx, lsn, rec)
	})
	if err != nil {
		return fmt.Errorf("cachelayer: replay: %w", err)
	}
	if last > e.lastLSN {
		e.lastLSN = last
	}

	// No reference survives a restart: delete unlinked objects.
	e.mu.Lock()
	var orphans []Ino
	e.st.inodes.Scan(func(in Inode) bool {
		if in.Nlink == 0 && in.Ino != RootIno {
			orphans = append(orphans, in.Ino)
		}
		return true
	})
	for _, ino := range orphans {
		e.deleteObjectLocked(ino)
	}
	e.mu.Unlock()

	if records > 0 || len(orphans) > 0 {
		if err := e.destage(ctx, destageAll, true); err != nil {
			return fmt.Errorf("cachelayer: persist recovered state: %w", err)
		}
	}
	fields := logrus.Fields{
		"objects": e.st.inodes.Len(), "checkpoint_lsn": h.cut, "replayed": records,
		"orphans_deleted": len(orphans), "took": time.Since(start).Round(time.Millisecond),
	}
	if records > 0 {
		fields["first_lsn"], fields["last_lsn"] = first, last
	}
	e.log.WithFields(fields).Info("recovered")
	return nil
}

// format creates a new filesystem: the root directory, persisted at once.
func (e *Engine) format() error {
	e.st = newMeta()
	e.trackUsage()
	ts := now()
	root := Inode{
		Ino: RootIno, Parent: RootIno, Mode: syscall.S_IFDIR | e.cfg.RootMode&0o7777, Nlink: 2,
		Uid: e.cfg.RootUid, Gid: e.cfg.RootGid, Atime: ts, Mtime: ts, Ctime: ts,
	}
	e.st.putInode(root)
	e.changed.inos[RootIno] = struct{}{}
	e.lastLSN = e.wal.LastLSN()
	if err := e.destage(context.Background(), destageAll, true); err != nil {
		return fmt.Errorf("cachelayer: create filesystem: %w", err)
	}
	e.log.WithField("root_uid", root.Uid).Info("created a new filesystem")
	return nil
}

// replayRecord applies one logged op during recovery. Data mutations get
// their preconditions first: partial blocks read from the backend, and
// pages (destaging replayed data, without persisting, when the cache is
// full of it).
func (e *Engine) replayRecord(ctx context.Context, lsn uint64, rec LogRecord) error {
	muts, err := decodeMutations(rec.Payload)
	if err != nil {
		return fmt.Errorf("record %d (%v): %w", lsn, OpType(rec.Type), err)
	}
	for i := range muts {
		m := &muts[i]
		for attempt := 0; ; attempt++ {
			e.mu.Lock()
			fetch, short := e.dataNeedsLocked(m)
			e.mu.Unlock()
			if len(fetch) == 0 && short == 0 {
				break
			}
			if attempt > 100 {
				return fmt.Errorf("record %d (%v): cannot make room to replay it", lsn, OpType(rec.Type))
			}
			if len(fetch) > 0 {
				if err := e.fetchBlocks(ctx, m.ino, fetch); err != nil {
					return fmt.Errorf("record %d: %w", lsn, err)
				}
			}
			if short > 0 {
				if err := e.destage(ctx, destageAll, false); err != nil {
					return fmt.Errorf("record %d: make room: %w", lsn, err)
				}
			}
		}
	}
	e.mu.Lock()
	e.applyLocked(muts, lsn)
	e.mu.Unlock()
	return nil
}

// dataNeedsLocked returns what a data mutation needs before it can apply.
func (e *Engine) dataNeedsLocked(m *mutation) (fetch []uint64, short int) {
	in, ok := e.st.inode(m.ino)
	if !ok {
		return nil, 0
	}
	switch m.kind {
	case mWrite:
		return e.writeNeedsLocked(m.ino, m.off, uint64(len(m.value)))
	case mTruncate:
		// Also when the image has this size already: a metadata round may
		// have persisted the size before the page whose tail the truncate
		// zeroed was destaged, so the image's block still holds the old
		// bytes past the size, and an extension would expose them.
		if m.off <= in.Size {
			return e.zeroNeedsLocked(m.ino, m.off), 0
		}
	case mPunch:
		for _, b := range partialBlocks(m.off, m.off+m.n) {
			fetch = append(fetch, e.zeroNeedsLocked(m.ino, b*BlockSize+1)...)
		}
		return fetch, 0
	}
	return nil, 0
}

// syncer makes the log durable every SyncInterval (log.sync: interval).
func (e *Engine) syncer() {
	defer e.done.Done()
	t := time.NewTicker(e.cfg.SyncInterval)
	defer t.Stop()
	for {
		select {
		case <-e.stop:
			return
		case <-t.C:
			if err := e.Sync(context.Background()); err != nil {
				e.log.WithError(err).Error("periodic log sync")
			}
		}
	}
}

// Close destages everything, persists the metadata and leaves the log
// empty. The filesystem layer must have stopped issuing ops.
func (e *Engine) Close() error {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil
	}
	e.mu.Unlock()
	close(e.stop)
	e.done.Wait()
	err := e.Flush(context.Background())
	e.mu.Lock()
	e.closed = true
	e.signalRoomLocked()
	e.pool.close()
	e.mu.Unlock()
	if err != nil {
		return fmt.Errorf("cachelayer: final destage: %w", err)
	}
	return nil
}

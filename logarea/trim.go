package logarea

import (
	"fmt"
	"sync"
)

// Trim tells the log that the records up to lsn are no longer needed: their
// effects are durable in the backend. The new tail is written into the
// superblock of every healthy replica and synced before its room is handed
// to Reserve, so a crash never finds a tail pointing into reused space.
// Trimming below the current tail does nothing.
func (l *Log) Trim(lsn LSN) error {
	l.sbMu.Lock()
	defer l.sbMu.Unlock()
	l.mu.Lock()
	if l.failErr != nil {
		defer l.mu.Unlock()
		return l.failErr
	}
	if l.closed {
		l.mu.Unlock()
		return ErrClosed
	}
	if lsn < l.tailLSN {
		l.mu.Unlock()
		return nil
	}
	if lsn >= l.nextLSN {
		defer l.mu.Unlock()
		return fmt.Errorf("%w: trim to lsn %d, last committed is %d", ErrBadLSN, lsn, l.nextLSN-1)
	}
	tail := lsn + 1
	tailPos := l.posLocked(tail)
	next := max(l.durableLSN+1, tail)
	nextPos := l.posLocked(next)
	l.mu.Unlock()

	if err := l.writeSuperblocks(tail, tailPos, next, nextPos, 0); err != nil {
		return err
	}

	l.mu.Lock()
	if tail > l.tailLSN {
		l.index.dropBefore(tail)
		l.tailLSN, l.tailPos = tail, tailPos
		l.grantLocked()
	}
	l.mu.Unlock()
	return nil
}

// posLocked is the logical position of lsn, in [tailLSN, nextLSN].
func (l *Log) posLocked(lsn LSN) uint64 {
	if lsn == l.nextLSN {
		return l.head
	}
	return l.index.at(lsn)
}

// writeSuperblocks writes a new superblock on every healthy replica, in
// parallel, each into its other slot, and syncs it. A replica that fails is
// taken out; the error is returned only when the quorum is lost. The caller
// holds sbMu and not mu.
func (l *Log) writeSuperblocks(tail LSN, tailPos uint64, next LSN, nextPos uint64, flags uint32) error {
	l.mu.Lock()
	reps := l.healthyLocked()
	l.mu.Unlock()
	errs := make([]error, len(reps))
	var wg sync.WaitGroup
	for i, r := range reps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sb := r.sb
			sb.seq++
			sb.tailLSN, sb.tailPos = tail, tailPos
			sb.nextLSN, sb.nextPos = next, nextPos
			sb.epoch, sb.epochStart = l.epoch, l.epochStart
			sb.flags = flags
			errs[i] = r.writeSuperblock(sb)
		}()
	}
	wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	for i, err := range errs {
		if err != nil {
			l.failReplicaLocked(reps[i], err)
		}
	}
	return l.failErr
}

// writeMetaAll writes the replica table (who is healthy, who failed and
// when) into the metadata region of every healthy replica, and syncs when
// asked. Like writeSuperblocks, it fails only when the quorum is lost.
func (l *Log) writeMetaAll(doSync bool) error {
	l.sbMu.Lock()
	defer l.sbMu.Unlock()
	l.mu.Lock()
	m := meta{seq: l.metaSeq + 1, nonce: l.nonce, states: make([]replicaState, len(l.replicas)), lsns: make([]LSN, len(l.replicas))}
	for i, r := range l.replicas {
		if r == nil || r.health == HealthFailed {
			m.states[i] = stateFailed
			if r != nil {
				m.lsns[i] = r.synced + 1
			}
		}
	}
	reps := l.healthyLocked()
	l.mu.Unlock()
	errs := make([]error, len(reps))
	var wg sync.WaitGroup
	for i, r := range reps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = r.writeMeta(&m)
			if errs[i] == nil && doSync {
				errs[i] = r.sync()
			}
		}()
	}
	wg.Wait()
	l.metaSeq = m.seq
	l.mu.Lock()
	defer l.mu.Unlock()
	for i, err := range errs {
		if err != nil {
			l.failReplicaLocked(reps[i], err)
		}
	}
	return l.failErr
}

// Close writes and syncs everything committed, marks the superblocks clean
// and stops the writer. Reserve calls still waiting fail with ErrClosed.
// The devices stay open: they belong to the caller.
func (l *Log) Close() error {
	l.mu.Lock()
	if l.closing {
		l.mu.Unlock()
		return ErrClosed
	}
	l.closing = true
	l.failWaitersLocked(ErrClosed)
	l.mu.Unlock()
	l.wakeWriter()
	<-l.writerDone

	l.sbMu.Lock()
	defer l.sbMu.Unlock()
	l.mu.Lock()
	err := l.failErr
	tail, tailPos, next, head := l.tailLSN, l.tailPos, l.nextLSN, l.head
	l.mu.Unlock()
	if err != nil {
		return err
	}
	if err := l.writeSuperblocks(tail, tailPos, next, head, sbFlagClean); err != nil {
		return err
	}
	l.log.WithFields(map[string]any{"tail_lsn": tail, "next_lsn": next}).Info("log closed")
	return nil
}

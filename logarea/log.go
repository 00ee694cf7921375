package logarea

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/dcache/dcache/internal/device"
)

// Log is the write-ahead log over one or more replica devices.
//
// Lock order: sbMu before mu. Device I/O is never done with mu held.
type Log struct {
	cfg        Config
	log        *logrus.Entry
	fsID       [16]byte
	nonce      uint64
	seed       uint32
	areaSize   uint64
	bufSize    int64
	need       int // healthy replicas the write quorum requires
	epoch      uint32
	epochStart LSN
	replicas   []*replica // by replica index; nil for a missing one
	src        *replica   // replay source chosen by Open

	// compressPool holds buffers for compressed payloads, so that Reserve
	// does not allocate per record once it holds buffers of the sizes in use.
	compressPool sync.Pool
	compress     compressSampler

	wake       chan struct{} // wakes the writer; capacity 1
	writerDone chan struct{}

	// sbMu serializes superblock and metadata writes (Trim, Close, Replay's
	// LSN jump, replica failures) and guards replica.sb and metaSeq.
	sbMu    sync.Mutex
	metaSeq uint64

	mu            sync.Mutex // guards the fields below
	nextLSN       LSN        // LSN the next Commit gets
	head          uint64     // logical position of the next record
	tailLSN       LSN        // first record not trimmed (durable in the superblocks)
	tailPos       uint64
	index         posIndex // positions of tailLSN .. nextLSN-1
	cur           []byte   // records committed and not yet handed to the writer
	curPos        uint64   // logical position of cur[0]
	curFirst      LSN      // LSN of the first record in cur
	spare         []byte   // the other buffer; nil while the writer writes it
	memReserved   int64
	devReserved   int64
	waiters       []*waiter // Reserve calls waiting for room, in arrival order
	writtenLSN    LSN       // written to every healthy replica
	durableLSN    LSN       // synced on every healthy replica (>= the quorum)
	syncWanted    LSN       // highest LSN a Sync waits for
	syncIssued    LSN       // target of the latest device sync started
	syncsInFlight int
	writing       bool       // a write round runs (by the writer or a Sync)
	roundReps     []*replica // reused by write rounds
	roundErrs     []error
	durableCh     chan struct{}
	closing       bool
	closed        bool // the writer has stopped
	failErr       error
	metaDirty     bool // a replica failed: record it in the survivors' metadata
	replayed      bool
	appended      bool
	st            counters
}

// counters are the log-wide statistics (guarded by Log.mu).
type counters struct {
	records  int64
	batches  int64
	maxBatch int64
	syncs    int64 // device sync rounds (each syncs every healthy replica)
	// records made durable by sync rounds, and the most by one round
	syncedRecords, maxGroup int64
	bytesIn                 int64 // payload bytes given to Reserve
	bytesOut                int64 // record bytes committed (after compression)
	compessed               int64 // records stored compressed
}

type waiter struct {
	size    int64
	ready   chan struct{}
	granted bool
	err     error
}

func discardLogger() *logrus.Entry {
	l := logrus.New()
	l.Out = io.Discard
	return logrus.NewEntry(l)
}

// Format writes a fresh, empty log on every device for filesystem fsID,
// erasing the superblocks, metadata and the start of the record area. The
// devices become replicas 0..len(devs)-1 in that order; the record area is
// as large as the smallest device allows. On regular files (file and mmap
// devices) the whole record area is written with zeros once: fallocate
// leaves unwritten extents, and a log write into one makes the next
// fdatasync commit extent metadata too; after Format every append
// overwrites written blocks and fdatasync flushes data only.
func Format(devs []device.Device, fsID [16]byte) error {
	if len(devs) == 0 || len(devs) > maxReplicas {
		return fmt.Errorf("%w: %d devices, want 1 to %d", ErrBadConfig, len(devs), maxReplicas)
	}
	areaSize := uint64(1) << 63
	var errs []error
	for i, d := range devs {
		for _, other := range devs[:i] {
			if other == d {
				errs = append(errs, fmt.Errorf("%w: %s given twice", ErrBadConfig, d.Name()))
			}
		}
		if d.Size() < MinSize(Config{}) {
			errs = append(errs, fmt.Errorf("%w: %s has %d bytes, a log needs at least %d", ErrTooSmall, d.Name(), d.Size(), MinSize(Config{})))
			continue
		}
		areaSize = min(areaSize, uint64(d.Size()-areaOffset)/4096*4096)
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	var nb [8]byte
	if _, err := rand.Read(nb[:]); err != nil {
		return fmt.Errorf("logarea: random log id: %w", err)
	}
	nonce := binary.LittleEndian.Uint64(nb[:])
	m := meta{seq: 1, nonce: nonce, states: make([]replicaState, len(devs)), lsns: make([]LSN, len(devs))}
	var mbuf [metaEncSize]byte
	m.encode(mbuf[:])
	zero := make([]byte, metaSlotSize)
	now := time.Now().UnixNano()
	for i, d := range devs {
		sb := superblock{
			fsID: fsID, nonce: nonce, seq: 1, replicaIndex: uint32(i), replicaCount: uint32(len(devs)),
			devSize: uint64(d.Size()), areaOff: areaOffset, areaSize: areaSize,
			tailLSN: 1, nextLSN: 1, epoch: 1, epochStart: 1, formatTime: now,
		}
		var sbuf [sbEncodedSize]byte
		sb.encode(sbuf[:])
		steps := []struct {
			b   []byte
			off int64
		}{
			{zero[:sbEncodedSize], 0}, {zero[:sbEncodedSize], sbSlotSize}, // old superblocks first
			{mbuf[:], metaOffset + metaSlotSize}, {zero, metaOffset}, // meta seq 1 lives in slot 1
			{zero, areaOffset},
		}
		for _, s := range steps {
			if _, err := d.WriteAt(s.b, s.off); err != nil {
				return fmt.Errorf("logarea: format %s: %w", d.Name(), err)
			}
		}
		if k := device.KindOf(d); k == "file" || k == "mmap" {
			if err := writeZeros(d, areaOffset, int64(areaSize)); err != nil {
				return fmt.Errorf("logarea: format %s: %w", d.Name(), err)
			}
		}
		if err := d.Sync(); err != nil {
			return fmt.Errorf("logarea: format %s: %w", d.Name(), err)
		}
		if _, err := d.WriteAt(sbuf[:], sbSlotSize); err != nil { // seq 1: slot 1
			return fmt.Errorf("logarea: format %s: %w", d.Name(), err)
		}
		if err := d.Sync(); err != nil {
			return fmt.Errorf("logarea: format %s: %w", d.Name(), err)
		}
	}
	return nil
}

// writeZeros writes zeros over [off, off+n) of d.
func writeZeros(d device.Device, off, n int64) error {
	zero := make([]byte, min(n, 1<<20))
	for n > 0 {
		c := min(n, int64(len(zero)))
		if _, err := d.WriteAt(zero[:c], off); err != nil {
			return err
		}
		off, n = off+c, n-c
	}
	return nil
}

// LastLSN is the highest committed LSN (0 when none ever was).
func (l *Log) LastLSN() LSN {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.nextLSN - 1
}

// DurableLSN is the highest LSN durable on the write quorum.
func (l *Log) DurableLSN() LSN {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.durableLSN
}

// usableLocked returns the error that stops new work, if any.
func (l *Log) usableLocked() error {
	if l.failErr != nil {
		return l.failErr
	}
	if l.closing {
		return ErrClosed
	}
	return nil
}

// healthyLocked lists the replicas still written, in a new slice.
func (l *Log) healthyLocked() []*replica { return l.appendHealthyLocked(nil) }

// appendHealthyLocked appends the replicas still written to dst.
func (l *Log) appendHealthyLocked(dst []*replica) []*replica {
	for _, r := range l.replicas {
		if r != nil && r.health == HealthOK {
			dst = append(dst, r)
		}
	}
	return dst
}

// failReplicaLocked takes r out of the log after an I/O error, logs it once
// at Error, and fails the log when the quorum is lost.
func (l *Log) failReplicaLocked(r *replica, err error) {
	if r.health == HealthFailed {
		return
	}
	r.health = HealthFailed
	r.lastErr = err
	l.metaDirty = true
	healthy := len(l.healthyLocked())
	l.log.WithError(err).WithFields(logrus.Fields{
		"replica": r.name, "index": r.idx, "healthy": healthy, "need": l.need, "durable_lsn": l.durableLSN,
	}).Error("log replica failed; no longer written")
	if healthy < l.need && l.failErr == nil {
		l.failLocked(fmt.Errorf("%w: %d of %d replicas healthy, quorum %s needs %d (last error: %w)",
			ErrQuorumLost, healthy, len(l.replicas), l.cfg.WriteQuorum, l.need, err))
	}
}

// failLocked stops the log: every waiter and every later call gets err.
func (l *Log) failLocked(err error) {
	l.failErr = err
	l.log.WithError(err).Error("log failed; appends and syncs return errors")
	l.failWaitersLocked(err)
	l.notifyLocked()
}

func (l *Log) failWaitersLocked(err error) {
	for _, w := range l.waiters {
		w.err = err
		close(w.ready)
	}
	l.waiters = nil
}

// notifyLocked wakes every Sync waiting on durableCh.
func (l *Log) notifyLocked() {
	close(l.durableCh)
	l.durableCh = make(chan struct{})
}

func (l *Log) wakeWriter() {
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

package logarea

import (
	"fmt"
	"sync/atomic"

	"github.com/dcache/dcache/internal/device"
)

// Health is a replica's state.
type Health int32

// Replica health states.
const (
	HealthOK      Health = iota // written and synced with every batch
	HealthLagging               // behind the others; being brought up to date
	HealthFailed                // an I/O error took it out; not written any more
	HealthMissing               // formatted into the log but not given to Open
)

func (h Health) String() string {
	switch h {
	case HealthOK:
		return "ok"
	case HealthLagging:
		return "lagging"
	case HealthFailed:
		return "failed"
	case HealthMissing:
		return "missing"
	}
	return fmt.Sprintf("Health(%d)", int32(h))
}

// replica is one device of the log.
type replica struct {
	idx  int
	dev  device.Device
	name string
	kind string
	area area

	// Guarded by Log.sbMu.
	sb superblock // as last written (or read)

	// Guarded by Log.mu.
	health   Health
	lastErr  error
	written  LSN    // last LSN written to it
	synced   LSN    // last LSN durable on it
	repaired string // what Open did to it, for Stats

	writes, syncs, bytes atomic.Int64
}

func (r *replica) sync() error {
	if err := r.dev.Sync(); err != nil {
		return fmt.Errorf("logarea: sync %s: %w", r.name, err)
	}
	r.syncs.Add(1)
	return nil
}

// writeRecords writes a batch at its logical position.
func (r *replica) writeRecords(b []byte, pos uint64) error {
	if err := r.area.writeAt(b, pos); err != nil {
		return err
	}
	r.writes.Add(1)
	r.bytes.Add(int64(len(b)))
	return nil
}

// writeSuperblock writes sb into its slot (seq%2) and syncs: a torn write
// damages only that slot, and the other keeps the previous state. The caller
// holds Log.sbMu.
func (r *replica) writeSuperblock(sb superblock) error {
	var buf [sbEncodedSize]byte
	sb.encode(buf[:])
	if _, err := r.dev.WriteAt(buf[:], int64(sb.seq%2)*sbSlotSize); err != nil {
		return fmt.Errorf("logarea: write superblock of %s: %w", r.name, err)
	}
	if err := r.sync(); err != nil {
		return err
	}
	r.sb = sb
	return nil
}

// writeMeta writes m into its slot (m.seq%2), without syncing.
func (r *replica) writeMeta(m *meta) error {
	var buf [metaEncSize]byte
	m.encode(buf[:])
	if _, err := r.dev.WriteAt(buf[:], metaOffset+int64(m.seq%2)*metaSlotSize); err != nil {
		return fmt.Errorf("logarea: write metadata of %s: %w", r.name, err)
	}
	return nil
}

package logarea

import (
	"errors"
	"fmt"
)

// LSN is a log sequence number: 1, 2, 3, ...; 0 means "none".
type LSN uint64

// Record is one op as the engine sees it. The log does not interpret it.
type Record struct {
	Type    uint8  // 1..255, engine-defined op type
	Flags   uint8  // engine-defined flags
	Obj     uint64 // object id
	Off     uint64 // engine-defined offset
	Len     uint32 // engine-defined length
	Payload []byte // op arguments and/or data, at most MaxPayload bytes
}

// Quorum says how many replicas must hold a record before it is durable.
type Quorum int

// Write quorums.
const (
	// QuorumAll needs every replica: losing any one loses the quorum.
	QuorumAll Quorum = iota
	// QuorumMajority needs more than half of the replicas.
	QuorumMajority
	// QuorumOne needs one replica: the log runs on while any replica is
	// healthy (two replicas survive the loss of either). A record is
	// still durable only once every healthy replica holds it.
	QuorumOne
)

func (q Quorum) String() string {
	switch q {
	case QuorumAll:
		return "all"
	case QuorumMajority:
		return "majority"
	case QuorumOne:
		return "one"
	}
	return fmt.Sprintf("Quorum(%d)", int(q))
}

// need is the number of healthy replicas the quorum requires out of n.
func (q Quorum) need(n int) int {
	switch q {
	case QuorumMajority:
		return n/2 + 1
	case QuorumOne:
		return 1
	}
	return n
}

// Default and minimum sizes.
const (
	DefaultBufferSize = 8 << 20
	// MinBufferSize is the smallest in-memory buffer: one max-size record.
	MinBufferSize = MaxRecordSize
)

// Config tunes a Log. The zero value is usable.
type Config struct {
	// WriteQuorum is how many replicas must hold a record before Sync
	// reports it durable, and below which the log fails.
	WriteQuorum Quorum
	// Compression stores payloads snappy-compressed when that saves space.
	// After payloads that did not compress, the next ones (up to 64) are
	// stored without trying, so incompressible data costs little CPU.
	Compression bool
	// BufferSize is the size of each of the two in-memory record buffers
	// (one is filled by Commit while the other is written). 0 means
	// DefaultBufferSize; otherwise at least MinBufferSize.
	BufferSize int
}

// Validate reports every invalid field, with its key and the reason.
func (c Config) Validate() error {
	var errs []error
	if c.WriteQuorum != QuorumAll && c.WriteQuorum != QuorumMajority && c.WriteQuorum != QuorumOne {
		errs = append(errs, fmt.Errorf("%w: write_quorum %d: want all, majority or one", ErrBadConfig, int(c.WriteQuorum)))
	}
	if c.BufferSize != 0 && c.BufferSize < MinBufferSize {
		errs = append(errs, fmt.Errorf("%w: buffer_size %d: must hold one max-size record (%d bytes)", ErrBadConfig, c.BufferSize, MinBufferSize))
	}
	return errors.Join(errs...)
}

func (c Config) bufferSize() int {
	if c.BufferSize == 0 {
		return DefaultBufferSize
	}
	return c.BufferSize
}

// MinSize is the smallest device that can hold a log: superblocks, metadata
// and a record area that takes one max-size record. Configuration validation
// rejects smaller log devices with it.
func MinSize(Config) int64 {
	return areaOffset + (MaxRecordSize+4095)/4096*4096
}

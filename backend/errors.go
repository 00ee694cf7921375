package backend

import (
	"errors"
	"fmt"
)

var (
	// ErrNotBackend: the directory is not empty and holds no superblock.
	ErrNotBackend = errors.New("backend: not a dcache backend")
	// ErrVersion: a superblock, segment or meta file of a format version this build does not know.
	ErrVersion = errors.New("backend: unsupported format version")
	// ErrInUse: another process (or another Store in this process) holds the directory's lock.
	ErrInUse = errors.New("backend: directory in use")
	// ErrConfig: a Config value is out of range.
	ErrConfig = errors.New("backend: invalid configuration")
	// ErrClosed: the store was closed.
	ErrClosed = errors.New("backend: store closed")
	// ErrRecordSize: Append of an empty record or one longer than MaxRecordLen.
	ErrRecordSize = errors.New("backend: record size out of range")
	// ErrBadAddr: an address that cannot have come from Append (zero segment,
	// misaligned offset, length out of range) or a buffer too short for it.
	ErrBadAddr = errors.New("backend: invalid address")
	// ErrVoided: the address was handed out by Append but a later write or
	// sync failed before it became durable; the data must be appended again.
	ErrVoided = errors.New("backend: address voided by a failed write")
	// ErrSegmentBusy: RemoveSegment of a segment that is still being written.
	ErrSegmentBusy = errors.New("backend: segment is open for writing")
	// ErrNoCheckpoint: RemoveMetaBefore names a checkpoint that does not exist.
	ErrNoCheckpoint = errors.New("backend: no such checkpoint")
	// ErrMetaGap: the deltas after the newest checkpoint are not consecutive.
	// It is reported inside a CorruptionError.
	ErrMetaGap = errors.New("backend: gap in metadata delta sequence")
	// ErrMetaDone: Write or Commit on a MetaWriter that was already committed or aborted.
	ErrMetaDone = errors.New("backend: meta file already committed or aborted")
)

// CorruptionError reports data on disk that fails a check: a bad magic
// number, checksum, length or sequence. It is never a transient I/O error.
type CorruptionError struct {
	Path    string // file in which the corruption was found
	Segment uint64 // segment number when Path is a segment, else 0
	Offset  int64  // byte offset in Path, or -1 when the whole file is concerned
	Reason  string
	Err     error // underlying cause, if any (e.g. ErrMetaGap, io.ErrUnexpectedEOF)
}

func (e *CorruptionError) Error() string {
	msg := "backend: corruption in " + e.Path
	if e.Segment != 0 {
		msg += fmt.Sprintf(" (segment %d)", e.Segment)
	}
	if e.Offset >= 0 {
		msg += fmt.Sprintf(" at offset %d", e.Offset)
	}
	msg += ": " + e.Reason
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

func (e *CorruptionError) Unwrap() error { return e.Err }

// IsCorruption reports whether err is, or wraps, a *CorruptionError.
func IsCorruption(err error) bool {
	var c *CorruptionError
	return errors.As(err, &c)
}

func corruptf(path string, off int64, format string, args ...any) *CorruptionError {
	return &CorruptionError{Path: path, Offset: off, Reason: fmt.Sprintf(format, args...)}
}

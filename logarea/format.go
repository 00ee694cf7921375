package logarea

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
)

// Wire format: every constant in this block is part of the on-disk format.
// Changing one needs a new formatVersion.
const (
	formatVersion = 1

	sbSlotSize    = 4096 // each superblock slot
	sbEncodedSize = 512  // bytes of a slot that are written and checksummed
	metaOffset    = 2 * sbSlotSize
	metaSlotSize  = 4096
	metaEncSize   = 1024 // bytes of a meta slot that are written and checksummed
	areaOffset    = metaOffset + 2*metaSlotSize

	headerSize  = 64 // record header
	recordAlign = 8  // records start at multiples of 8 in the logical stream

	recordMagic uint32 = 0x524c6364 // "dcLR" little-endian

	// MaxPayload is the largest payload a record can carry (before
	// compression): a 1 MiB write plus its metadata.
	MaxPayload = 1<<20 + 4<<10
	// MaxRecordSize is the largest record on the device, header and
	// padding included.
	MaxRecordSize = (headerSize + MaxPayload + recordAlign - 1) / recordAlign * recordAlign

	maxReplicas = 32

	rflagSnappy = 1 << 0 // record flag: payload is snappy-compressed

	sbFlagClean = 1 << 0 // superblock flag: written by a clean Close
)

var (
	sbMagic   = [8]byte{'D', 'C', 'L', 'O', 'G', 'S', 'B', 0}
	metaMagic = [8]byte{'D', 'C', 'L', 'O', 'G', 'M', 'T', 0}
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func crc32c(b []byte) uint32 { return crc32.Checksum(b, castagnoli) }

// Sentinel errors.
var (
	ErrNotFormatted = errors.New("logarea: device is not a dcache log (run dcache format)")
	ErrForeign      = errors.New("logarea: log belongs to another filesystem or log")
	ErrVersion      = errors.New("logarea: unknown log format version")
	ErrTooSmall     = errors.New("logarea: device too small")
	ErrQuorumLost   = errors.New("logarea: write quorum lost")
	ErrNoReplica    = errors.New("logarea: no usable replica")
	ErrClosed       = errors.New("logarea: log closed")
	ErrTooLarge     = errors.New("logarea: record too large")
	ErrBadLSN       = errors.New("logarea: invalid lsn")
	ErrBadRecord    = errors.New("logarea: invalid record")
	ErrReplayOrder  = errors.New("logarea: replay must come once, before the first append")
	ErrBadConfig    = errors.New("logarea: invalid configuration")
	ErrEntryUsed    = errors.New("logarea: entry already committed or cancelled")
)

// CorruptionError reports damaged log contents: where and why.
type CorruptionError struct {
	Device string // device name
	Offset int64  // byte offset on the device
	LSN    LSN    // the record expected there, 0 when not about a record
	Reason string
}

func (e *CorruptionError) Error() string {
	if e.LSN != 0 {
		return fmt.Sprintf("logarea: corruption on %s at offset %d (lsn %d): %s", e.Device, e.Offset, e.LSN, e.Reason)
	}
	return fmt.Sprintf("logarea: corruption on %s at offset %d: %s", e.Device, e.Offset, e.Reason)
}

// IsCorruption reports whether err is or wraps a *CorruptionError.
func IsCorruption(err error) bool {
	var ce *CorruptionError
	return errors.As(err, &ce)
}

// superblock is the decoded form of one superblock slot.
type superblock struct {
	fsID         [16]byte
	nonce        uint64 // random per Format: ties records and replicas to one log
	seq          uint64 // bumped per write; slot = seq % 2
	replicaIndex uint32
	replicaCount uint32
	devSize      uint64 // device size at Format
	areaOff      uint64
	areaSize     uint64
	tailLSN      LSN    // first record still needed (== nextLSN when empty)
	tailPos      uint64 // its logical position
	nextLSN      LSN    // records below were durable on this replica when written
	nextPos      uint64
	epoch        uint32 // bumped by every Open
	flags        uint32
	epochStart   LSN // first LSN appended in this epoch
	formatTime   int64
}

func (sb *superblock) encode(b []byte) {
	clear(b[:sbEncodedSize])
	copy(b[0:8], sbMagic[:])
	le := binary.LittleEndian
	le.PutUint32(b[8:], formatVersion)
	copy(b[16:32], sb.fsID[:])
	le.PutUint64(b[32:], sb.nonce)
	le.PutUint64(b[40:], sb.seq)
	le.PutUint32(b[48:], sb.replicaIndex)
	le.PutUint32(b[52:], sb.replicaCount)
	le.PutUint64(b[56:], sb.devSize)
	le.PutUint64(b[64:], sb.areaOff)
	le.PutUint64(b[72:], sb.areaSize)
	le.PutUint64(b[80:], uint64(sb.tailLSN))
	le.PutUint64(b[88:], sb.tailPos)
	le.PutUint64(b[96:], uint64(sb.nextLSN))
	le.PutUint64(b[104:], sb.nextPos)
	le.PutUint32(b[112:], sb.epoch)
	le.PutUint32(b[116:], sb.flags)
	le.PutUint64(b[120:], uint64(sb.epochStart))
	le.PutUint64(b[128:], uint64(sb.formatTime))
	le.PutUint32(b[12:], slotCRC(b[:sbEncodedSize]))
}

// slotCRC is the CRC-32C of a slot without its CRC field (bytes 12..16).
func slotCRC(b []byte) uint32 {
	return crc32.Update(crc32c(b[:12]), castagnoli, b[16:])
}

type slotState int

const (
	slotEmpty   slotState = iota // no magic: never written, or not ours
	slotDamaged                  // magic, but checksum or contents wrong
	slotVersion                  // intact, but a version this build does not know
	slotOK
)

// decodeSuperblock decodes a slot. version is set for slotVersion.
func decodeSuperblock(b []byte) (sb superblock, st slotState, version uint32, why string) {
	if [8]byte(b[0:8]) != sbMagic {
		return sb, slotEmpty, 0, "no superblock magic"
	}
	le := binary.LittleEndian
	if le.Uint32(b[12:]) != slotCRC(b[:sbEncodedSize]) {
		return sb, slotDamaged, 0, "superblock checksum mismatch"
	}
	if v := le.Uint32(b[8:]); v != formatVersion {
		return sb, slotVersion, v, fmt.Sprintf("format version %d", v)
	}
	copy(sb.fsID[:], b[16:32])
	sb.nonce = le.Uint64(b[32:])
	sb.seq = le.Uint64(b[40:])
	sb.replicaIndex = le.Uint32(b[48:])
	sb.replicaCount = le.Uint32(b[52:])
	sb.devSize = le.Uint64(b[56:])
	sb.areaOff = le.Uint64(b[64:])
	sb.areaSize = le.Uint64(b[72:])
	sb.tailLSN = LSN(le.Uint64(b[80:]))
	sb.tailPos = le.Uint64(b[88:])
	sb.nextLSN = LSN(le.Uint64(b[96:]))
	sb.nextPos = le.Uint64(b[104:])
	sb.epoch = le.Uint32(b[112:])
	sb.flags = le.Uint32(b[116:])
	sb.epochStart = LSN(le.Uint64(b[120:]))
	sb.formatTime = int64(le.Uint64(b[128:]))
	switch {
	case sb.replicaCount == 0 || sb.replicaCount > maxReplicas || sb.replicaIndex >= sb.replicaCount:
		why = fmt.Sprintf("replica %d of %d", sb.replicaIndex, sb.replicaCount)
	case sb.areaOff < areaOffset || sb.areaSize < MaxRecordSize || sb.areaOff+sb.areaSize > sb.devSize:
		why = fmt.Sprintf("record area [%d,+%d) on a %d-byte device", sb.areaOff, sb.areaSize, sb.devSize)
	case sb.tailLSN == 0 || sb.tailPos%recordAlign != 0:
		why = fmt.Sprintf("tail lsn %d at %d", sb.tailLSN, sb.tailPos)
	}
	if why != "" {
		return sb, slotDamaged, 0, "superblock fields out of range: " + why
	}
	return sb, slotOK, 0, ""
}

// replicaState is a replica's state as recorded in the metadata region.
type replicaState uint8

const (
	stateOK     replicaState = 0
	stateFailed replicaState = 1
)

// meta is the decoded metadata region: the log's own bookkeeping of which
// replicas were healthy when it was last written.
type meta struct {
	seq    uint64
	nonce  uint64
	states []replicaState // by replica index
	lsns   []LSN          // for a failed replica: the next LSN when it failed
}

func (m *meta) encode(b []byte) {
	clear(b[:metaEncSize])
	copy(b[0:8], metaMagic[:])
	le := binary.LittleEndian
	le.PutUint32(b[8:], formatVersion)
	le.PutUint64(b[16:], m.seq)
	le.PutUint64(b[24:], m.nonce)
	le.PutUint32(b[32:], uint32(len(m.states)))
	for i, s := range m.states {
		e := b[40+16*i:]
		e[0] = byte(s)
		le.PutUint64(e[8:], uint64(m.lsns[i]))
	}
	le.PutUint32(b[12:], slotCRC(b[:metaEncSize]))
}

func decodeMeta(b []byte) (m meta, ok bool) {
	le := binary.LittleEndian
	if [8]byte(b[0:8]) != metaMagic || le.Uint32(b[12:]) != slotCRC(b[:metaEncSize]) || le.Uint32(b[8:]) != formatVersion {
		return m, false
	}
	n := le.Uint32(b[32:])
	if n == 0 || n > maxReplicas {
		return m, false
	}
	m.seq = le.Uint64(b[16:])
	m.nonce = le.Uint64(b[24:])
	m.states = make([]replicaState, n)
	m.lsns = make([]LSN, n)
	for i := range m.states {
		e := b[40+16*i:]
		m.states[i] = replicaState(e[0])
		m.lsns[i] = LSN(le.Uint64(e[8:]))
	}
	return m, true
}

// recHeader is the decoded record header.
type recHeader struct {
	lsn    LSN
	synced LSN // every LSN <= synced was durable on every live replica at commit
	obj    uint64
	off    uint64
	length uint32
	stored uint32 // payload bytes on the device
	pcrc   uint32 // CRC-32C of the stored payload
	epoch  uint32
	typ    uint8
	flags  uint8
	rflags uint8
}

// size is the record's footprint in the area, padding included.
func (h *recHeader) size() uint64 { return recordSize(int(h.stored)) }

func recordSize(stored int) uint64 {
	return uint64(headerSize+stored+recordAlign-1) / recordAlign * recordAlign
}

// encodeHeader writes h into b[:headerSize]. seed is the log's CRC seed.
func encodeHeader(b []byte, h *recHeader, seed uint32) {
	le := binary.LittleEndian
	_ = b[headerSize-1]
	le.PutUint32(b[0:], recordMagic)
	le.PutUint64(b[8:], uint64(h.lsn))
	le.PutUint64(b[16:], uint64(h.synced))
	le.PutUint64(b[24:], h.obj)
	le.PutUint64(b[32:], h.off)
	le.PutUint32(b[40:], h.length)
	le.PutUint32(b[44:], h.stored)
	le.PutUint32(b[48:], h.pcrc)
	le.PutUint32(b[52:], h.epoch)
	b[56] = h.typ
	b[57] = h.flags
	b[58] = h.rflags
	clear(b[59:64])
	le.PutUint32(b[4:], crc32.Update(seed, castagnoli, b[8:headerSize]))
}

// decodeHeader decodes and checks a header; why is empty when it is intact.
func decodeHeader(b []byte, seed uint32) (h recHeader, why string) {
	le := binary.LittleEndian
	_ = b[headerSize-1]
	if le.Uint32(b[0:]) != recordMagic {
		return h, "bad record magic"
	}
	if le.Uint32(b[4:]) != crc32.Update(seed, castagnoli, b[8:headerSize]) {
		return h, "record header checksum mismatch"
	}
	h.lsn = LSN(le.Uint64(b[8:]))
	h.synced = LSN(le.Uint64(b[16:]))
	h.obj = le.Uint64(b[24:])
	h.off = le.Uint64(b[32:])
	h.length = le.Uint32(b[40:])
	h.stored = le.Uint32(b[44:])
	h.pcrc = le.Uint32(b[48:])
	h.epoch = le.Uint32(b[52:])
	h.typ = b[56]
	h.flags = b[57]
	h.rflags = b[58]
	switch {
	case h.stored > MaxPayload:
		return h, fmt.Sprintf("stored payload length %d over the maximum", h.stored)
	case h.rflags&^rflagSnappy != 0 || b[59]|b[60]|b[61]|b[62]|b[63] != 0:
		return h, "unknown record flags"
	case h.typ == 0:
		return h, "record type 0"
	case h.lsn == 0 || h.synced >= h.lsn:
		return h, fmt.Sprintf("lsn %d claims %d synced", h.lsn, h.synced)
	}
	return h, ""
}

// isZero reports whether b is all zero bytes.
func isZero(b []byte) bool {
	for len(b) >= 8 {
		if binary.LittleEndian.Uint64(b) != 0 {
			return false
		}
		b = b[8:]
	}
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// nonceSeed is the CRC seed of a log's record headers: a record written by
// another log (another Format) never checks out in this one.
func nonceSeed(nonce uint64) uint32 {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], nonce)
	return crc32c(b[:])
}

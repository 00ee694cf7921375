package backend

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"strconv"
	"strings"
)

// Constants of the on-disk format. Changing any of them changes the format.
const (
	// FormatVersion is the version of every structure this build writes and
	// the only one it reads.
	FormatVersion = 1

	// BlockSize is the record alignment inside a segment and the size of the
	// segment header.
	BlockSize = 4096

	// MaxRecordLen is the largest record Append accepts.
	MaxRecordLen = 1 << 20

	superblockMagic = "DCBKSUPR"
	superblockLen   = 64
	segmentMagic    = "DCBKSEGM"
	segmentHdrLen   = BlockSize
	metaMagic       = "DCBKMETA"
	metaHdrLen      = 48
	metaTrailerLen  = 16
	metaTrailMagic  = "DCMT"
)

// Names inside a backend directory.
const (
	superblockName = "superblock"
	superblockTmp  = "superblock.tmp"
	lockName       = "lock"
	segmentsDir    = "segments"
	metaDir        = "meta"
	segmentExt     = ".seg"
	tmpExt         = ".tmp"
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func crc(p []byte) uint32 { return crc32.Checksum(p, castagnoli) }

var le = binary.LittleEndian

// superblock is the decoded DIR/superblock.
type superblock struct {
	uuid        [16]byte
	ctimeNanos  int64
	segmentSize int64
}

func (sb *superblock) encode() []byte {
	b := make([]byte, superblockLen)
	copy(b[0:8], superblockMagic)
	le.PutUint32(b[8:], FormatVersion)
	le.PutUint32(b[12:], superblockLen)
	copy(b[16:32], sb.uuid[:])
	le.PutUint64(b[32:], uint64(sb.ctimeNanos))
	le.PutUint64(b[40:], uint64(sb.segmentSize))
	le.PutUint32(b[60:], crc(b[:60]))
	return b
}

// decodeSuperblock checks magic, then version, then length and CRC. The
// version comes before the checksum so that a newer format, whose layout
// this build cannot know, is reported as ErrVersion and not as corruption.
func decodeSuperblock(path string, b []byte) (*superblock, error) {
	if len(b) < 16 || string(b[0:8]) != superblockMagic {
		return nil, corruptf(path, 0, "bad superblock magic")
	}
	if v := le.Uint32(b[8:]); v != FormatVersion {
		return nil, fmt.Errorf("%w: %s has format version %d, this build reads version %d",
			ErrVersion, path, v, FormatVersion)
	}
	if n := le.Uint32(b[12:]); n != superblockLen || len(b) != superblockLen {
		return nil, corruptf(path, 12, "superblock length %d (file %d bytes), want %d", n, len(b), superblockLen)
	}
	if got, want := le.Uint32(b[60:]), crc(b[:60]); got != want {
		return nil, corruptf(path, 60, "superblock crc 0x%08x, computed 0x%08x", got, want)
	}
	sb := &superblock{
		ctimeNanos:  int64(le.Uint64(b[32:])),
		segmentSize: int64(le.Uint64(b[40:])),
	}
	copy(sb.uuid[:], b[16:32])
	if err := checkSegmentSize(sb.segmentSize); err != nil {
		return nil, corruptf(path, 40, "superblock segment size: %v", err)
	}
	return sb, nil
}

// putSegmentHeader fills b[:segmentHdrLen] with the header of segment num.
func putSegmentHeader(b []byte, uuid [16]byte, num uint64) {
	clear(b[:segmentHdrLen])
	copy(b[0:8], segmentMagic)
	le.PutUint32(b[8:], FormatVersion)
	le.PutUint32(b[12:], segmentHdrLen)
	copy(b[16:32], uuid[:])
	le.PutUint64(b[32:], num)
	le.PutUint32(b[40:], crc(b[:40]))
}

func checkSegmentHeader(path string, b []byte, uuid [16]byte, num uint64) error {
	bad := func(off int64, format string, args ...any) error {
		e := corruptf(path, off, format, args...)
		e.Segment = num
		return e
	}
	if len(b) < segmentHdrLen {
		return bad(0, "segment header truncated to %d bytes", len(b))
	}
	if string(b[0:8]) != segmentMagic {
		return bad(0, "bad segment magic")
	}
	if v := le.Uint32(b[8:]); v != FormatVersion {
		return fmt.Errorf("%w: segment %s has format version %d, this build reads version %d",
			ErrVersion, path, v, FormatVersion)
	}
	if got, want := le.Uint32(b[40:]), crc(b[:40]); got != want {
		return bad(40, "segment header crc 0x%08x, computed 0x%08x", got, want)
	}
	if n := le.Uint32(b[12:]); n != segmentHdrLen {
		return bad(12, "segment header length %d, want %d", n, segmentHdrLen)
	}
	if [16]byte(b[16:32]) != uuid {
		return bad(16, "segment belongs to filesystem %x, not %x", b[16:32], uuid[:])
	}
	if n := le.Uint64(b[32:]); n != num {
		return bad(32, "segment header says number %d", n)
	}
	return nil
}

// MetaKind tells a full metadata image from a delta.
type MetaKind uint32

const (
	MetaCheckpoint MetaKind = 1
	MetaDelta      MetaKind = 2
)

func (k MetaKind) String() string {
	switch k {
	case MetaCheckpoint:
		return "checkpoint"
	case MetaDelta:
		return "delta"
	}
	return "MetaKind(" + strconv.FormatUint(uint64(k), 10) + ")"
}

func (k MetaKind) valid() bool { return k == MetaCheckpoint || k == MetaDelta }

func putMetaHeader(b []byte, kind MetaKind, seq uint64, uuid [16]byte) {
	clear(b[:metaHdrLen])
	copy(b[0:8], metaMagic)
	le.PutUint32(b[8:], FormatVersion)
	le.PutUint32(b[12:], uint32(kind))
	le.PutUint64(b[16:], seq)
	copy(b[24:40], uuid[:])
	le.PutUint32(b[40:], crc(b[:40]))
}

// checkMetaHeader verifies a meta file header against what its name says.
func checkMetaHeader(path string, b []byte, kind MetaKind, seq uint64, uuid [16]byte) error {
	if len(b) < metaHdrLen || string(b[0:8]) != metaMagic {
		return corruptf(path, 0, "bad meta file magic")
	}
	if v := le.Uint32(b[8:]); v != FormatVersion {
		return fmt.Errorf("%w: meta file %s has format version %d, this build reads version %d",
			ErrVersion, path, v, FormatVersion)
	}
	if got, want := le.Uint32(b[40:]), crc(b[:40]); got != want {
		return corruptf(path, 40, "meta header crc 0x%08x, computed 0x%08x", got, want)
	}
	if k := MetaKind(le.Uint32(b[12:])); k != kind {
		return corruptf(path, 12, "header kind %v, name says %v", k, kind)
	}
	if s := le.Uint64(b[16:]); s != seq {
		return corruptf(path, 16, "header sequence %d, name says %d", s, seq)
	}
	if [16]byte(b[24:40]) != uuid {
		return corruptf(path, 24, "meta file belongs to filesystem %x, not %x", b[24:40], uuid[:])
	}
	return nil
}

func putMetaTrailer(b []byte, streamLen uint64, sum uint32) {
	le.PutUint64(b[0:], streamLen)
	le.PutUint32(b[8:], sum)
	copy(b[12:16], metaTrailMagic)
}

func segmentName(num uint64) string { return fmt.Sprintf("%016x%s", num, segmentExt) }

func parseSegmentName(name string) (uint64, bool) {
	hex, ok := strings.CutSuffix(name, segmentExt)
	if !ok || len(hex) != 16 {
		return 0, false
	}
	n, err := strconv.ParseUint(hex, 16, 64)
	if err != nil || n == 0 || segmentName(n) != name {
		return 0, false
	}
	return n, true
}

func metaName(kind MetaKind, seq uint64) string { return fmt.Sprintf("%v-%016x", kind, seq) }

// parseMetaName recognises committed meta file names. ours reports whether
// the name uses one of the meta prefixes at all, so that a malformed
// "checkpoint-..." is reported instead of ignored.
func parseMetaName(name string) (kind MetaKind, seq uint64, ours, ok bool) {
	for _, k := range []MetaKind{MetaCheckpoint, MetaDelta} {
		hex, found := strings.CutPrefix(name, k.String()+"-")
		if !found {
			continue
		}
		n, err := strconv.ParseUint(hex, 16, 64)
		if err != nil || n == 0 || metaName(k, n) != name {
			return 0, 0, true, false
		}
		return k, n, true, true
	}
	return 0, 0, false, false
}

// alignUp rounds n up to the next multiple of BlockSize.
func alignUp(n int64) int64 { return (n + BlockSize - 1) &^ (BlockSize - 1) }

func (s *Store) segmentPath(num uint64) string { return s.space.path(num) }

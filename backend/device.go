// The block-device backend (backend.type: device): the segments and the
// metadata of a backend directory at fixed offsets of a block device, or of
// a regular file used as one. OpenDevice opens it; the Store API is the
// same as for a directory. Segment slots and their seals are in
// devspace.go, the meta ring in ring.go.
//
// # Device layout
//
// All offsets are multiples of 4 KiB; integers little-endian.
//
//	offset              size              content
//	0                   4 KiB             superblock copy A
//	4 KiB               4 KiB             superblock copy B (same bytes; one torn write cannot lose both)
//	MetaOff (8 KiB)     MetaSize          meta ring: meta records (the meta file format of doc.go,
//	                                      each 4 KiB aligned), written in sequence, wrapping
//	SlotOff             SlotCount slots   segment slots; slot i at SlotOff + i*(4 KiB + SegmentSize),
//	                                      holding a segment exactly as a segment file does (doc.go):
//	                                      header (magic, version, uuid, segment number, CRC) then records
//
// Segment numbers keep growing as in the directory backend; a slot is free
// when its header is not a valid header of this device's uuid. Removing a
// segment zeroes its slot's header (and syncs) before the slot is reused,
// so a crash never leaves a slot that two segment numbers could claim.
//
// # Device superblock (first 128 bytes of each copy)
//
//	offset size field
//	     0    8 magic "DCBKDEVS"
//	     8    4 format version (1)
//	    12    4 superblock length (128)
//	    16   16 filesystem uuid
//	    32    8 creation time, Unix nanoseconds
//	    40    8 segment size (data capacity of a slot)
//	    48    8 device bytes used (the device's size at format time)
//	    56    8 meta region offset
//	    64    8 meta region size
//	    72    8 slot region offset
//	    80    8 slot count
//	    88   36 reserved, zero
//	   124    4 CRC-32C of bytes 0..123
//
// # Refusing foreign content
//
// OpenDevice refuses, writing nothing: a device whose first 68 KiB are not
// all zero and hold no dcache superblock (ErrForeign, naming a recognised
// signature: ext2/3/4, XFS, btrfs, LUKS, a dcache log replica, a partition
// table), a superblock of another version (ErrVersion), and a dcache device
// of another filesystem uuid when the caller expects one (ErrOtherFS). A
// device whose first 68 KiB are all zeros is taken as empty and formatted
// (only those bytes are looked at: data further in, behind a zeroed start,
// is not detected). FormatDevice writes a fresh device whatever it holds;
// `dcache format --yes --backend` calls it, the only way to reuse a device,
// consistent with how `dcache format` treats log replicas.
package backend

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"time"
)

// Device is a block device, or a regular file used as one.
type Device interface {
	io.ReaderAt
	io.WriterAt
	Sync() error
	Size() int64
}

var (
	// ErrForeign: the device holds data that is not a dcache backend.
	ErrForeign = errors.New("backend: device holds other data")
	// ErrOtherFS: the device is a dcache backend of another filesystem.
	ErrOtherFS = errors.New("backend: device belongs to another dcache filesystem")
	// ErrDeviceSmall: the device cannot hold the metadata region and two slots.
	ErrDeviceSmall = errors.New("backend: device too small")
)

const (
	devMagic    = "DCBKDEVS"
	devSBLen    = 128
	devSBCopies = 2
	devProbeLen = 68 << 10 // the btrfs superblock is at 64 KiB
	devMetaOff  = devSBCopies * BlockSize
	minDevSlots = 2
)

// devLayout is the decoded device superblock.
type devLayout struct {
	uuid       [16]byte
	ctimeNanos int64
	segSize    int64
	devSize    int64
	metaOff    int64
	metaSize   int64
	slotOff    int64
	slotCount  int64
}

// slotLen is the length of one slot: header and data.
func (l *devLayout) slotLen() int64 { return segmentHdrLen + l.segSize }

// slotOffset is where slot i starts.
func (l *devLayout) slotOffset(i int64) int64 { return l.slotOff + i*l.slotLen() }

// planLayout divides a device of size bytes: 1/32 of it (at least 4 MiB,
// at most 1 GiB) for the meta ring, the rest in slots.
func planLayout(size, segSize int64) (devLayout, error) {
	if err := checkSegmentSize(segSize); err != nil {
		return devLayout{}, fmt.Errorf("%w: segment size: %v", ErrConfig, err)
	}
	meta := min(max(size/32, 4<<20), 1<<30)
	meta = meta &^ (BlockSize - 1)
	l := devLayout{segSize: segSize, devSize: size, metaOff: devMetaOff, metaSize: meta}
	l.slotOff = l.metaOff + l.metaSize
	if size > l.slotOff {
		l.slotCount = (size - l.slotOff) / l.slotLen()
	}
	if l.slotCount < minDevSlots {
		return devLayout{}, fmt.Errorf("%w: %d bytes hold %d slots of %d bytes after %d bytes of metadata; need %d",
			ErrDeviceSmall, size, l.slotCount, l.slotLen(), l.slotOff, minDevSlots)
	}
	return l, nil
}

func (l *devLayout) encode() []byte {
	b := make([]byte, BlockSize)
	copy(b[0:8], devMagic)
	le.PutUint32(b[8:], FormatVersion)
	le.PutUint32(b[12:], devSBLen)
	copy(b[16:32], l.uuid[:])
	le.PutUint64(b[32:], uint64(l.ctimeNanos))
	le.PutUint64(b[40:], uint64(l.segSize))
	le.PutUint64(b[48:], uint64(l.devSize))
	le.PutUint64(b[56:], uint64(l.metaOff))
	le.PutUint64(b[64:], uint64(l.metaSize))
	le.PutUint64(b[72:], uint64(l.slotOff))
	le.PutUint64(b[80:], uint64(l.slotCount))
	le.PutUint32(b[124:], crc(b[:124]))
	return b
}

// decodeDevSuperblock checks magic, version (before the CRC, as for the
// directory superblock), length, CRC and that the layout fits size.
func decodeDevSuperblock(name string, b []byte, size int64) (*devLayout, error) {
	if len(b) < devSBLen || string(b[0:8]) != devMagic {
		return nil, corruptf(name, 0, "bad device superblock magic")
	}
	if v := le.Uint32(b[8:]); v != FormatVersion {
		return nil, fmt.Errorf("%w: %s has format version %d, this build reads version %d", ErrVersion, name, v, FormatVersion)
	}
	if n := le.Uint32(b[12:]); n != devSBLen {
		return nil, corruptf(name, 12, "device superblock length %d, want %d", n, devSBLen)
	}
	if got, want := le.Uint32(b[124:]), crc(b[:124]); got != want {
		return nil, corruptf(name, 124, "device superblock crc 0x%08x, computed 0x%08x", got, want)
	}
	l := &devLayout{
		ctimeNanos: int64(le.Uint64(b[32:])),
		segSize:    int64(le.Uint64(b[40:])),
		devSize:    int64(le.Uint64(b[48:])),
		metaOff:    int64(le.Uint64(b[56:])),
		metaSize:   int64(le.Uint64(b[64:])),
		slotOff:    int64(le.Uint64(b[72:])),
		slotCount:  int64(le.Uint64(b[80:])),
	}
	copy(l.uuid[:], b[16:32])
	if err := checkSegmentSize(l.segSize); err != nil {
		return nil, corruptf(name, 40, "device superblock segment size: %v", err)
	}
	if l.metaOff != devMetaOff || l.slotOff != l.metaOff+l.metaSize || l.slotCount < minDevSlots ||
		l.slotOffset(l.slotCount) > l.devSize {
		return nil, corruptf(name, 56, "device layout does not add up: meta %d+%d, %d slots of %d at %d, device %d",
			l.metaOff, l.metaSize, l.slotCount, l.slotLen(), l.slotOff, l.devSize)
	}
	if l.devSize > size {
		return nil, corruptf(name, 48, "formatted for %d bytes, the device has %d", l.devSize, size)
	}
	return l, nil
}

// probeKind is what a device holds.
type probeKind int

const (
	probeEmpty   probeKind = iota // all zeros at the start
	probeDcache                   // a dcache backend superblock
	probeForeign                  // anything else
)

// signatures recognised in foreign content, for the refusal message.
var signatures = []struct {
	off  int
	sig  []byte
	what string
}{
	{1080, []byte{0x53, 0xef}, "an ext2/3/4 filesystem"},
	{0, []byte("XFSB"), "an XFS filesystem"},
	{0, []byte("LUKS\xba\xbe"), "a LUKS volume"},
	{0, []byte("DCLOGSB\x00"), "a dcache log replica"},
	{65536 + 64, []byte("_BHRfS_M"), "a btrfs filesystem"},
	{510, []byte{0x55, 0xaa}, "a partition table or boot sector"},
}

// describeForeign names what foreign content looks like.
func describeForeign(b []byte) string {
	for _, s := range signatures {
		if s.off+len(s.sig) > len(b) {
			continue
		}
		if bytes.Equal(b[s.off:s.off+len(s.sig)], s.sig) {
			return s.what
		}
	}
	for i, c := range b {
		if c != 0 {
			return fmt.Sprintf("unknown data (first non-zero byte at offset %d)", i)
		}
	}
	return "unknown data"
}

// probeDevice reads the start of dev and classifies it. It writes nothing.
func probeDevice(name string, dev Device) (probeKind, *devLayout, error) {
	n := min(int64(devProbeLen), dev.Size())
	b := make([]byte, n)
	if _, err := dev.ReadAt(b, 0); err != nil && err != io.EOF {
		return 0, nil, fmt.Errorf("backend: read %s: %w", name, err)
	}
	if !bytes.HasPrefix(b, []byte(devMagic)) {
		if isZero(b) {
			return probeEmpty, nil, nil
		}
		return probeForeign, nil, fmt.Errorf("%w: %s holds %s; format it explicitly to use it as a backend",
			ErrForeign, name, describeForeign(b))
	}
	// Copy A first; a torn copy A falls back to copy B.
	l, errA := decodeDevSuperblock(name, b[:BlockSize], dev.Size())
	if errA == nil {
		return probeDcache, l, nil
	}
	if errors.Is(errA, ErrVersion) {
		return probeDcache, nil, errA
	}
	l, errB := decodeDevSuperblock(name, b[BlockSize:2*BlockSize], dev.Size())
	if errB != nil {
		return probeDcache, nil, errors.Join(errA, errB)
	}
	return probeDcache, l, nil
}

func isZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// FormatDevice writes a fresh backend on dev, whatever it held: both
// superblock copies, a zeroed start of the meta ring and zeroed slot
// headers, then a sync. It returns the new filesystem uuid.
func FormatDevice(name string, dev Device, segSize int64) ([16]byte, error) {
	if segSize == 0 {
		segSize = DefaultSegmentSize
	}
	l, err := planLayout(dev.Size(), segSize)
	if err != nil {
		return [16]byte{}, err
	}
	l.ctimeNanos = time.Now().UnixNano()
	if _, err := rand.Read(l.uuid[:]); err != nil {
		return [16]byte{}, fmt.Errorf("backend: make uuid: %w", err)
	}
	l.uuid[6] = l.uuid[6]&0x0f | 0x40
	l.uuid[8] = l.uuid[8]&0x3f | 0x80
	zero := make([]byte, BlockSize)
	// Invalidate first: a crash part way leaves a device that probes as
	// empty or foreign, never as a half-formatted dcache device.
	for i := range devSBCopies {
		if _, err := dev.WriteAt(zero, int64(i)*BlockSize); err != nil {
			return [16]byte{}, fmt.Errorf("backend: format %s: %w", name, err)
		}
	}
	if _, err := dev.WriteAt(zero, l.metaOff); err != nil {
		return [16]byte{}, fmt.Errorf("backend: format %s: %w", name, err)
	}
	for i := range l.slotCount {
		if _, err := dev.WriteAt(zero, l.slotOffset(i)); err != nil {
			return [16]byte{}, fmt.Errorf("backend: format %s: slot %d: %w", name, i, err)
		}
	}
	if err := dev.Sync(); err != nil {
		return [16]byte{}, fmt.Errorf("backend: format %s: %w", name, err)
	}
	sb := l.encode()
	for i := range devSBCopies {
		if _, err := dev.WriteAt(sb, int64(i)*BlockSize); err != nil {
			return [16]byte{}, fmt.Errorf("backend: format %s: superblock: %w", name, err)
		}
	}
	if err := dev.Sync(); err != nil {
		return [16]byte{}, fmt.Errorf("backend: format %s: %w", name, err)
	}
	return l.uuid, nil
}

// openDeviceLayout checks dev before use: an all-zero device is formatted
// (created reports it), a dcache device is accepted when want is zero or
// its uuid, anything else is refused without a write.
func openDeviceLayout(name string, dev Device, segSize int64, want [16]byte) (l *devLayout, created bool, err error) {
	kind, l, err := probeDevice(name, dev)
	switch {
	case err != nil:
		return nil, false, err
	case kind == probeEmpty:
		if _, err := FormatDevice(name, dev, segSize); err != nil {
			return nil, false, err
		}
		_, l, err = probeDevice(name, dev)
		if err != nil {
			return nil, false, err
		}
		return l, true, nil
	}
	if want != ([16]byte{}) && l.uuid != want {
		return nil, false, fmt.Errorf("%w: %s holds filesystem %x, expected %x; format it explicitly to reuse it",
			ErrOtherFS, name, l.uuid, want)
	}
	return l, false, nil
}

// scanSlots reads every slot header and maps segment numbers to slots.
// Slots without a valid header of this uuid are free.
func scanSlots(name string, dev Device, l *devLayout) (segs map[uint64]int64, free []int64, err error) {
	segs = make(map[uint64]int64)
	hdr := make([]byte, segmentHdrLen)
	for i := range l.slotCount {
		if _, err := dev.ReadAt(hdr, l.slotOffset(i)); err != nil {
			return nil, nil, fmt.Errorf("backend: read %s slot %d: %w", name, i, err)
		}
		num := le.Uint64(hdr[32:])
		if num == 0 || checkSegmentHeader(name, hdr, l.uuid, num) != nil {
			free = append(free, i)
			continue
		}
		if j, dup := segs[num]; dup {
			return nil, nil, corruptf(name, l.slotOffset(i), "segment %d in slots %d and %d", num, j, i)
		}
		segs[num] = i
	}
	return segs, free, nil
}

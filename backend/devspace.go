package backend

import (
	"errors"
	"fmt"
	"io"
	iofs "io/fs"
	"os"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// DeviceFile is a block device, or a regular file used as one, opened for
// a backend: read-write, with an exclusive flock(2) held until Close.
type DeviceFile struct {
	f    *os.File
	size int64
}

var _ Device = (*DeviceFile)(nil)

// OpenDeviceFile opens path (a block device or a regular file) and takes
// an exclusive, non-blocking lock on it. A device locked by another process
// is ErrInUse. Nothing is written.
func OpenDeviceFile(path string) (*DeviceFile, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("backend: open device: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("backend: stat device: %w", err)
	}
	if !st.Mode().IsRegular() && st.Mode()&iofs.ModeDevice == 0 {
		f.Close()
		return nil, fmt.Errorf("%w: %s is neither a block device nor a regular file", ErrNotBackend, path)
	}
	if err := flock(f, unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w: %s is locked by another process", ErrInUse, path)
		}
		return nil, fmt.Errorf("backend: lock device: %w", err)
	}
	size, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("backend: size of device: %w", err)
	}
	return &DeviceFile{f: f, size: size}, nil
}

func (d *DeviceFile) ReadAt(p []byte, off int64) (int, error)  { return d.f.ReadAt(p, off) }
func (d *DeviceFile) WriteAt(p []byte, off int64) (int, error) { return d.f.WriteAt(p, off) }
func (d *DeviceFile) Sync() error                              { return d.f.Sync() }
func (d *DeviceFile) Size() int64                              { return d.size }
func (d *DeviceFile) Name() string                             { return d.f.Name() }

// Close releases the lock and closes the device.
func (d *DeviceFile) Close() error {
	uerr := flock(d.f, unix.LOCK_UN)
	if err := d.f.Close(); err != nil {
		return err
	}
	return uerr
}

// DeviceOptions says how OpenDevice treats what it finds.
type DeviceOptions struct {
	// Expect, when not zero, is the filesystem uuid the device must hold;
	// a dcache device of another uuid is refused (ErrOtherFS).
	Expect [16]byte
}

// OpenDevice opens the backend on dev (named name in messages). An all-zero
// device is formatted (created is true); a dcache device is opened; a
// device holding anything else is refused with ErrForeign, one of another
// filesystem with ErrOtherFS, one of another format version with
// ErrVersion, and nothing is written when it refuses. closer (may be nil)
// is closed with the store, e.g. the DeviceFile that holds the lock; when
// OpenDevice fails, closing it is left to the caller.
func OpenDevice(name string, dev Device, closer io.Closer, cfg Config, opt DeviceOptions, log *logrus.Entry) (s *Store, created bool, err error) {
	askedSegSize := cfg.SegmentSize
	cfg, err = cfg.withDefaults()
	if err != nil {
		return nil, false, err
	}
	log = orDiscard(log)
	log = log.WithField("device", name)
	l, created, err := openDeviceLayout(name, dev, cfg.SegmentSize, opt.Expect)
	if err != nil {
		return nil, false, err
	}
	if !created && askedSegSize != 0 && l.segSize != askedSegSize {
		log.WithFields(logrus.Fields{"configured": askedSegSize, "superblock": l.segSize}).
			Warn("segment size differs from the backend's; using the backend's")
	}
	if closer == nil {
		closer = io.NopCloser(nil)
	}
	s = newStore(log, l.uuid, l.segSize, closer, cfg)
	s.name = name
	sp := &devSpace{name: name, dev: dev, l: l}
	if err := sp.load(); err != nil {
		return nil, false, err
	}
	s.space = sp
	if s.ring, err = loadMetaRing(name, dev, l, log); err != nil {
		return nil, false, err
	}
	if err := s.scan(); err != nil {
		return nil, false, err
	}
	s.logOpen(created)
	return s, created, nil
}

// FormatDeviceFile formats the device or file at path (see FormatDevice),
// whatever it holds. It is the only way to reuse a device that holds other
// data.
func FormatDeviceFile(path string, segSize int64) ([16]byte, error) {
	d, err := OpenDeviceFile(path)
	if err != nil {
		return [16]byte{}, err
	}
	id, err := FormatDevice(path, d, segSize)
	if cerr := d.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("backend: close %s: %w", path, cerr)
	}
	return id, err
}

// Segment slots. Slot i holds a segment exactly as a segment file holds it
// (header block, then records). Two seal records in the header block, at
// bytes 512 and 1024, record how much of the segment is durable; Sync
// writes them alternately after the data is synced:
//
//	offset size field
//	     0    8 magic "DCBKSEAL"
//	     8    8 segment number
//	    16    8 seal counter (the copy with the higher valid counter wins)
//	    24    8 segment length: header and durable records
//	    32   16 filesystem uuid
//	    48   12 zero
//	    60    4 CRC-32C of bytes 0..59
//
// Each seal is one 512-byte sector, the unit a device writes atomically; a
// torn seal write leaves the other copy. A segment without a valid seal
// holds nothing durable (length = header).
const (
	sealMagic = "DCBKSEAL"
	sealOff   = 512
	sealLen   = 64
	sealStep  = 512
)

func putSeal(b []byte, uuid [16]byte, num, counter uint64, length int64) {
	clear(b[:sealLen])
	copy(b[0:8], sealMagic)
	le.PutUint64(b[8:], num)
	le.PutUint64(b[16:], counter)
	le.PutUint64(b[24:], uint64(length))
	copy(b[32:48], uuid[:])
	le.PutUint32(b[60:], crc(b[:60]))
}

// readSeal returns the counter and length of a valid seal of segment num.
func readSeal(b []byte, uuid [16]byte, num uint64, limit int64) (counter uint64, length int64, ok bool) {
	if string(b[0:8]) != sealMagic || le.Uint32(b[60:]) != crc(b[:60]) ||
		le.Uint64(b[8:]) != num || [16]byte(b[32:48]) != uuid {
		return 0, 0, false
	}
	length = int64(le.Uint64(b[24:]))
	if length < segmentHdrLen || length > limit {
		return 0, 0, false
	}
	return le.Uint64(b[16:]), length, true
}

// devSpace keeps segments in the slots of a device.
type devSpace struct {
	name string
	dev  Device
	l    *devLayout

	mu    sync.Mutex
	slots map[uint64]int64 // segment number -> slot
	lens  map[uint64]int64 // segment number -> sealed length, from load
	free  []int64          // free slots, ascending
}

var _ segSpace = (*devSpace)(nil)

func (d *devSpace) load() error {
	segs, free, err := scanSlots(d.name, d.dev, d.l)
	if err != nil {
		return err
	}
	d.slots, d.free = segs, free
	d.lens = make(map[uint64]int64, len(segs))
	hdr := make([]byte, segmentHdrLen)
	for num, slot := range segs {
		if _, err := d.dev.ReadAt(hdr, d.l.slotOffset(slot)); err != nil {
			return fmt.Errorf("backend: read %s slot %d: %w", d.name, slot, err)
		}
		length, best := int64(segmentHdrLen), uint64(0)
		for c := range 2 {
			if ctr, n, ok := readSeal(hdr[sealOff+c*sealStep:], d.l.uuid, num, d.l.slotLen()); ok && ctr >= best {
				best, length = ctr, n
			}
		}
		d.lens[num] = length
	}
	return nil
}

func (d *devSpace) path(num uint64) string {
	return d.name + " segment " + strconv.FormatUint(num, 10)
}

func (d *devSpace) create(num uint64) (File, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, ok := d.slots[num]; ok {
		return nil, fmt.Errorf("%s: %w", d.path(num), iofs.ErrExist)
	}
	if len(d.free) == 0 {
		return nil, fmt.Errorf("%s: all %d slots hold segments: %w", d.path(num), d.l.slotCount, syscall.ENOSPC)
	}
	slot := d.free[0]
	d.free = d.free[1:]
	d.slots[num] = slot
	return &slotFile{d: d, num: num, base: d.l.slotOffset(slot), limit: d.l.slotLen(), size: d.l.slotLen()}, nil
}

func (d *devSpace) open(num uint64) (File, error) {
	d.mu.Lock()
	slot, ok := d.slots[num]
	d.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("%s: %w", d.path(num), iofs.ErrNotExist)
	}
	return &slotFile{d: d, num: num, base: d.l.slotOffset(slot), limit: d.l.slotLen(), size: d.l.slotLen()}, nil
}

// remove zeroes the slot's header block and syncs before the slot is free,
// so that no crash leaves a slot two segment numbers could claim.
func (d *devSpace) remove(num uint64) error {
	d.mu.Lock()
	slot, ok := d.slots[num]
	d.mu.Unlock()
	if !ok {
		return fmt.Errorf("%s: %w", d.path(num), iofs.ErrNotExist)
	}
	if _, err := d.dev.WriteAt(make([]byte, segmentHdrLen), d.l.slotOffset(slot)); err != nil {
		return fmt.Errorf("backend: clear %s: %w", d.path(num), err)
	}
	if err := d.dev.Sync(); err != nil {
		return fmt.Errorf("backend: clear %s: %w", d.path(num), err)
	}
	d.mu.Lock()
	delete(d.slots, num)
	delete(d.lens, num)
	i, _ := slices.BinarySearch(d.free, slot)
	d.free = slices.Insert(d.free, i, slot)
	d.mu.Unlock()
	return nil
}

// syncNames has nothing to do: slot headers are synced by the segment's
// own Sync, and remove syncs before returning.
func (d *devSpace) syncNames() error { return nil }

func (d *devSpace) list() (map[uint64]int64, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make(map[uint64]int64, len(d.lens))
	for num, n := range d.lens {
		out[num] = n
	}
	return out, nil
}

func (d *devSpace) statFS() (FSStat, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	total := uint64(d.l.slotCount) * uint64(d.l.segSize)
	free := uint64(len(d.free)) * uint64(d.l.segSize)
	return FSStat{Total: total, Free: free, Avail: free}, nil
}

// slotFile is a segment in a slot, seen as a file: offset 0 is the slot's
// header. SyncData syncs the device and then records the written length in
// the next seal copy.
type slotFile struct {
	d     *devSpace
	num   uint64
	base  int64 // device offset of the slot
	limit int64 // slot length: nothing is read or written past it
	size  int64 // reported by Stat

	end     int64  // writer: end of what was written
	counter uint64 // writer: seals written
}

func (f *slotFile) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 || off >= f.limit {
		return 0, io.EOF
	}
	short := false
	if off+int64(len(p)) > f.limit {
		p, short = p[:f.limit-off], true
	}
	n, err := f.d.dev.ReadAt(p, f.base+off)
	if err == nil && short {
		err = io.EOF
	}
	return n, err
}

func (f *slotFile) WriteAt(p []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(p)) > f.limit {
		return 0, fmt.Errorf("backend: write %s at %d+%d: beyond the slot of %d bytes: %w",
			f.d.path(f.num), off, len(p), f.limit, syscall.EINVAL)
	}
	n, err := f.d.dev.WriteAt(p, f.base+off)
	f.end = max(f.end, off+int64(n))
	return n, err
}

func (f *slotFile) Sync() error { return f.SyncData() }

func (f *slotFile) SyncData() error {
	if err := f.d.dev.Sync(); err != nil {
		return err
	}
	if f.end <= segmentHdrLen {
		return nil
	}
	f.counter++
	b := make([]byte, sealLen)
	putSeal(b, f.d.l.uuid, f.num, f.counter, f.end)
	if _, err := f.d.dev.WriteAt(b, f.base+sealOff+int64(f.counter%2)*sealStep); err != nil {
		return err
	}
	return f.d.dev.Sync()
}

func (f *slotFile) Stat() (iofs.FileInfo, error) {
	return slotInfo{name: f.d.path(f.num), size: f.size}, nil
}

func (f *slotFile) Close() error { return nil }

type slotInfo struct {
	name string
	size int64
}

func (i slotInfo) Name() string        { return i.name }
func (i slotInfo) Size() int64         { return i.size }
func (i slotInfo) Mode() iofs.FileMode { return 0o600 }
func (i slotInfo) ModTime() time.Time  { return time.Time{} }
func (i slotInfo) IsDir() bool         { return false }
func (i slotInfo) Sys() any            { return nil }

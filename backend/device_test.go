package backend

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fileDevice is a regular file used as a device.
type fileDevice struct {
	*os.File
	size int64
}

func (d fileDevice) Size() int64 { return d.size }

func newFileDevice(t *testing.T, size int64) fileDevice {
	t.Helper()
	f, err := os.Create(filepath.Join(t.TempDir(), "dev"))
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return fileDevice{f, size}
}

func TestDeviceOpenFormatsEmptyAndReopens(t *testing.T) {
	dev := newFileDevice(t, 64<<20)
	l, created, err := openDeviceLayout("dev", dev, 1<<20, [16]byte{})
	if err != nil || !created {
		t.Fatalf("open empty device: created=%v err=%v", created, err)
	}
	if l.slotCount < 50 || l.slotOffset(l.slotCount) > dev.size {
		t.Fatalf("layout %+v", l)
	}
	l2, created, err := openDeviceLayout("dev", dev, 1<<20, l.uuid)
	if err != nil || created || *l2 != *l {
		t.Fatalf("reopen: %+v created=%v err=%v, want %+v", l2, created, err, l)
	}
	// A torn copy A: copy B still identifies the device.
	if _, err := dev.WriteAt([]byte("garbage!"), 100); err != nil {
		t.Fatal(err)
	}
	if l3, _, err := openDeviceLayout("dev", dev, 1<<20, l.uuid); err != nil || *l3 != *l {
		t.Fatalf("with copy A torn: %+v, %v", l3, err)
	}
}

func TestDeviceRefusesForeignContent(t *testing.T) {
	tests := []struct {
		name string
		off  int64
		data []byte
		want error
		msg  string
	}{
		{"ext4", 1080, []byte{0x53, 0xef}, ErrForeign, "ext2/3/4"},
		{"xfs", 0, []byte("XFSB"), ErrForeign, "XFS"},
		{"btrfs", 65536 + 64, []byte("_BHRfS_M"), ErrForeign, "btrfs"},
		{"dcache log", 0, []byte("DCLOGSB\x00"), ErrForeign, "log replica"},
		{"random bytes", 9000, []byte{1, 2, 3}, ErrForeign, "offset 9000"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dev := newFileDevice(t, 32<<20)
			if _, err := dev.WriteAt(tc.data, tc.off); err != nil {
				t.Fatal(err)
			}
			_, _, err := openDeviceLayout("dev", dev, 1<<20, [16]byte{})
			if !errors.Is(err, tc.want) || !contains(err.Error(), tc.msg) {
				t.Fatalf("err %v, want %v naming %q", err, tc.want, tc.msg)
			}
			// Nothing was written: still foreign, still refused.
			if kind, _, _ := probeDevice("dev", dev); kind != probeForeign {
				t.Fatalf("probe after refusal: %v", kind)
			}
			// An explicit format takes it.
			id, err := FormatDevice("dev", dev, 1<<20)
			if err != nil {
				t.Fatal(err)
			}
			if l, created, err := openDeviceLayout("dev", dev, 1<<20, id); err != nil || created || l.uuid != id {
				t.Fatalf("after format: %+v created=%v err=%v", l, created, err)
			}
		})
	}
}

func TestDeviceRefusesOtherFilesystem(t *testing.T) {
	dev := newFileDevice(t, 32<<20)
	if _, err := FormatDevice("dev", dev, 1<<20); err != nil {
		t.Fatal(err)
	}
	other := [16]byte{1, 2, 3}
	if _, _, err := openDeviceLayout("dev", dev, 1<<20, other); !errors.Is(err, ErrOtherFS) {
		t.Fatalf("err %v, want ErrOtherFS", err)
	}
}

func TestDeviceRefusesNewerVersion(t *testing.T) {
	dev := newFileDevice(t, 32<<20)
	if _, err := FormatDevice("dev", dev, 1<<20); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, BlockSize)
	dev.ReadAt(b, 0)
	le.PutUint32(b[8:], FormatVersion+1)
	dev.WriteAt(b, 0)
	if _, _, err := openDeviceLayout("dev", dev, 1<<20, [16]byte{}); !errors.Is(err, ErrVersion) {
		t.Fatalf("err %v, want ErrVersion", err)
	}
}

func TestDeviceTooSmall(t *testing.T) {
	dev := newFileDevice(t, 5<<20)
	if _, err := FormatDevice("dev", dev, 1<<20); !errors.Is(err, ErrDeviceSmall) {
		t.Fatalf("err %v, want ErrDeviceSmall", err)
	}
}

func TestDeviceScanSlots(t *testing.T) {
	dev := newFileDevice(t, 32<<20)
	if _, err := FormatDevice("dev", dev, 1<<20); err != nil {
		t.Fatal(err)
	}
	_, l, err := probeDevice("dev", dev)
	if err != nil {
		t.Fatal(err)
	}
	hdr := make([]byte, segmentHdrLen)
	for slot, num := range map[int64]uint64{0: 7, 3: 9} {
		putSegmentHeader(hdr, l.uuid, num)
		dev.WriteAt(hdr, l.slotOffset(slot))
	}
	// A header of another filesystem is a free slot.
	putSegmentHeader(hdr, [16]byte{9}, 11)
	dev.WriteAt(hdr, l.slotOffset(5))
	segs, free, err := scanSlots("dev", dev, l)
	if err != nil {
		t.Fatal(err)
	}
	if len(segs) != 2 || segs[7] != 0 || segs[9] != 3 || int64(len(free)) != l.slotCount-2 {
		t.Fatalf("segments %v, %d free of %d", segs, len(free), l.slotCount)
	}
	putSegmentHeader(hdr, l.uuid, 7)
	dev.WriteAt(hdr, l.slotOffset(4))
	if _, _, err := scanSlots("dev", dev, l); !IsCorruption(err) {
		t.Fatalf("segment in two slots: %v", err)
	}
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }

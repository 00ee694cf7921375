package logarea

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os/exec"
	"strings"
	"testing"

	"github.com/dcache/dcache/internal/device"
)

// TestRefuse: devices that are not this log are refused, and left exactly
// as they were.
func TestRefuse(t *testing.T) {
	formatted := func(t *testing.T) []byte {
		devs := mems(1, testSize)
		mustFormat(t, devs)
		l := mustOpen(t, devs, Config{}, nil)
		if err := appendSynced(t, l, 1, 5); err != nil {
			t.Fatal(err)
		}
		l.Close()
		return devs[0].(*device.Mem).Bytes()
	}
	otherFS := testFS
	otherFS[0] ^= 0xff
	tests := []struct {
		name  string
		devs  func(t *testing.T) []*device.Mem
		fsID  [16]byte
		want  error
		cfg   Config
		check string // in the message
	}{
		{
			name: "not formatted (zeros)", want: ErrNotFormatted, fsID: testFS,
			devs: func(t *testing.T) []*device.Mem { return []*device.Mem{device.NewMem(testSize)} },
		},
		{
			name: "not formatted (other data)", want: ErrNotFormatted, fsID: testFS,
			devs: func(t *testing.T) []*device.Mem {
				return []*device.Mem{device.NewMemFrom("ext4", bytes.Repeat([]byte("some filesystem "), testSize/16))}
			},
		},
		{
			name: "not formatted (tiny device)", want: ErrNotFormatted, fsID: testFS, check: "only 4096 bytes",
			devs: func(t *testing.T) []*device.Mem { return []*device.Mem{device.NewMem(4096)} },
		},
		{
			name: "foreign filesystem id", want: ErrForeign, fsID: otherFS, check: "belongs to filesystem",
			devs: func(t *testing.T) []*device.Mem { return []*device.Mem{device.NewMemFrom("d", formatted(t))} },
		},
		{
			name: "unknown format version", want: ErrVersion, fsID: testFS, check: "version 99",
			devs: func(t *testing.T) []*device.Mem {
				img := formatted(t)
				for slot := range 2 {
					b := img[slot*sbSlotSize:]
					binary.LittleEndian.PutUint32(b[8:], 99)
					binary.LittleEndian.PutUint32(b[12:], slotCRC(b[:sbEncodedSize]))
				}
				return []*device.Mem{device.NewMemFrom("d", img)}
			},
		},
		{
			name: "smaller than formatted", want: ErrTooSmall, fsID: testFS,
			devs: func(t *testing.T) []*device.Mem {
				return []*device.Mem{device.NewMemFrom("d", formatted(t)[:testSize-4096])}
			},
		},
		{
			name: "replicas of two different logs", want: ErrForeign, fsID: testFS, check: "different logs",
			devs: func(t *testing.T) []*device.Mem {
				return []*device.Mem{device.NewMemFrom("a", formatted(t)), device.NewMemFrom("b", formatted(t))}
			},
		},
		{
			name: "same replica twice", want: ErrBadConfig, fsID: testFS, check: "both are replica 0",
			devs: func(t *testing.T) []*device.Mem {
				img := formatted(t)
				return []*device.Mem{device.NewMemFrom("a", img), device.NewMemFrom("b", img)}
			},
		},
		{
			name: "invalid config", want: ErrBadConfig, fsID: testFS, cfg: Config{BufferSize: 100},
			devs: func(t *testing.T) []*device.Mem { return []*device.Mem{device.NewMemFrom("d", formatted(t))} },
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			mdevs := tc.devs(t)
			var devs []device.Device
			var before [][]byte
			for _, m := range mdevs {
				devs = append(devs, m)
				before = append(before, m.Bytes())
			}
			l, err := Open(devs, tc.fsID, tc.cfg, nil)
			if err == nil {
				l.Close()
				t.Fatal("Open succeeded")
			}
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.check) {
				t.Fatalf("Open = %v, want %v containing %q", err, tc.want, tc.check)
			}
			for i, m := range mdevs {
				if !bytes.Equal(m.Bytes(), before[i]) {
					t.Errorf("device %d changed", i)
				}
			}
		})
	}
}

func TestFormatAndConfigErrors(t *testing.T) {
	if err := Format(nil, testFS); !errors.Is(err, ErrBadConfig) {
		t.Errorf("Format of no device = %v", err)
	}
	small := []device.Device{device.NewMem(MinSize(Config{}) - 1), device.NewMem(MinSize(Config{}) - 4096)}
	err := Format(small, testFS)
	if !errors.Is(err, ErrTooSmall) || strings.Count(err.Error(), "too small") != 2 {
		t.Errorf("Format of small devices = %v, want both reported", err)
	}
	twice := device.NewMem(MinSize(Config{}))
	if err := Format([]device.Device{twice, twice}, testFS); !errors.Is(err, ErrBadConfig) {
		t.Errorf("Format of one device twice = %v", err)
	}
	if err := Format([]device.Device{device.NewMem(MinSize(Config{}))}, testFS); err != nil {
		t.Errorf("Format at MinSize: %v", err)
	}
	err = Config{WriteQuorum: 5, BufferSize: 10}.Validate()
	if !errors.Is(err, ErrBadConfig) || !strings.Contains(err.Error(), "write_quorum") || !strings.Contains(err.Error(), "buffer_size") {
		t.Errorf("Validate = %v, want both keys", err)
	}
	if err := (Config{}).Validate(); err != nil {
		t.Errorf("zero Config: %v", err)
	}
	if _, err := Open(nil, testFS, Config{}, nil); !errors.Is(err, ErrBadConfig) {
		t.Errorf("Open of no device = %v", err)
	}
}

// TestImports holds the layering: logarea uses only the standard library,
// logrus, snappy, internal/device and internal/inflight (to say which
// replica a request waits on), and nothing of the cache or FUSE.
func TestImports(t *testing.T) {
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go tool not found")
	}
	out, err := exec.Command(gobin, "list", "-f", `{{join .Imports "\n"}}`, ".").Output()
	if err != nil {
		t.Fatal(err)
	}
	allowed := []string{"github.com/sirupsen/logrus", "github.com/golang/snappy", "github.com/dcache/dcache/internal/device", "github.com/dcache/dcache/internal/inflight"}
	for _, imp := range strings.Fields(string(out)) {
		if strings.Contains(imp, ".") && !contains(allowed, imp) {
			t.Errorf("logarea imports %s", imp)
		}
	}
	out, err = exec.Command(gobin, "list", "-deps", ".").Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, dep := range strings.Fields(string(out)) {
		for _, bad := range []string{
			"github.com/dcache/dcache/cachelayer", "github.com/dcache/dcache/backend", "github.com/dcache/dcache/fs",
			"github.com/dcache/dcache/snapshots", "github.com/hanwen/go-fuse", "github.com/spf13/viper",
		} {
			if dep == bad || strings.HasPrefix(dep, bad+"/") {
				t.Errorf("logarea depends on %s", dep)
			}
		}
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

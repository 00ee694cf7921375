package backend

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// Reproduce with:
//
//	go test -run '^$' -bench . -benchtime 2s ./backend
//
// The plainfile sub-benchmarks write or read the same volume with the same
// sync cadence through a plain file in the same directory: the ratio to them
// is the figure to watch, absolute numbers drift with the machine.

const benchRecord = 64 << 10

func BenchmarkAppendSync(b *testing.B) {
	for _, batch := range []int{1 << 20, 16 << 20} {
		name := fmt.Sprintf("64KiB/sync-every-%dMiB", batch>>20)
		b.Run("store/"+name, func(b *testing.B) { benchStoreAppend(b, batch) })
		b.Run("device/"+name, func(b *testing.B) { benchDeviceAppend(b, batch) })
		b.Run("plainfile/"+name, func(b *testing.B) { benchPlainAppend(b, batch) })
	}
}

// benchDeviceAppend runs the store on a sparse 4 GiB file used as a device;
// the oldest segments are removed after a sync to keep the disk use bounded.
func benchDeviceAppend(b *testing.B, batch int) {
	path := filepath.Join(b.TempDir(), "dev")
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		b.Fatal(err)
	}
	if err := os.Truncate(path, 4<<30); err != nil {
		b.Fatal(err)
	}
	d, err := OpenDeviceFile(path)
	if err != nil {
		b.Fatal(err)
	}
	s, _, err := OpenDevice(path, d, d, Config{}, DeviceOptions{}, nil)
	if err != nil {
		d.Close()
		b.Fatal(err)
	}
	defer s.Close()
	benchAppend(b, batch, func(p []byte, _ int) error {
		_, err := s.Append(p)
		return err
	}, func() error {
		if err := s.Sync(); err != nil {
			return err
		}
		for segs := s.Segments(); len(segs) > 16; segs = segs[1:] {
			if err := s.RemoveSegment(segs[0].Number); err != nil {
				return err
			}
		}
		return nil
	})
}

func benchStoreAppend(b *testing.B, batch int) {
	s, _, err := Open(OSFS{}, b.TempDir(), Config{}, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	benchAppend(b, batch, func(p []byte, _ int) error {
		_, err := s.Append(p)
		return err
	}, s.Sync)
}

func benchPlainAppend(b *testing.B, batch int) {
	f, err := OSFS{}.Create(filepath.Join(b.TempDir(), "plain"))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	benchAppend(b, batch, func(p []byte, i int) error {
		_, err := f.WriteAt(p, int64(i)*benchRecord)
		return err
	}, f.SyncData)
}

// benchAppend writes b.N records of benchRecord bytes, syncing after every
// batch bytes and at the end.
func benchAppend(b *testing.B, batch int, write func(p []byte, i int) error, sync func() error) {
	p := payload(1, benchRecord)
	perSync := batch / benchRecord
	b.SetBytes(benchRecord)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := write(p, i); err != nil {
			b.Fatal(err)
		}
		if (i+1)%perSync == 0 {
			if err := sync(); err != nil {
				b.Fatal(err)
			}
		}
	}
	if err := sync(); err != nil {
		b.Fatal(err)
	}
}

// benchRecords fills a store with n synced records of benchRecord bytes.
func benchRecords(b *testing.B, n int) (*Store, []Addr) {
	s, _, err := Open(OSFS{}, b.TempDir(), Config{}, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	addrs := make([]Addr, n)
	for i := range addrs {
		if addrs[i], err = s.Append(payload(uint64(i), benchRecord)); err != nil {
			b.Fatal(err)
		}
	}
	if err := s.Sync(); err != nil {
		b.Fatal(err)
	}
	return s, addrs
}

// BenchmarkRead reads 64 KiB records of a 16 MiB working set (in the page
// cache: this measures the backend's own cost, not the disk).
func BenchmarkRead(b *testing.B) {
	const n = 256
	b.Run("store", func(b *testing.B) {
		s, addrs := benchRecords(b, n)
		buf := make([]byte, benchRecord)
		b.SetBytes(benchRecord)
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			if err := s.Read(addrs[i%n], buf); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("store-parallel", func(b *testing.B) {
		s, addrs := benchRecords(b, n)
		b.SetBytes(benchRecord)
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			buf := make([]byte, benchRecord)
			for i := 0; pb.Next(); i++ {
				if err := s.Read(addrs[i%n], buf); err != nil {
					b.Fatal(err)
				}
			}
		})
	})
	b.Run("store-range-16", func(b *testing.B) {
		s, addrs := benchRecords(b, n)
		buf := make([]byte, 16*benchRecord)
		b.SetBytes(16 * benchRecord)
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			j := (i * 16) % n
			if err := s.ReadRange(addrs[j:j+16], buf); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("plainfile", func(b *testing.B) {
		path := filepath.Join(b.TempDir(), "plain")
		data := make([]byte, 0, n*benchRecord)
		for i := range n {
			data = append(data, payload(uint64(i), benchRecord)...)
		}
		if err := os.WriteFile(path, data, 0o644); err != nil {
			b.Fatal(err)
		}
		f, err := os.Open(path)
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		buf := make([]byte, benchRecord)
		b.SetBytes(benchRecord)
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			if _, err := f.ReadAt(buf, int64(i%n)*benchRecord); err != nil {
				b.Fatal(err)
			}
		}
	})
}

package logarea

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dcache/dcache/internal/device"
)

// fillLog formats dev and commits records of payload bytes until about
// fill bytes of the area are used, then closes the log cleanly. It returns
// the bytes of log written.
func fillLog(b *testing.B, dev device.Device, payload int, fill int64, compress bool) int64 {
	b.Helper()
	mustFormat(b, []device.Device{dev})
	l := mustOpen(b, []device.Device{dev}, Config{Compression: compress}, nil)
	for i := uint64(0); l.Stats().UsedBytes < fill; i++ {
		var rec Record
		if compress {
			// About 2:1 for snappy: random 64-byte runs between repeated ones.
			rec = bigRecord(i, payload)
			for j := 64; j < len(rec.Payload); j += 128 {
				copy(rec.Payload[j:min(j+64, len(rec.Payload))], bytes.Repeat([]byte("dcache! "), 8))
			}
		} else {
			rec = bigRecord(i, payload)
		}
		appendRec(b, l, rec)
	}
	used := l.Stats().UsedBytes
	if err := l.Close(); err != nil {
		b.Fatal(err)
	}
	return used
}

// BenchmarkReplay measures recovery: Open (superblocks, scan and checksum
// of every record) plus Replay (read, checksum, decompress, callback), per
// byte of log. Run with -benchtime=5x or more; setup fills 128 MiB.
func BenchmarkReplay(b *testing.B) {
	const fill = 128 << 20
	const devSize = fill + 32<<20
	for _, tc := range []struct {
		name     string
		payload  int
		compress bool
		file     bool
	}{
		{"mem/4KiB", 4096, false, false},
		{"mem/64KiB", 64 << 10, false, false},
		{"mem/4KiB-snappy2x", 4096, true, false},
		{"file/4KiB", 4096, false, true},
		{"file/64KiB", 64 << 10, false, true},
	} {
		b.Run(tc.name, func(b *testing.B) {
			var dev device.Device
			if tc.file {
				d, err := device.OpenFile(filepath.Join(b.TempDir(), "log"), devSize, true)
				if err != nil {
					b.Fatal(err)
				}
				defer d.Close()
				dev = d
			} else {
				dev = device.NewMem(devSize)
			}
			used := fillLog(b, dev, tc.payload, fill, tc.compress)
			b.SetBytes(used)
			var payload int64
			b.ResetTimer()
			for b.Loop() {
				l, err := Open([]device.Device{dev}, testFS, Config{}, nil)
				if err != nil {
					b.Fatal(err)
				}
				n := 0
				if _, err := l.Replay(0, func(_ LSN, r Record) error {
					n++
					payload += int64(len(r.Payload))
					return nil
				}); err != nil {
					b.Fatal(err)
				}
				if n == 0 {
					b.Fatal("nothing replayed")
				}
				if err := l.Close(); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(payload)/1e6/b.Elapsed().Seconds(), "payload-MB/s")
		})
	}
}

// BenchmarkAppendSync measures 4 KiB records each followed by a Sync, from
// 1 to 16 concurrent writers, on a preallocated file: group commit makes
// the writers share writes and fdatasyncs. A destager trims when the log
// is half full.
func BenchmarkAppendSync(b *testing.B) {
	for _, syncers := range []int{1, 2, 4, 8, 16} {
		b.Run(fmt.Sprintf("file/syncers=%d", syncers), func(b *testing.B) {
			benchAppend(b, syncers, true)
		})
	}
}

// BenchmarkAppend measures the commit path without Sync (the writer still
// writes every batch to the file).
func BenchmarkAppend(b *testing.B) {
	for _, syncers := range []int{1, 4} {
		b.Run(fmt.Sprintf("file/writers=%d", syncers), func(b *testing.B) {
			benchAppend(b, syncers, false)
		})
	}
}

func benchAppend(b *testing.B, writers int, doSync bool) {
	const devSize = 256 << 20
	d, err := device.OpenFile(filepath.Join(b.TempDir(), "log"), devSize, true)
	if err != nil {
		b.Fatal(err)
	}
	defer d.Close()
	devs := []device.Device{d}
	mustFormat(b, devs)
	l := mustOpen(b, devs, Config{}, nil)
	rec := bigRecord(1, 4096)
	var engine sync.Mutex
	var ops atomic.Int64
	var wg sync.WaitGroup
	ctx := context.Background()
	b.SetBytes(4096)
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ops.Add(1) <= int64(b.N) {
				e, err := l.Reserve(ctx, rec)
				if err != nil {
					b.Error(err)
					return
				}
				engine.Lock()
				lsn, err := l.Commit(e)
				engine.Unlock()
				if err != nil {
					b.Error(err)
					return
				}
				if doSync {
					if err := l.Sync(ctx, lsn); err != nil {
						b.Error(err)
						return
					}
				}
				if w == 0 && lsn%1024 == 0 {
					if st := l.Stats(); st.UsedBytes > st.AreaBytes/2 {
						if err := l.Sync(ctx, lsn); err != nil {
							b.Error(err)
							return
						}
						if err := l.Trim(lsn); err != nil {
							b.Error(err)
							return
						}
					}
				}
			}
		}()
	}
	wg.Wait()
	if err := l.Sync(ctx, l.LastLSN()); err != nil {
		b.Fatal(err)
	}
	elapsed := time.Since(start)
	b.StopTimer()
	st := l.Stats()
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "ops/s")
	if st.Batches > 0 {
		b.ReportMetric(st.AvgBatch, "recs/write")
	}
	if st.SyncRounds > 0 {
		b.ReportMetric(st.AvgGroup, "recs/sync")
	}
	if err := l.Close(); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkBaselineFileSync is the yardstick for BenchmarkAppendSync: what
// the same machine does natively, each writer with its own file, laid out
// with zeros first as fio does, and a 4 KiB write at a random offset and
// an fdatasync per op (fio with numjobs=N and fdatasync=1).
func BenchmarkBaselineFileSync(b *testing.B) {
	for _, writers := range []int{1, 2, 4, 8, 16} {
		b.Run(fmt.Sprintf("writers=%d", writers), func(b *testing.B) {
			const size = 64 << 20
			dir := b.TempDir()
			files := make([]device.Device, writers)
			for i := range files {
				d, err := device.OpenFile(filepath.Join(dir, fmt.Sprint(i)), size, true)
				if err != nil {
					b.Fatal(err)
				}
				defer d.Close()
				if err := writeZeros(d, 0, size); err != nil {
					b.Fatal(err)
				}
				if err := d.Sync(); err != nil {
					b.Fatal(err)
				}
				files[i] = d
			}
			buf := bigRecord(1, 4096).Payload
			var ops atomic.Int64
			var wg sync.WaitGroup
			b.SetBytes(4096)
			b.ResetTimer()
			start := time.Now()
			for w := range writers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					rng := rand.New(rand.NewPCG(uint64(w), 0))
					for ops.Add(1) <= int64(b.N) {
						if _, err := files[w].WriteAt(buf, int64(rng.IntN(size/4096))*4096); err != nil {
							b.Error(err)
							return
						}
						if err := files[w].Sync(); err != nil {
							b.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "ops/s")
		})
	}
}

package fs

import (
	"syscall"
	"testing"
)

// BenchmarkRequestStats is the per-request cost of statistics and
// in-flight tracking (begin and end of one request), which the FUSE write
// path pays; compare with go test -tags nostats.
func BenchmarkRequestStats(b *testing.B) {
	f := &FS{stats: newOpStats()}
	b.RunParallel(func(pb *testing.PB) {
		var off uint64
		for pb.Next() {
			rq := f.begin(opWrite, 42, off, nil)
			off += 4096
			f.end(&rq, 4096)
		}
	})
}

// BenchmarkRequestStatsAfterSyscall is the same after a syscall, as a FUSE
// request's statistics come right after the read of the request: on a
// kernel that isolates its page tables without PCIDs, every syscall
// empties the TLB, so each page the statistics touch costs a refill.
// Subtract the nostats figure (the syscall alone).
func BenchmarkRequestStatsAfterSyscall(b *testing.B) {
	f := &FS{stats: newOpStats()}
	var off uint64
	for b.Loop() {
		syscall.Getppid()
		rq := f.begin(opWrite, 42, off, nil)
		off += 4096
		f.end(&rq, 4096)
	}
}

package fs

import (
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

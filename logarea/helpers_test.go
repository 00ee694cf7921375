package logarea

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"

	"github.com/dcache/dcache/internal/device"
)

var testFS = [16]byte{0xdc, 0xac, 0x4e, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13}

// testSize is a small device: about 1.2 MiB of record area.
const testSize = 1<<20 + 256<<10

// testLog is a logger whose entries a test can inspect.
type testLog struct {
	entry *logrus.Entry
	hook  *logtest.Hook
}

func newTestLog() *testLog {
	l, hook := logtest.NewNullLogger()
	l.SetLevel(logrus.DebugLevel)
	return &testLog{entry: logrus.NewEntry(l).WithField("component", "logarea"), hook: hook}
}

// count returns how many entries at level contain substr.
func (t *testLog) count(level logrus.Level, substr string) int {
	n := 0
	for _, e := range t.hook.AllEntries() {
		if e.Level == level && strings.Contains(e.Message, substr) {
			n++
		}
	}
	return n
}

func (t *testLog) dump() string {
	var b strings.Builder
	for _, e := range t.hook.AllEntries() {
		fmt.Fprintf(&b, "%s: %s %v\n", e.Level, e.Message, e.Data)
	}
	return b.String()
}

func mems(n int, size int64) []device.Device {
	devs := make([]device.Device, n)
	for i := range devs {
		devs[i] = device.NewMem(size).SetName(fmt.Sprintf("mem%d", i))
	}
	return devs
}

func mustFormat(t testing.TB, devs []device.Device) {
	t.Helper()
	if err := Format(devs, testFS); err != nil {
		t.Fatal(err)
	}
}

func mustOpen(t testing.TB, devs []device.Device, cfg Config, tl *testLog) *Log {
	t.Helper()
	var entry *logrus.Entry
	if tl != nil {
		entry = tl.entry
	}
	l, err := Open(devs, testFS, cfg, entry)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// makeRecord returns a deterministic record for seed i, with payloads of
// varied sizes, some compressible and some not.
func makeRecord(i uint64, maxPayload int) Record {
	rng := rand.New(rand.NewPCG(i, 7))
	n := 0
	if maxPayload > 0 {
		n = rng.IntN(maxPayload + 1)
	}
	p := make([]byte, n)
	if i%3 == 0 {
		for j := 0; j < n; j += 8 {
			var w [8]byte
			binary.LittleEndian.PutUint64(w[:], rng.Uint64())
			copy(p[j:], w[:])
		}
	} else {
		copy(p, bytes.Repeat([]byte("dcache log "), n/11+1))
	}
	return Record{Type: uint8(1 + i%250), Flags: uint8(i), Obj: i * 11, Off: i * 4096, Len: uint32(i * 3), Payload: p}
}

func equalRecord(a, b Record) bool {
	return a.Type == b.Type && a.Flags == b.Flags && a.Obj == b.Obj && a.Off == b.Off && a.Len == b.Len && bytes.Equal(a.Payload, b.Payload)
}

// appendRec reserves and commits rec.
func appendRec(t testing.TB, l *Log, rec Record) LSN {
	t.Helper()
	e, err := l.Reserve(context.Background(), rec)
	if err != nil {
		t.Fatal(err)
	}
	lsn, err := l.Commit(e)
	if err != nil {
		t.Fatal(err)
	}
	return lsn
}

type replayed struct {
	lsn LSN
	rec Record
}

func replayAll(t testing.TB, l *Log, after LSN) ([]replayed, LSN) {
	t.Helper()
	var out []replayed
	last, err := l.Replay(after, func(lsn LSN, r Record) error {
		r.Payload = slices.Clone(r.Payload)
		out = append(out, replayed{lsn, r})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out, last
}

// waitWritten waits until the writer has written lsn to every healthy
// replica (without a sync).
func waitWritten(l *Log, lsn LSN) {
	for {
		l.mu.Lock()
		if l.writtenLSN >= lsn || l.failErr != nil {
			l.mu.Unlock()
			return
		}
		ch := l.durableCh
		l.mu.Unlock()
		<-ch
	}
}

// physical returns the device offset of lsn's record in l's area.
func physical(l *Log, lsn LSN) int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return areaOffset + int64(l.posLocked(lsn)%l.areaSize)
}

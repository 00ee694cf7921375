package logarea

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"syscall"
	"testing"

	"github.com/sirupsen/logrus"

	"github.com/dcache/dcache/internal/device"
)

// appendSynced appends records first..last (fixedRecord) and syncs them.
func appendSynced(t *testing.T, l *Log, first, last uint64) error {
	t.Helper()
	for i := first; i <= last; i++ {
		e, err := l.Reserve(context.Background(), fixedRecord(i))
		if err != nil {
			return err
		}
		lsn, err := l.Commit(e)
		if err != nil {
			return err
		}
		if lsn != LSN(i) {
			t.Fatalf("lsn %d, want %d", lsn, i)
		}
	}
	return l.Sync(context.Background(), LSN(last))
}

func checkReplay(t *testing.T, l *Log, after LSN, want int) {
	t.Helper()
	got, _ := replayAll(t, l, after)
	if len(got) != want {
		t.Fatalf("replayed %d records, want %d", len(got), want)
	}
	for i, g := range got {
		if g.lsn != after+LSN(i)+1 || !equalRecord(g.rec, fixedRecord(uint64(g.lsn))) {
			t.Fatalf("replayed record %d: lsn %d differs", i, g.lsn)
		}
	}
}

// TestReplicaFailure takes replicas out with EIO or a vanished device while
// the log runs, and checks the outcome for each quorum.
func TestReplicaFailure(t *testing.T) {
	tests := []struct {
		name     string
		replicas int
		quorum   Quorum
		failing  []int
		vanish   bool
		short    bool  // short writes instead of errors
		errno    error // instead of EIO
		lost     bool  // the quorum is lost
	}{
		{name: "majority of 3, one short-writes", replicas: 3, quorum: QuorumMajority, failing: []int{0}, short: true},
		{name: "majority of 3, one ENOSPC", replicas: 3, quorum: QuorumMajority, failing: []int{1}, errno: syscall.ENOSPC},
		{name: "majority of 3, one EIO", replicas: 3, quorum: QuorumMajority, failing: []int{1}},
		{name: "majority of 3, one vanishes", replicas: 3, quorum: QuorumMajority, failing: []int{2}, vanish: true},
		{name: "majority of 3, two EIO", replicas: 3, quorum: QuorumMajority, failing: []int{0, 2}, lost: true},
		{name: "all of 2, one EIO", replicas: 2, quorum: QuorumAll, failing: []int{0}, lost: true},
		{name: "all of 2, one vanishes", replicas: 2, quorum: QuorumAll, failing: []int{1}, vanish: true, lost: true},
		{name: "one of 2, one EIO", replicas: 2, quorum: QuorumOne, failing: []int{0}},
		{name: "one of 2, one vanishes", replicas: 2, quorum: QuorumOne, failing: []int{1}, vanish: true},
		{name: "one of 2, both EIO", replicas: 2, quorum: QuorumOne, failing: []int{0, 1}, lost: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			inner := mems(tc.replicas, testSize)
			mustFormat(t, inner)
			switches := make([]*device.Switch, tc.replicas)
			devs := make([]device.Device, tc.replicas)
			for i := range devs {
				errno := error(syscall.EIO)
				if tc.errno != nil {
					errno = tc.errno
				}
				switches[i] = device.NewSwitch(device.OpWrite|device.OpSync, errno)
				switch {
				case tc.vanish:
					switches[i] = device.Vanish()
				case tc.short:
					sw := device.NewSwitch(0, nil) // a flag only
					switches[i] = sw
					devs[i] = device.NewFaulty(inner[i], device.InjectorFunc(func(op device.Op) device.Fault {
						if sw.On() && op.Kind == device.OpWrite {
							return device.Fault{ShortWrite: true, N: op.Len / 2}
						}
						return device.Fault{}
					}))
					continue
				}
				devs[i] = device.NewFaulty(inner[i], switches[i])
			}
			tl := newTestLog()
			cfg := Config{WriteQuorum: tc.quorum}
			l := mustOpen(t, devs, cfg, tl)
			if err := appendSynced(t, l, 1, 20); err != nil {
				t.Fatal(err)
			}
			for _, i := range tc.failing {
				switches[i].Set(true)
			}
			err := appendSynced(t, l, 21, 40)
			if tc.lost {
				if !errors.Is(err, ErrQuorumLost) {
					t.Fatalf("append after failure = %v, want ErrQuorumLost", err)
				}
				if want := map[bool]error{false: syscall.EIO, true: device.ErrVanished}[tc.vanish]; !errors.Is(err, want) {
					t.Errorf("error %v does not carry the device error %v", err, want)
				}
				if _, err := l.Reserve(context.Background(), fixedRecord(99)); !errors.Is(err, ErrQuorumLost) {
					t.Errorf("Reserve after quorum loss = %v", err)
				}
				if err := l.Sync(context.Background(), 20); err != nil {
					t.Errorf("Sync of an acknowledged record = %v", err)
				}
				if err := l.Close(); !errors.Is(err, ErrQuorumLost) {
					t.Errorf("Close = %v, want ErrQuorumLost", err)
				}
			} else {
				if err != nil {
					t.Fatalf("append with quorum held: %v", err)
				}
				st := l.Stats()
				if st.Healthy != tc.replicas-len(tc.failing) || st.Error != "" {
					t.Errorf("stats: %d healthy, error %q", st.Healthy, st.Error)
				}
				for _, i := range tc.failing {
					if rs := st.Replicas[i]; rs.Health != HealthFailed || rs.LastError == "" {
						t.Errorf("replica %d: health %v, last error %q", i, rs.Health, rs.LastError)
					}
				}
				if tc.short && !strings.Contains(st.Replicas[tc.failing[0]].LastError, "short write") {
					t.Errorf("last error %q", st.Replicas[tc.failing[0]].LastError)
				}
				if tc.errno != nil && !strings.Contains(st.Replicas[tc.failing[0]].LastError, tc.errno.Error()) {
					t.Errorf("last error %q", st.Replicas[tc.failing[0]].LastError)
				}
				if err := l.Close(); err != nil {
					t.Fatal(err)
				}
			}
			if n := tl.count(logrus.ErrorLevel, "log replica failed"); n != len(tc.failing) {
				t.Errorf("%d replica failures logged, want %d\n%s", n, len(tc.failing), tl.dump())
			}

			// The devices come back: everything acknowledged is there, and
			// the failed replicas are brought up to date.
			for _, s := range switches {
				s.Set(false)
			}
			tl = newTestLog()
			l = mustOpen(t, devs, cfg, tl)
			defer l.Close()
			want := 40
			if tc.lost {
				want = 20
			}
			got, _ := replayAll(t, l, 0)
			if len(got) < want {
				t.Fatalf("replayed %d records, %d were acknowledged", len(got), want)
			}
			if !tc.lost {
				for _, i := range tc.failing {
					if r := l.Stats().Replicas[i]; r.Repaired != "rebuilt" || r.Health != HealthOK {
						t.Errorf("replica %d after reopen: %q, %v; want rebuilt and ok\n%s", i, r.Repaired, r.Health, tl.dump())
					}
				}
			}
		})
	}
}

// TestLaggingReplicaReconciled opens a log whose replicas stopped at
// different points of the same history.
func TestLaggingReplicaReconciled(t *testing.T) {
	devs := mems(2, testSize)
	mustFormat(t, devs)
	l := mustOpen(t, devs, Config{}, nil)
	if err := appendSynced(t, l, 1, 10); err != nil {
		t.Fatal(err)
	}
	lagging := devs[0].(*device.Mem).Bytes()
	if err := appendSynced(t, l, 11, 25); err != nil {
		t.Fatal(err)
	}
	ahead := devs[1].(*device.Mem).Bytes()
	l.Close()

	for _, order := range []string{"lagging first", "lagging second"} {
		t.Run(order, func(t *testing.T) {
			a, b := device.NewMemFrom("lagging", lagging), device.NewMemFrom("ahead", ahead)
			devs := []device.Device{a, b}
			if order == "lagging second" {
				devs = []device.Device{b, a}
			}
			tl := newTestLog()
			l := mustOpen(t, devs, Config{}, tl)
			checkReplay(t, l, 0, 25)
			if tl.count(logrus.WarnLevel, "diverge") != 1 {
				t.Errorf("divergence not reported\n%s", tl.dump())
			}
			if r := l.Stats().Replicas[0]; r.Repaired != "caught up" {
				t.Errorf("lagging replica: repaired %q", r.Repaired)
			}
			if err := appendSynced(t, l, 26, 30); err != nil {
				t.Fatal(err)
			}
			end := physical(l, 31)
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(a.Bytes()[areaOffset:end], b.Bytes()[areaOffset:end]) {
				t.Fatal("record areas differ after reconciliation")
			}
			tl = newTestLog()
			l = mustOpen(t, devs, Config{}, tl)
			defer l.Close()
			checkReplay(t, l, 0, 30)
			if n := tl.count(logrus.WarnLevel, ""); n != 0 {
				t.Errorf("%d warnings on a reconciled log\n%s", n, tl.dump())
			}
		})
	}
}

// TestCorruptReplicaRepaired damages a synced record on one replica: Open
// replays from the other and rewrites the damaged one, which then serves
// alone when the other is damaged in turn.
func TestCorruptReplicaRepaired(t *testing.T) {
	devs := mems(2, testSize)
	mustFormat(t, devs)
	l := mustOpen(t, devs, Config{}, nil)
	for b := uint64(0); b < 4; b++ {
		if err := appendSynced(t, l, 5*b+1, 5*b+5); err != nil {
			t.Fatal(err)
		}
	}
	off7 := physical(l, 7)
	imgs := [][]byte{devs[0].(*device.Mem).Bytes(), devs[1].(*device.Mem).Bytes()}
	l.Close()

	imgs[0][off7+headerSize+300] ^= 0x04
	a, b := device.NewMemFrom("a", imgs[0]), device.NewMemFrom("b", imgs[1])
	tl := newTestLog()
	l = mustOpen(t, []device.Device{a, b}, Config{}, tl)
	checkReplay(t, l, 0, 20)
	if tl.count(logrus.ErrorLevel, "corrupt") != 1 {
		t.Errorf("corruption not reported at Error\n%s", tl.dump())
	}
	if r := l.Stats().Replicas[0]; r.Repaired != "rebuilt" || r.Health != HealthOK {
		t.Errorf("corrupt replica: %q %v", r.Repaired, r.Health)
	}
	l.Close()

	img := b.Bytes()
	img[off7+headerSize+300] ^= 0x04
	tl = newTestLog()
	l = mustOpen(t, []device.Device{a, device.NewMemFrom("b", img)}, Config{}, tl)
	defer l.Close()
	checkReplay(t, l, 0, 20)
	if r := l.Stats().Replicas[1]; r.Repaired != "rebuilt" {
		t.Errorf("second corrupt replica: %q\n%s", r.Repaired, tl.dump())
	}
}

// TestNoGoodReplica: every replica corrupt, or too few usable: Open
// refuses with a clear error.
func TestNoGoodReplica(t *testing.T) {
	devs := mems(2, testSize)
	mustFormat(t, devs)
	l := mustOpen(t, devs, Config{}, nil)
	for b := uint64(0); b < 3; b++ {
		if err := appendSynced(t, l, 5*b+1, 5*b+5); err != nil {
			t.Fatal(err)
		}
	}
	off := physical(l, 4)
	imgs := [][]byte{devs[0].(*device.Mem).Bytes(), devs[1].(*device.Mem).Bytes()}
	l.Close()
	for _, img := range imgs {
		img[off+headerSize+1] ^= 1
	}
	a, b := device.NewMemFrom("a", imgs[0]), device.NewMemFrom("b", imgs[1])
	_, err := Open([]device.Device{a, b}, testFS, Config{}, nil)
	if !errors.Is(err, ErrNoReplica) || !IsCorruption(err) || !strings.Contains(err.Error(), "lsn 4") {
		t.Fatalf("Open = %v", err)
	}
	if !bytes.Equal(a.Bytes(), imgs[0]) || !bytes.Equal(b.Bytes(), imgs[1]) {
		t.Error("Open changed devices it refused")
	}

	// One replica of two given with QuorumAll: too few.
	c := device.NewMemFrom("c", devs[0].(*device.Mem).Bytes())
	if _, err := Open([]device.Device{c}, testFS, Config{}, nil); !errors.Is(err, ErrQuorumLost) {
		t.Errorf("Open with one of two replicas = %v, want ErrQuorumLost", err)
	}
	// With QuorumMajority of 2 (needs 2) too.
	if _, err := Open([]device.Device{c}, testFS, Config{WriteQuorum: QuorumMajority}, nil); !errors.Is(err, ErrQuorumLost) {
		t.Errorf("Open majority with one of two replicas = %v, want ErrQuorumLost", err)
	}
}

// TestMissingReplicaMajority opens a 3-replica log with one device absent.
func TestMissingReplicaMajority(t *testing.T) {
	devs := mems(3, testSize)
	mustFormat(t, devs)
	l := mustOpen(t, devs, Config{WriteQuorum: QuorumMajority}, nil)
	if err := appendSynced(t, l, 1, 10); err != nil {
		t.Fatal(err)
	}
	l.Close()
	l = mustOpen(t, []device.Device{devs[2], devs[0]}, Config{WriteQuorum: QuorumMajority}, nil)
	checkReplay(t, l, 0, 10)
	if err := appendSynced(t, l, 11, 15); err != nil {
		t.Fatal(err)
	}
	st := l.Stats()
	if st.Replicas[1].Health != HealthMissing || st.Healthy != 2 {
		t.Errorf("stats: replica 1 %v, healthy %d", st.Replicas[1].Health, st.Healthy)
	}
	l.Close()
	// The missing replica returns: it is rebuilt, since the metadata marks
	// it failed.
	l = mustOpen(t, devs, Config{WriteQuorum: QuorumMajority}, nil)
	defer l.Close()
	checkReplay(t, l, 0, 15)
	if r := l.Stats().Replicas[1]; r.Repaired != "rebuilt" {
		t.Errorf("returning replica: %q", r.Repaired)
	}
}

func TestHealthString(t *testing.T) {
	for h, want := range map[Health]string{HealthOK: "ok", HealthLagging: "lagging", HealthFailed: "failed", HealthMissing: "missing", 9: "Health(9)"} {
		if h.String() != want {
			t.Errorf("%d: %q", h, h.String())
		}
	}
	for q, want := range map[Quorum]string{QuorumAll: "all", QuorumMajority: "majority", QuorumOne: "one", 7: "Quorum(7)"} {
		if q.String() != want {
			t.Errorf("%d: %q", q, q.String())
		}
	}
}

// TestReplayAfterSourceFails: the replica Open chose as the replay source
// fails before Replay; Replay reads another one.
func TestReplayAfterSourceFails(t *testing.T) {
	inner := mems(3, testSize)
	mustFormat(t, inner)
	l := mustOpen(t, inner, Config{WriteQuorum: QuorumMajority}, nil)
	if err := appendSynced(t, l, 1, 10); err != nil {
		t.Fatal(err)
	}
	l.Close()
	reads := device.NewSwitch(device.OpRead, syscall.EIO)
	// Replica 0 is the source (first of the longest); its superblock write
	// at Open fails, and then its reads.
	devs := []device.Device{device.NewFaulty(inner[0], device.FailAfter(device.OpWrite, 1, syscall.EIO), reads), inner[1], inner[2]}
	tl := newTestLog()
	l = mustOpen(t, devs, Config{WriteQuorum: QuorumMajority}, tl)
	defer l.Close()
	if l.src != l.replicas[0] || l.Stats().Replicas[0].Health != HealthFailed {
		t.Fatalf("source %s, replica 0 %v\n%s", l.src.name, l.Stats().Replicas[0].Health, tl.dump())
	}
	reads.Set(true)
	checkReplay(t, l, 0, 10)
}

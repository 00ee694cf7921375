package logarea

import (
	"context"
	"fmt"
	"math/rand/v2"
	"runtime"
	"sync"
	"testing"

	"github.com/sirupsen/logrus"

	"github.com/dcache/dcache/internal/device"
)

// TestCrashRecovery follows pebble's crash-clone tests: random appends,
// Syncs and Trims on crashable devices, then a simulated power loss that
// keeps synced data and a random, possibly torn, subset of the rest; the
// log is reopened on what is left. After every crash the replayed records
// must be a prefix of what was committed that holds every synced record,
// and the log must go on from there. The devices are small, so the log
// wraps around many times.
func TestCrashRecovery(t *testing.T) {
	for _, tc := range []struct {
		replicas int
		quorum   Quorum
		compress bool
		rounds   int
	}{
		{1, QuorumAll, true, 70},
		{2, QuorumAll, false, 28},
		{3, QuorumMajority, true, 30},
	} {
		t.Run(fmt.Sprintf("%d replicas", tc.replicas), func(t *testing.T) {
			t.Parallel()
			rng := rand.New(rand.NewPCG(uint64(tc.replicas), 42))
			devs := make([]*device.Crashable, tc.replicas)
			for i := range devs {
				devs[i] = device.NewCrashable(MinSize(Config{})).SetName(fmt.Sprintf("replica%d", i))
			}
			asDevs := func() []device.Device {
				d := make([]device.Device, len(devs))
				for i, c := range devs {
					d[i] = c
				}
				return d
			}
			mustFormat(t, asDevs())
			cfg := Config{WriteQuorum: tc.quorum, Compression: tc.compress, BufferSize: MinBufferSize}
			committed := map[LSN]Record{}
			var checkpoint, synced LSN // highest Trim asked for; highest LSN known durable
			torn, wrapped, laps := 0, false, 0.0
			crashedOpens := 0
			for round := range tc.rounds {
				if rng.IntN(4) == 0 {
					// Power loss while Open repairs replicas and starts its
					// epoch: nothing durable may be lost by that either.
					done := make(chan *Log, 1)
					go func() {
						l, err := Open(asDevs(), testFS, cfg, nil)
						if err != nil {
							t.Errorf("round %d: Open before the crash: %v", round, err)
						}
						done <- l
					}()
					for range rng.IntN(200) {
						runtime.Gosched()
					}
					crashed := make([]*device.Crashable, len(devs))
					for i, c := range devs {
						crashed[i] = c.Crash(rng)
					}
					if l := <-done; l != nil {
						l.Close()
					}
					devs = crashed
					crashedOpens++
				}
				tl := newTestLog()
				l, err := Open(asDevs(), testFS, cfg, tl.entry)
				if err != nil {
					t.Fatalf("round %d: Open: %v\n%s", round, err, tl.dump())
				}
				got, last := replayAll(t, l, checkpoint)
				for i, g := range got {
					want, ok := committed[checkpoint+LSN(i)+1]
					if g.lsn != checkpoint+LSN(i)+1 || !ok || !equalRecord(g.rec, want) {
						t.Fatalf("round %d: replayed #%d lsn %d is not the committed record", round, i, g.lsn)
					}
				}
				if last < synced {
					t.Fatalf("round %d: replay ends at %d, but %d was synced\n%s", round, last, synced, tl.dump())
				}
				for lsn := range committed {
					if lsn > last || lsn <= checkpoint {
						delete(committed, lsn) // lost unsynced, or trimmed
					}
				}
				synced = last // Open made what it kept durable
				torn += tl.count(logrus.WarnLevel, "torn")
				if tl.count(logrus.ErrorLevel, "") > 0 && tc.replicas == 1 {
					t.Fatalf("round %d: errors logged\n%s", round, tl.dump())
				}

				var trimWG sync.WaitGroup
				ops := 30 + rng.IntN(70)
				for op := range ops {
					switch r := rng.IntN(20); {
					case r < 14:
						rec := makeRecord(rng.Uint64(), 9000)
						if st := l.Stats(); st.FreeBytes < int64(recordSize(len(rec.Payload))) {
							// Full: destage everything.
							if err := l.Sync(context.Background(), st.LastLSN); err != nil {
								t.Fatal(err)
							}
							synced = st.LastLSN
							checkpoint = max(checkpoint, st.LastLSN)
							if err := l.Trim(st.LastLSN); err != nil {
								t.Fatal(err)
							}
						}
						committed[appendRec(t, l, rec)] = rec
					case r < 16:
						last := l.LastLSN()
						if err := l.Sync(context.Background(), last); err != nil {
							t.Fatal(err)
						}
						synced = last
					case r < 17:
						waitWritten(l, l.LastLSN())
					default:
						if synced <= checkpoint {
							continue
						}
						to := checkpoint + 1 + LSN(rng.IntN(int(synced-checkpoint)))
						checkpoint = to
						if op == ops-1 {
							// Crash while this trim writes its superblocks.
							trimWG.Add(1)
							go func() {
								defer trimWG.Done()
								l.Trim(to)
							}()
						} else if err := l.Trim(to); err != nil {
							t.Fatal(err)
						}
					}
				}
				l.mu.Lock()
				wrapped = wrapped || l.head > l.areaSize
				laps = float64(l.head) / float64(l.areaSize)
				l.mu.Unlock()
				for i, c := range devs {
					devs[i] = c.Crash(rng)
				}
				trimWG.Wait()
				l.Close()
			}
			t.Logf("%d rounds (%d crashes during Open): %.1f laps around the area, %d torn tails", tc.rounds, crashedOpens, laps, torn)
			if torn == 0 || !wrapped {
				t.Errorf("the rounds saw %d torn tails and wrapped=%v: the test lost its teeth", torn, wrapped)
			}
		})
	}
}

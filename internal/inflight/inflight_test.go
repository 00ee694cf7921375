package inflight

import (
	"context"
	"testing"
	"time"

	"github.com/dcache/dcache/internal/metrics"
)

// newTable makes a table for about n concurrent requests (see Init) over
// shards of its own, and returns them.
func newTable(n, shards int) (*Table, []*Shard) {
	sh := make([]Shard, shards)
	ps := make([]*Shard, shards)
	for i := range sh {
		ps[i] = &sh[i]
	}
	t := new(Table)
	t.Init(ps, n)
	return t, ps
}

func TestTableStagesAndAge(t *testing.T) {
	tab, sh := newTable(4, 2)
	old := tab.Begin(sh[0], 7, 42, 4096, Now()-int64(10*time.Second))
	young := tab.Begin(sh[1], 8, 43, 0, Now())
	now := time.Now()
	if old == nil || young == nil {
		t.Fatal("a table for 4 requests refused the second")
	}
	done := make(chan struct{})
	ctx := old.Bind(done)
	// A context derived from the request's keeps reporting stages.
	SetStage(context.WithoutCancel(ctx), LogReplica(2))
	SetStage(context.Background(), StageBackend) // carries no request: no effect

	got := tab.Older(now, 5*time.Second, true)
	if len(got) != 1 {
		t.Fatalf("got %d requests older than 5s, want 1: %+v", len(got), got)
	}
	r := got[0]
	if r.Op != 7 || r.Ino != 42 || r.Off != 4096 || r.Stage.Kind() != StageLogReplica || r.Stage.Replica() != 2 || !r.FirstReport {
		t.Errorf("got %+v (stage %v)", r, r.Stage)
	}
	if r.Age < 10*time.Second {
		t.Errorf("age %v, want at least 10s", r.Age)
	}
	if again := tab.Older(now, 5*time.Second, true); len(again) != 1 || again[0].FirstReport {
		t.Errorf("second scan: %+v, want the request without FirstReport", again)
	}
	if ctx.Err() != nil {
		t.Error("Err before cancel")
	}
	close(done)
	if ctx.Err() != context.Canceled {
		t.Error("Err after cancel is not Canceled")
	}
	tab.End(old)
	tab.End(young)
	if left := tab.Older(now.Add(time.Hour), 0, false); len(left) != 0 {
		t.Errorf("ended requests still listed: %+v", left)
	}
}

func TestStageString(t *testing.T) {
	for _, c := range []struct {
		s    Stage
		want string
	}{
		{StageFUSE, "fuse"}, {StageCache, "cache"}, {StageLog, "log"},
		{LogReplica(1), "log replica 1"}, {StageDestage, "destage"}, {StageBackend, "backend"},
	} {
		if got := c.s.String(); got != c.want {
			t.Errorf("%d: %q, want %q", c.s, got, c.want)
		}
	}
}

func TestTableFull(t *testing.T) {
	tab, sh := newTable(4, 2) // two shards of 16 slots, 8 spill slots
	var held []*Slot
	for i := 0; i < 100; i++ {
		// Every request asks for shard 1: once it is full, they spill.
		if s := tab.Begin(sh[1], 1, 0, 0, 1); s != nil {
			held = append(held, s)
		}
	}
	if len(held) != ShardSlots+8 || tab.Overflow() != 100-ShardSlots-8 {
		t.Errorf("held %d, overflow %d; want %d and %d", len(held), tab.Overflow(), ShardSlots+8, 100-ShardSlots-8)
	}
	seen := map[*Slot]bool{}
	for _, s := range held {
		if seen[s] {
			t.Fatalf("slot %p handed out twice", s)
		}
		seen[s] = true
	}
	if s := tab.Begin(sh[0], 1, 0, 0, 1); s == nil {
		t.Errorf("shard 0 is free but refused a request")
	}
	for _, i := range []int{5, ShardSlots + 3} { // one in the shard, one spilled
		tab.End(held[i])
		if s := tab.Begin(sh[1], 1, 0, 0, 1); s != held[i] {
			t.Errorf("the one free slot (%d) was not found", i)
		}
	}
	if got := len(tab.Older(time.Now(), 0, false)); got != len(held)+1 {
		t.Errorf("Older lists %d requests, want %d", got, len(held)+1)
	}
}

func TestTableReusesFirstFreeSlot(t *testing.T) {
	tab, sh := newTable(64, 4)
	a := tab.Begin(sh[2], 1, 0, 0, 1)
	b := tab.Begin(sh[2], 1, 0, 0, 1)
	tab.End(b)
	if c := tab.Begin(sh[2], 1, 0, 0, 1); c != b {
		t.Errorf("the shard's first free slot was not reused")
	}
	tab.End(a)
	if c := tab.Begin(sh[2], 1, 0, 0, 1); c != a {
		t.Errorf("the shard's first free slot was not reused")
	}
}

func BenchmarkBeginEnd(b *testing.B) {
	tab, sh := newTable(256, metrics.DefaultShards())
	aff := metrics.NewAffinity(metrics.DefaultShards())
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			s := tab.Begin(sh[aff.Pick()], 1, 2, 3, 4)
			s.SetStage(StageCache)
			tab.End(s)
		}
	})
}

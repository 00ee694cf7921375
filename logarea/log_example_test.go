package logarea_test

import (
	"context"
	"fmt"

	"github.com/dcache/dcache/internal/device"
	"github.com/dcache/dcache/logarea"
)

// Example shows the life of a log: format, open, replay, append with group
// commit, trim after destage, close, and recovery on the next open.
func Example() {
	ctx := context.Background()
	fsID := [16]byte{1}
	devs := []device.Device{device.NewMem(4 << 20), device.NewMem(4 << 20)} // two replicas
	if err := logarea.Format(devs, fsID); err != nil {
		panic(err)
	}
	l, err := logarea.Open(devs, fsID, logarea.Config{WriteQuorum: logarea.QuorumAll, Compression: true}, nil)
	if err != nil {
		panic(err)
	}
	if _, err := l.Replay(0, func(logarea.LSN, logarea.Record) error { return nil }); err != nil {
		panic(err)
	}
	for i := range 3 {
		// Outside the engine's lock: prepare and wait for room.
		e, err := l.Reserve(ctx, logarea.Record{Type: 1, Obj: 42, Off: uint64(i) * 4096, Payload: []byte("hello")})
		if err != nil {
			panic(err)
		}
		// Under the engine's lock: take the LSN, no I/O.
		lsn, err := l.Commit(e)
		if err != nil {
			panic(err)
		}
		// fsync: wait until the record is durable on every replica.
		if err := l.Sync(ctx, lsn); err != nil {
			panic(err)
		}
	}
	// Destage made LSN 1 durable in the backend.
	if err := l.Trim(1); err != nil {
		panic(err)
	}
	if err := l.Close(); err != nil {
		panic(err)
	}

	l, err = logarea.Open(devs, fsID, logarea.Config{}, nil)
	if err != nil {
		panic(err)
	}
	defer l.Close()
	last, err := l.Replay(1, func(lsn logarea.LSN, r logarea.Record) error {
		fmt.Printf("lsn %d: obj %d off %d %q\n", lsn, r.Obj, r.Off, r.Payload)
		return nil
	})
	if err != nil {
		panic(err)
	}
	st := l.Stats()
	fmt.Println("last", last, "tail", st.TailLSN, "healthy", st.Healthy)
	// Output:
	// lsn 2: obj 42 off 4096 "hello"
	// lsn 3: obj 42 off 8192 "hello"
	// last 3 tail 2 healthy 2
}

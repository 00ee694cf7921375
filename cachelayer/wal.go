package cachelayer

import (
	"context"

	"github.com/dcache/dcache/logarea"
)

// logWAL adapts logarea's single-node replicated log to the WAL interface.
type logWAL struct{ l *logarea.Log }

// NewLogWAL returns the engine's view of a logarea log.
func NewLogWAL(l *logarea.Log) WAL { return logWAL{l} }

func toRecord(r LogRecord) logarea.Record {
	return logarea.Record{Type: r.Type, Flags: r.Flags, Obj: r.Obj, Off: r.Off, Len: r.Len, Payload: r.Payload}
}

func (w logWAL) Reserve(ctx context.Context, rec LogRecord) (WALEntry, error) {
	return w.l.Reserve(ctx, toRecord(rec))
}

func (w logWAL) ReserveSpace(ctx context.Context, maxPayload int) (WALEntry, error) {
	return w.l.ReserveSize(ctx, maxPayload)
}

func (w logWAL) Commit(e WALEntry, rec *LogRecord) (uint64, error) {
	if rec != nil {
		lsn, err := w.l.CommitRecord(e.(*logarea.Entry), toRecord(*rec))
		return uint64(lsn), err
	}
	lsn, err := w.l.Commit(e.(*logarea.Entry))
	return uint64(lsn), err
}

func (w logWAL) Cancel(e WALEntry) { w.l.Cancel(e.(*logarea.Entry)) }

func (w logWAL) Sync(ctx context.Context, lsn uint64) error {
	return w.l.Sync(ctx, logarea.LSN(lsn))
}

func (w logWAL) Trim(lsn uint64) error { return w.l.Trim(logarea.LSN(lsn)) }

func (w logWAL) LastLSN() uint64 { return uint64(w.l.LastLSN()) }

func (w logWAL) Replay(after uint64, fn func(uint64, LogRecord) error) (uint64, error) {
	last, err := w.l.Replay(logarea.LSN(after), func(lsn logarea.LSN, r logarea.Record) error {
		return fn(uint64(lsn), LogRecord{Type: r.Type, Flags: r.Flags, Obj: r.Obj, Off: r.Off, Len: r.Len, Payload: r.Payload})
	})
	return uint64(last), err
}

func (w logWAL) Usage() (used, capacity int64) {
	st := w.l.Stats()
	return st.UsedBytes + st.ReservedBytes, st.AreaBytes
}

package logarea

import (
	"fmt"

	"github.com/golang/snappy"
	"github.com/sirupsen/logrus"
)

// Replay calls fn for every record with an LSN above after, in LSN order,
// and returns the last LSN replayed (after when there is none). Record
// payloads are only valid during the call to fn. It is called once, after
// Open and before the first Reserve.
//
// fn may call the Log (Trim, for instance, when the engine destages while
// it recovers); no lock of the Log is held during the call.
//
// after is the LSN the engine's checkpoint covers. When it is below the
// log's tail minus one, records the engine needs were trimmed and Replay
// fails. When it is at or past the log's end (the checkpoint is newer than
// the log), the log moves its tail and next LSN past after, durably, so LSNs
// stay increasing for the engine.
func (l *Log) Replay(after LSN, fn func(LSN, Record) error) (LSN, error) {
	l.mu.Lock()
	if l.replayed || l.appended {
		l.mu.Unlock()
		return 0, ErrReplayOrder
	}
	l.replayed = true
	if err := l.usableLocked(); err != nil {
		l.mu.Unlock()
		return 0, err
	}
	tail, next, head := l.tailLSN, l.nextLSN, l.head
	src := l.src
	if src.health != HealthOK {
		// The source failed after Open reconciled the replicas: any
		// healthy replica holds the same records.
		if reps := l.healthyLocked(); len(reps) > 0 {
			src = reps[0]
		}
	}
	var pos uint64
	if after+1 >= tail && after+1 < next {
		pos = l.index.at(after + 1)
	}
	l.mu.Unlock()

	if after+1 < tail {
		return 0, fmt.Errorf("%w: replay after lsn %d, but the log starts at lsn %d: lsn %d..%d were trimmed", ErrBadLSN, after, tail, after+1, tail-1)
	}
	if after >= next {
		return l.jump(after, head)
	}

	rd := newAreaReader(src.area)
	var dbuf []byte
	var bytes uint64
	lsn := after + 1
	for ; lsn < next; lsn++ {
		b, err := rd.peek(pos, headerSize)
		if err != nil {
			return lsn - 1, err
		}
		h, why := decodeHeader(b, l.seed)
		if why == "" && h.lsn != lsn {
			why = fmt.Sprintf("found lsn %d", h.lsn)
		}
		var payload []byte
		if why == "" && h.stored > 0 {
			if payload, err = rd.peek(pos+headerSize, int(h.stored)); err != nil {
				return lsn - 1, err
			}
			if crc32c(payload) != h.pcrc {
				why = "payload checksum mismatch"
			}
		}
		if why == "" && h.rflags&rflagSnappy != 0 {
			n, err := snappy.DecodedLen(payload)
			if err != nil || n > MaxPayload {
				why = fmt.Sprintf("compressed payload: length %d, %v", n, err)
			} else {
				if cap(dbuf) < n {
					dbuf = make([]byte, n, max(n, 64<<10))
				}
				if payload, err = snappy.Decode(dbuf[:n], payload); err != nil {
					why = fmt.Sprintf("compressed payload: %v", err)
				}
			}
		}
		if why != "" {
			return lsn - 1, &CorruptionError{Device: src.name, Offset: src.area.physical(pos), LSN: lsn,
				Reason: "record changed since the log was opened: " + why}
		}
		rec := Record{Type: h.typ, Flags: h.flags, Obj: h.obj, Off: h.off, Len: h.length, Payload: payload}
		if err := fn(lsn, rec); err != nil {
			return lsn - 1, fmt.Errorf("logarea: replay of lsn %d: %w", lsn, err)
		}
		pos += h.size()
		bytes += h.size()
	}
	l.log.WithFields(logrus.Fields{"after": after, "last": lsn - 1, "records": uint64(lsn - 1 - after), "bytes": bytes}).Info("log replayed")
	return max(after, lsn-1), nil
}

// jump moves an empty-for-the-engine log past after: the records left are
// all covered by the engine's checkpoint, so the tail moves to after+1 at
// the head, durably, and the next record gets LSN after+1.
func (l *Log) jump(after LSN, head uint64) (LSN, error) {
	l.sbMu.Lock()
	defer l.sbMu.Unlock()
	if err := l.writeSuperblocks(after+1, head, after+1, head, 0); err != nil {
		return 0, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.log.WithFields(logrus.Fields{"from": l.nextLSN, "to": after + 1}).Warn("log behind the engine's checkpoint: next lsn moved forward")
	l.tailLSN, l.tailPos = after+1, head
	l.nextLSN, l.curFirst = after+1, after+1
	l.writtenLSN, l.durableLSN, l.syncIssued = after, after, after
	l.index.reset(after+1, l.index.pos[:0])
	for _, r := range l.healthyLocked() {
		r.written, r.synced = after, after
	}
	l.grantLocked()
	return after, nil
}

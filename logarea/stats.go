package logarea

// ReplicaStats describes one replica.
type ReplicaStats struct {
	Index        int
	Name         string
	Kind         string // device kind: file, block, mmap, mem, ...
	Health       Health
	LastError    string
	Repaired     string // what Open did to it: "", "caught up" or "rebuilt"
	UsedBytes    int64  // record bytes between the tail and what it holds
	FreeBytes    int64
	TailLSN      LSN
	HeadLSN      LSN // last LSN written to it
	DurableLSN   LSN // last LSN synced on it
	Writes       int64
	Syncs        int64
	BytesWritten int64
}

// Stats is a snapshot of the log's state and counters.
type Stats struct {
	Replicas []ReplicaStats
	Quorum   Quorum
	Healthy  int    // replicas still written
	Need     int    // healthy replicas the quorum needs
	Error    string // why the log failed, if it did
	Epoch    uint32

	TailLSN    LSN
	LastLSN    LSN // last committed
	DurableLSN LSN // durable on the quorum

	AreaBytes     int64
	UsedBytes     int64 // committed and not trimmed
	ReservedBytes int64 // reserved and not yet committed
	FreeBytes     int64

	Records      int64   // committed since Open
	Compressed   int64   // of which stored snappy-compressed
	NotTried     int64   // payloads stored without a compression attempt (see Config.Compression)
	PayloadBytes int64   // payload bytes given to Commit
	StoredBytes  int64   // record bytes in the log (headers, padding, compression)
	Batches      int64   // device write rounds
	AvgBatch     float64 // records per write round
	MaxBatch     int64
	SyncRounds   int64   // device sync rounds (one sync per healthy replica each)
	AvgGroup     float64 // records made durable per sync round (group commit size)
	MaxGroup     int64

	Writes       int64 // device writes, all replicas
	Syncs        int64 // device syncs, all replicas
	BytesWritten int64 // all replicas
}

// Stats returns a snapshot of the log's state.
func (l *Log) Stats() Stats {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := Stats{
		Quorum: l.cfg.WriteQuorum, Need: l.need, Epoch: l.epoch,
		TailLSN: l.tailLSN, LastLSN: l.nextLSN - 1, DurableLSN: l.durableLSN,
		AreaBytes: int64(l.areaSize), UsedBytes: int64(l.head - l.tailPos), ReservedBytes: l.devReserved,
		Records: l.st.records, Compressed: l.st.compessed, NotTried: l.compress.skipped.Load(), PayloadBytes: l.st.bytesIn, StoredBytes: l.st.bytesOut,
		Batches: l.st.batches, MaxBatch: l.st.maxBatch, SyncRounds: l.st.syncs,
	}
	s.FreeBytes = s.AreaBytes - s.UsedBytes - s.ReservedBytes
	if s.Batches > 0 {
		s.AvgBatch = float64(s.Records) / float64(s.Batches)
	}
	s.MaxGroup = l.st.maxGroup
	if s.SyncRounds > 0 {
		s.AvgGroup = float64(l.st.syncedRecords) / float64(s.SyncRounds)
	}
	if l.failErr != nil {
		s.Error = l.failErr.Error()
	}
	for i, r := range l.replicas {
		if r == nil {
			s.Replicas = append(s.Replicas, ReplicaStats{Index: i, Health: HealthMissing, TailLSN: l.tailLSN})
			continue
		}
		rs := ReplicaStats{
			Index: i, Name: r.name, Kind: r.kind, Health: r.health, Repaired: r.repaired,
			TailLSN: l.tailLSN, HeadLSN: r.written, DurableLSN: r.synced,
			Writes: r.writes.Load(), Syncs: r.syncs.Load(), BytesWritten: r.bytes.Load(),
		}
		if r.lastErr != nil {
			rs.LastError = r.lastErr.Error()
		}
		if r.written+1 >= l.tailLSN {
			rs.UsedBytes = int64(l.posLocked(max(r.written+1, l.tailLSN)) - l.tailPos)
		}
		rs.FreeBytes = int64(l.areaSize) - rs.UsedBytes
		if r.health == HealthOK {
			s.Healthy++
		}
		s.Writes += rs.Writes
		s.Syncs += rs.Syncs
		s.BytesWritten += rs.BytesWritten
		s.Replicas = append(s.Replicas, rs)
	}
	return s
}

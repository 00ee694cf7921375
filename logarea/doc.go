// Package logarea is dcache's write-ahead log: a circular log of records on
// one or more replica devices (SSD files, block devices, persistent-memory
// mappings), with group commit, replay, trimming and replica
// reconciliation. It knows nothing of FUSE, the cache or the backend; it
// reaches storage only through device.Device.
//
// # Use
//
//	Format(devs, fsID)                       // once, by `dcache format`
//	l, err := Open(devs, fsID, cfg, log)     // checks, scans, reconciles
//	last, err := l.Replay(checkpointLSN, fn) // once, before appending
//	e, err := l.Reserve(ctx, rec)            // outside the engine's lock; waits for room
//	lsn, err := l.Commit(e)                  // under the engine's lock; no I/O
//	e, err = l.ReserveSize(ctx, maxPayload)  // room only; the record is built later
//	lsn, err = l.CommitRecord(e, rec)        // under the engine's lock
//	err = l.Sync(ctx, lsn)                   // group commit
//	err = l.Trim(lsn)                        // after destage made lsn's effects durable
//	err = l.Close()
//
// # Durability and invariants
//
// LSNs are consecutive and continue across restarts. A record is durable
// once Sync returned for it; Sync returns only when the record is synced on
// every healthy replica and those are at least the write quorum. A replica
// with an I/O error stops being written (and is recorded as failed in the
// survivors' metadata); below the quorum the log fails and every later
// Commit, Sync and Reserve returns ErrQuorumLost. Records are written by a
// background goroutine as soon as they are committed; Sync adds a device
// sync, shared by every Sync that waits meanwhile (group commit), with up
// to two syncs overlapping. An Entry holds room until Commit or Cancel: an
// engine must not wait for a second reservation while holding one, or a
// full log can wait on itself. The room of trimmed records is reused only after the new
// tail is synced in the superblocks of every healthy replica.
//
// All replicas have the same record area size and hold every record at the
// same logical position, so repairing a replica is a byte copy.
//
// # Replica layout
//
// Integers are little-endian. Every constant marked "wire format" in
// format.go is part of this layout; changing one needs a new format
// version, and a version this build does not know is refused.
//
//	0        4 KiB    8 KiB     12 KiB    16 KiB = areaOff                 areaOff+areaSize
//	+--------+--------+---------+---------+----------------------------------------+
//	| super  | super  | meta    | meta    | record area: circular, areaSize bytes  |
//	| slot 0 | slot 1 | slot 0  | slot 1  | (the same size on every replica)       |
//	+--------+--------+---------+---------+----------------------------------------+
//
// Superblock slot (first 512 bytes of the 4 KiB slot; written alternately,
// slot = seq % 2, then synced, so a torn write damages one slot only; Open
// uses the intact slot with the higher seq):
//
//	  0  magic "DCLOGSB\0"      8 B
//	  8  format version         u32   (1)
//	 12  CRC-32C                u32   over bytes 0..12 and 16..512
//	 16  filesystem id          16 B
//	 32  log id (nonce)         u64   random at Format; seeds record CRCs
//	 40  seq                    u64
//	 48  replica index          u32
//	 52  replica count          u32
//	 56  device size            u64   at Format; a smaller device is refused
//	 64  area offset            u64
//	 72  area size              u64
//	 80  tail LSN               u64   first record still needed
//	 88  tail position          u64   its logical position
//	 96  next LSN               u64   records below were durable on this replica
//	104  next position          u64
//	112  epoch                  u32   bumped by every Open
//	116  flags                  u32   bit 0: clean close (next = end of log)
//	120  epoch start LSN        u64   first LSN of this epoch
//	128  format time            i64   unix nanoseconds
//	136  zero                   ... to 512
//
// Metadata slot (first 1 KiB of each 4 KiB slot, written alternately): the
// log's own bookkeeping of replica health, written at Open and when a
// replica fails. Open does not replay from a replica the newest metadata
// marks failed while another one is usable, and rebuilds it.
//
//	 0  magic "DCLOGMT\0"      8 B
//	 8  format version         u32
//	12  CRC-32C                u32   over bytes 0..12 and 16..1024
//	16  seq                    u64
//	24  log id                 u64
//	32  replica count          u32
//	36  zero                   u32
//	40  per replica, 16 B:     state u8 (0 ok, 1 failed), 7 B zero,
//	                           next LSN when it failed u64
//
// Record area: logical positions grow forever; position p lives at device
// offset areaOff + p % areaSize, so a record may wrap around the end. Each
// record starts at a multiple of 8:
//
//	+--------------------+-------------------------+-----------------+
//	| header (64 B)      | stored payload          | zero padding to |
//	|                    | (snappy or plain)       | a multiple of 8 |
//	+--------------------+-------------------------+-----------------+
//
//	 0  magic "dcLR"        u32   0x524c6364
//	 4  header CRC-32C      u32   over bytes 8..64, seeded with the log id
//	 8  LSN                 u64
//	16  synced LSN          u64   every LSN <= it was durable on every healthy
//	                              replica when this record was committed
//	24  object id           u64
//	32  offset              u64
//	40  length              u32
//	44  stored length       u32   payload bytes on the device
//	48  payload CRC-32C     u32   of the stored payload
//	52  epoch               u32
//	56  type                u8    1..255
//	57  flags               u8    the engine's
//	58  record flags        u8    bit 0: payload snappy-compressed
//	59  zero                5 B
//
// # Reading the log
//
// Open reads each replica's chain from the superblock's tail: a record is
// valid when its magic and both checksums hold, its LSN is the one expected
// next, and its epoch is not older than its predecessor's (and not older
// than the superblock's epoch when its LSN is at or past the epoch start).
// The chain ends at the first record that is not valid. A stale record from
// an earlier lap has a smaller LSN; one from another Format fails the header
// checksum (seeded with the log id); one left behind a truncated tail by an
// earlier run has an older epoch. None of them is ever taken for current.
//
// How the chain ends decides what it means:
//
//   - zeros, or a stale record: the normal end of the log;
//   - a damaged record that nothing shows was durable: a torn tail (the
//     crash tore or lost unsynced writes, possibly out of order): the log
//     is truncated there, with a Warn;
//   - a damaged or missing record that was durable, because the
//     superblock's next LSN covers it or because a later record of the same
//     history carries a synced LSN that covers it: corruption. The replica is
//     not used for replay (Error) and is rewritten from a good one; with no
//     good replica Open fails rather than serve a wrong history.
//
// A lone replica cannot tell media damage in its last synced batch from a
// torn write when nothing was written after that batch; another replica
// then supplies the records.
//
// Replicas that disagree are reconciled on Open: the longest valid chain is
// the history; lagging replicas get the missing records copied, corrupt or
// failed ones are rewritten, and the divergence is logged at Warn. Open then
// starts a new epoch in every superblock before anything is appended.
//
// # Locking
//
// Lock order: Log.sbMu (superblock and metadata writes) before Log.mu (all
// in-memory state). No device I/O happens under Log.mu. The writer
// goroutine swaps the two record buffers under mu and writes outside it,
// one goroutine per replica.
package logarea

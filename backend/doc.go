// Package backend is dcache's slow, large store: append-only segment files
// holding destaged data, and the metadata checkpoints and deltas that point at
// it. The cache engine packs dirty extents into records with Append, makes
// them durable with Sync, and persists its own metadata encoding through
// CreateMeta; recovery reads it back with LoadMeta. The backend knows nothing
// of the engine's encoding, of FUSE or of the log area.
//
// The backend is a directory (Open), or a block device or preallocated file
// (OpenDevice) holding the same structures at fixed offsets: see device.go
// for the device layout and superblock, devspace.go for segment slots and
// their seals, ring.go for the meta ring.
//
// # Directory layout
//
//	DIR/
//	  superblock                   identity and format of the backend (written once, atomically)
//	  lock                         flock(LOCK_EX|LOCK_NB) while open; holds the holder's pid
//	  segments/
//	    0000000000000001.seg       16 hex digits; numbers start at 1 and continue
//	    0000000000000002.seg       after the highest existing one
//	  meta/
//	    checkpoint-000000000000000a  full metadata image at sequence number 10
//	    delta-000000000000000b       changes after checkpoint 10, in order, without gaps
//	    delta-000000000000000c
//
// Transient names: DIR/superblock.tmp and meta/*.tmp are files being written;
// a committed file only ever appears through rename, so a leftover temp file
// is garbage and is removed when the backend is opened.
//
// # Superblock (DIR/superblock, 64 bytes)
//
// All integers are little-endian. The layouts below are the on-disk format.
//
//	offset size field
//	     0    8 magic "DCBKSUPR"
//	     8    4 format version (1)
//	    12    4 superblock length (64)
//	    16   16 filesystem uuid (random, RFC 4122 version 4)
//	    32    8 creation time, Unix nanoseconds
//	    40    8 segment size: data capacity of a segment, bytes
//	    48   12 reserved, zero
//	    60    4 CRC-32C (Castagnoli) of bytes 0..59
//
// The version is checked before the checksum, so that a superblock written by
// a newer build is refused as such (ErrVersion) and not reported as corrupt.
// The superblock is replaced atomically: superblock.tmp is written and
// fsync'd, renamed over superblock, and DIR is fsync'd.
//
// # Segment file (segments/NNNNNNNNNNNNNNNN.seg)
//
//	0            4096            4096+alignUp(len1)
//	+------------+---------------+-----+-------------+-----+---
//	| header     | record 1 data | pad | record 2    | pad | ...
//	| 4096 bytes |               | 0s  | data        | 0s  |
//	+------------+---------------+-----+-------------+-----+---
//
//	header:
//	offset size field
//	     0    8 magic "DCBKSEGM"
//	     8    4 format version (1)
//	    12    4 header length (4096)
//	    16   16 filesystem uuid
//	    32    8 segment number
//	    40    4 CRC-32C of bytes 0..39
//	    44 4052 zero
//
// Every record starts at a multiple of 4 KiB and is padded with zeros to the
// next one. Records carry no in-file header: their address (Addr: segment,
// offset, length, CRC-32C) lives in the engine's metadata, and Read verifies
// the CRC. Config.SegmentSize is the data capacity of a segment, so a segment
// file is at most 4 KiB + SegmentSize long and always fits a record of
// MaxRecordLen. A segment is only ever appended to by the process that
// created it: after a reopen, appends go to a new segment numbered after the
// highest existing one.
//
// # Meta file (meta/checkpoint-NNNNNNNNNNNNNNNN, meta/delta-NNNNNNNNNNNNNNNN)
//
//	+-------------------+----------------------------+--------------------+
//	| header (48 bytes) | engine's byte stream (N)   | trailer (16 bytes) |
//	+-------------------+----------------------------+--------------------+
//
//	header:
//	offset size field
//	     0    8 magic "DCBKMETA"
//	     8    4 format version (1)
//	    12    4 kind: 1 checkpoint, 2 delta
//	    16    8 sequence number
//	    24   16 filesystem uuid
//	    40    4 CRC-32C of bytes 0..39
//	    44    4 zero
//
//	trailer:
//	offset size field
//	     0    8 stream length N
//	     8    4 CRC-32C of header, stream and bytes 0..7 of the trailer
//	    12    4 magic "DCMT"
//
// A meta file is written to a temp name, fsync'd, renamed, and meta/ is
// fsync'd. A meta file whose header, length or CRC is wrong is corruption
// (CorruptionError); it is never skipped. Sequence numbers start at 1 and are
// shared by checkpoints and deltas: checkpoint S covers everything up to S and
// is followed by deltas S+1, S+2, ...; without a checkpoint the deltas start
// at 1.
//
// # Durability and failures
//
// Append returns an address at once; the record is durable after the next
// successful Sync (data of every segment written since the previous Sync is
// fdatasync'd, all of them at once so that the filesystem commits their
// sizes together; segments/ is fsync'd when a segment file was created).
//
// A directory backend writes its segments with direct I/O (O_DIRECT) from
// a block-aligned write buffer, unless Config.Buffered: the data is in the
// caller's cache already and is read back only after eviction, so a copy
// in the page cache would cost a memory copy and memory and leave the
// whole round to the final fdatasync. On a filesystem that refuses
// O_DIRECT the store falls back to buffered writes, with a warning. Reads
// go through the page cache, which stays coherent: direct writes only
// extend a segment, at block-aligned offsets.
//
// When Append or Sync fails with an I/O error (a write, a sync, or the
// creation of a segment file), every address handed out since the last
// successful Sync is void: the segments involved are sealed and never
// written again (after a failed fsync the kernel may have dropped the dirty
// pages, so retrying on the same file proves nothing), a segment holding
// nothing durable is removed, reads of voided addresses fail with ErrVoided,
// and the next Append starts a new segment. The caller re-appends the data
// it still holds and gets new, valid addresses. Addresses made durable by an
// earlier Sync are never written again, so a failed or partial write cannot
// damage them.
//
// # Concurrency and lock order
//
// Append, Sync, RemoveSegment and Close serialise on Store.mu. Read and
// ReadRange never take Store.mu: they take Store.vis (read side) to look at
// the write buffer and segment table, and do file I/O without it. Lock order:
//
//	Store.mu -> Store.vis -> handleCache.mu
//
// Methods whose names end in Locked need their receiver's lock held: Store.mu
// for Store methods, handleCache.mu for handleCache methods.
package backend

// Package cachelayer is dcache's engine: the namespace and extent metadata
// (copy-on-write B-trees), the DRAM page pool, dirty tracking, throttling,
// destage into backend segments, metadata checkpoints and recovery.
//
// # State
//
// Metadata lives in tidwall/btree trees stored by value (Inode, Dirent,
// Xattr, Extent), so that Copy() is an O(1) consistent cut. Extents say where
// destaged bytes are in the backend. Cached bytes live in 4 KiB pages from a
// fixed pool sized by Config.CacheSize; the page index maps (object, block) to
// a page that is either clean (a copy of the backend) or dirty (newer than
// the backend). Dirty pages are never evicted; clean pages are evicted when
// the pool runs out, least recently used first (Config.Eviction EvictLRU) or
// in the order they were cached (EvictFIFO). Clean pages of a sequential
// stream go to the front of either order.
//
// # Mutations and the log
//
// Every op that changes the filesystem is computed under Engine.mu as a list
// of physical mutations (put inode, delete dirent, write bytes, truncate, ...),
// committed to the write-ahead log (WAL) under the same lock, so LSN order is
// apply order, and then applied by the same code that replay uses. Because
// mutations are physical ("set this key to this value"), replaying the log
// from any LSN at or before a checkpoint's cut converges to the same final
// state; this is what lets destage be partial and lets the log be trimmed to
// just below the oldest LSN that made a still-dirty page dirty.
//
// # Destage
//
// A round takes the cut: the LSN X of the last committed op and O(1) copies of
// the metadata trees and the page index. It copies the bytes of the chosen
// dirty pages (their content at or after X) into records of at most
// MaxRecord bytes, appends them to the backend, syncs, repoints the extents in
// the cut (always) and in the live trees (when the page was not rewritten
// meanwhile, which makes the page clean), syncs the log up to the last LSN
// whose effects the copied bytes may hold, writes a metadata delta or a full
// checkpoint of the cut with its replay start, and only then trims the log.
// Data copied later than X is harmless: writes are idempotent when replayed
// in order.
//
// # Scheduling and throttling
//
// The flusher runs a round when the oldest dirty page is older than
// MaxDirtyAge (all of it: nothing starves), when the log is half full (all),
// when dirty pages reach HighWatermark of the dirty budget (oldest first,
// round after round until LowWatermark), or when a sequential stream has
// dirty pages (those pages). Watermark and stream rounds take at most a
// quarter of the budget, because a round frees room only when it ends.
// Within a round, WritebackJobs staged batches may be in flight: the next
// batches are copied out of the cache while the previous one is appended
// (the backend itself takes one stream of appends). The dirty budget counts pages, so it is exact in bytes to a page.
// Writers above ThrottleWatermark are delayed in proportion to how far above
// they are, scaled by the measured destage speed, so they slow down smoothly
// towards it; at the full budget they wait for room. A write never fails for
// lack of room. A failing backend (EIO, ENOSPC) leaves the data dirty and in
// the log; rounds are retried with backoff, the first failure of an episode
// is logged at Error, every one is counted (Stats.DestageErrors,
// CacheInfo.LastError), and writers wait as the budget fills.
//
// # Cache modes
//
// Every mode logs every op first, so the durability contract and recovery
// are the same in all three; the modes differ in when a write returns and
// in what the cache keeps.
//
//   - write-back: the write returns once logged and cached; destage later.
//   - write-through: after logging and applying, the writer waits until a
//     full destage round whose cut is at or after its LSN has completed:
//     the data is in a synced segment, the metadata that points at it is
//     persisted, and the log is trimmed. So the write returns once the
//     backend alone holds it; the page stays cached, clean. Concurrent
//     writers share rounds (a round covers every op before its cut).
//   - write-around: as write-through, then the clean pages of the written
//     range are dropped from the cache.
//
// Logging a write-through write before it reaches the backend is what keeps
// the log's total order intact: a later write-back op, or a crash between
// the segment append and the metadata persist, replays correctly, and an
// extent never points at backend bytes that the metadata image does not
// know. If the backend fails, a write-through writer keeps waiting (with
// backoff) as a write-back writer at the full budget does; if it is
// interrupted, the write has still taken effect and stays dirty, to be
// destaged like a write-back one. SetMode changes the mode at any time:
// writes in flight finish in the mode they started in, and SetMode with
// flush then destages everything dirty.
//
// In write-back, a write that continues one object's sequential stream
// past SequentialCutoff marks its dirty pages (dirtyKey.Stream); the flusher
// destages them at once, without waiting for the watermarks, and their
// clean pages are the first evicted. They are ordinary logged writes, so a
// crash loses nothing.
//
// # Quotas and prefetch
//
// Directory quotas (quota.go) limit the apparent bytes and the objects of a
// directory tree, like XFS project quotas; usage is recomputed at open by
// walking the trees. The prefetcher (prefetch.go) reads ahead from the
// backend into clean pages, in the background, for sequential readers or
// whole files on open.
//
// # Locks
//
// Lock order: Engine.destageMu (one destage round at a time) before Engine.mu
// (all metadata, the page index and page contents) before the WAL's internal
// locks. The prefetcher's lock is a leaf, never held with Engine.mu. Nothing
// that waits on I/O, on the log's space or on the dirty budget runs under
// Engine.mu; functions that need it held end in Locked.
package cachelayer

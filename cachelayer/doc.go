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
// the backend). Dirty pages are never evicted; clean pages are evicted in LRU
// order when the pool runs out.
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

package config

import "time"

// Config is the effective configuration: plain typed values, absolute paths,
// every default resolved. Load fills it; each layer gets its part from main.
type Config struct {
	// DataDir holds the lock and pid files, and the backend and the log
	// when their paths are left empty.
	DataDir  string
	Cache    Cache
	Quota    Quota
	Flush    Flush
	Backend  Backend
	Log      Log
	Fuse     Fuse
	Prefetch Prefetch
	Logging  Logging
	Stats    Stats

	// origins maps a key to where its value came from, for the comments
	// that YAML writes. Nil for a Config built by hand.
	origins map[string]string
}

// Cache is the DRAM page cache.
type Cache struct {
	Size     Size      // budget for clean and dirty pages together
	Mode     CacheMode // how writes use the cache at mount (changeable at runtime)
	Eviction Eviction  // order in which clean pages are evicted
}

// Quota limits what the cache may hold, and what directories may hold.
type Quota struct {
	DirtyBytes  Size // bytes written but not yet destaged
	Directories []DirQuota
}

// DirQuota limits one directory tree, like an XFS project quota.
type DirQuota struct {
	Path   string // from the mount root ("/projects/a"), not a host path
	Bytes  Size   // apparent bytes of the tree; 0 = no limit
	Inodes int64  // objects of the tree, its root included; 0 = no limit
}

// Prefetch drives reads ahead from the backend on cache misses.
type Prefetch struct {
	Policy    PrefetchPolicy
	MaxWindow Size // largest sequential read-ahead window
}

// PrefetchPolicy says when the cache reads ahead from the backend.
type PrefetchPolicy string

// Prefetch policies.
const (
	PrefetchNone       PrefetchPolicy = "none"       // only what is read
	PrefetchSequential PrefetchPolicy = "sequential" // ahead of sequential readers, window doubling
	PrefetchWholeFile  PrefetchPolicy = "whole-file" // the whole file when it is opened
)

// Flush drives destage.
type Flush struct {
	HighWatermark float64 // fraction of Quota.DirtyBytes at which destage starts
	LowWatermark  float64 // fraction below which destage stops
	// ThrottleWatermark is the fraction above which writers are delayed
	// in proportion; at 1 they wait for room.
	ThrottleWatermark float64
	MaxDirtyAge       time.Duration // no dirty byte is older than this
	WritebackJobs     int           // destage batches in flight at once
	SegmentSize       Size          // size of one backend segment
	// SequentialCutoff: in write-back, a sequential stream of one file
	// past this many bytes is destaged at once (0 = never).
	SequentialCutoff Size
}

// Backend is where destaged data lives.
type Backend struct {
	Type BackendType
	Path string // absolute; a directory defaults to DataDir/backend, a device has no default
	// CleanThreshold is the live fraction below which a segment is
	// cleaned; 0 disables cleaning.
	CleanThreshold float64
	// DirectIO writes a directory backend's segments with direct I/O,
	// past the kernel's page cache.
	DirectIO bool
}

// Log is the write-ahead log area.
type Log struct {
	Replicas     []Replica
	WriteQuorum  WriteQuorum
	Sync         SyncMode
	SyncInterval time.Duration // used with SyncInterval mode
	Compression  Compression
}

// Replica is one device of the log area.
type Replica struct {
	Path string      // absolute; a regular file (created and preallocated) or a block device; defaults to DataDir/log
	Type ReplicaType // the kind of device
	Size Size        // bytes of the device the log uses
}

// Fuse holds the mount options.
type Fuse struct {
	AllowOther      bool          // other users may use the mount (the kernel checks permissions)
	AttrTimeout     time.Duration // kernel attribute cache
	EntryTimeout    time.Duration // kernel dentry cache
	NegativeTimeout time.Duration // kernel cache of failed lookups
	MaxWrite        Size          // largest WRITE request
	ReadAhead       Size          // kernel read-ahead of the mount
	KernelDirty     Size          // dirty page cache the kernel may hold for the mount
	WritebackCache  bool          // kernel write-back page cache
	Debug           bool          // log every FUSE request
}

// Stats configures the .dcache directory and the metrics endpoint.
type Stats struct {
	DirName       string        // name of the statistics directory at the mount root
	ShowInReaddir bool          // list it in the root directory
	HungThreshold time.Duration // a request older than this is listed in inflight and warned about
	MetricsListen string        // address of the Prometheus endpoint; "" = off
}

// Logging configures the process log.
type Logging struct {
	Level  LogLevel
	Format LogFormat
}

// CacheMode says how writes use the cache.
type CacheMode string

// Cache modes.
const (
	ModeWriteBack    CacheMode = "write-back"    // log and cache; destage later
	ModeWriteThrough CacheMode = "write-through" // return once the backend holds it; keep a clean copy
	ModeWriteAround  CacheMode = "write-around"  // return once the backend holds it; drop cached copies
)

// Eviction is the order in which clean pages leave the cache.
type Eviction string

// Eviction orders.
const (
	EvictLRU  Eviction = "lru"  // least recently used first
	EvictFIFO Eviction = "fifo" // first cached first
)

// BackendType is the kind of backend store.
type BackendType string

// Backend types.
const (
	BackendDir    BackendType = "dir"    // a directory of segment files
	BackendDevice BackendType = "device" // a block device, or a preallocated file used as one
)

// ReplicaType is the kind of device that holds a log replica.
type ReplicaType string

// Replica types.
const (
	ReplicaSSD ReplicaType = "ssd" // a file or block device, written with pwrite and made durable with fdatasync
	ReplicaAEP ReplicaType = "aep" // persistent memory, memory-mapped and made durable with msync or cache-line flushes
)

// WriteQuorum says how many replicas must hold a record before it counts
// as written.
type WriteQuorum string

// Write quorums.
const (
	QuorumAll      WriteQuorum = "all"
	QuorumMajority WriteQuorum = "majority"
	QuorumOne      WriteQuorum = "one"
)

// SyncMode says when the log is made durable.
type SyncMode string

// Sync modes.
const (
	SyncFsync    SyncMode = "fsync"    // on fsync/fdatasync and O_SYNC/O_DSYNC writes
	SyncAlways   SyncMode = "always"   // before every write returns
	SyncInterval SyncMode = "interval" // as SyncFsync, and at least every Log.SyncInterval
)

// Compression is the codec for log record payloads.
type Compression string

// Compressions.
const (
	CompressionSnappy Compression = "snappy"
	CompressionNone   Compression = "none"
)

// LogLevel is a logrus level name; logrus.ParseLevel accepts every value.
type LogLevel string

// Log levels, most severe first.
const (
	LevelPanic LogLevel = "panic"
	LevelFatal LogLevel = "fatal"
	LevelError LogLevel = "error"
	LevelWarn  LogLevel = "warn"
	LevelInfo  LogLevel = "info"
	LevelDebug LogLevel = "debug"
	LevelTrace LogLevel = "trace"
)

// LogFormat is the process log's output format.
type LogFormat string

// Log formats.
const (
	FormatText LogFormat = "text"
	FormatJSON LogFormat = "json"
)

package config

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// key describes one configuration key: its dotted name, how its text is
// parsed, and where its value goes in Config. The table built by schema is
// the only list of keys; the YAML walker, the environment, the flags and the
// renderer all read it.
type key struct {
	name  string // dotted, e.g. "flush.high_watermark"
	typ   string // flag value type shown in --help
	usage string // flag help
	// path marks keys whose YAML null means "" (use the default location).
	path bool
	// list marks a list-valued key (log.replicas, quota.directories),
	// parsed by the list code (lists.go); parse is nil.
	list  *listKind
	parse func(string) (any, error)
	set   func(*Config, any)
	// scalar renders the value for YAML; tag is its YAML tag.
	scalar func(*Config) (value, tag string)
}

// newKey builds a key for a value of type T kept in the field that field
// points to.
func newKey[T any](name, typ, usage string, parse func(string) (T, error), format func(T) (string, string), field func(*Config) *T) key {
	return key{
		name:   name,
		typ:    typ,
		usage:  usage,
		parse:  func(s string) (any, error) { return parse(s) },
		set:    func(c *Config, v any) { *field(c) = v.(T) },
		scalar: func(c *Config) (string, string) { return format(*field(c)) },
	}
}

func pathKey(name, usage string, field func(*Config) *string) key {
	k := newKey(name, "path", usage, parseString, formatString, field)
	k.path = true
	return k
}

func sizeKey(name, usage string, field func(*Config) *Size) key {
	return newKey(name, "size", usage, parseSize, formatSize, field)
}

func durationKey(name, usage string, field func(*Config) *time.Duration) key {
	return newKey(name, "duration", usage, parseDuration, formatDuration, field)
}

func fractionKey(name, usage string, field func(*Config) *float64) key {
	return newKey(name, "fraction", usage, parseFraction, formatFraction, field)
}

func boolKey(name, usage string, field func(*Config) *bool) key {
	// pflag shows no value for a bool flag; say how to turn it off.
	return newKey(name, "bool", usage+" (=true|=false)", parseBool, formatBool, field)
}

func intKey(name, usage string, field func(*Config) *int) key {
	return newKey(name, "int", usage, parseInt, formatInt, field)
}

func enumKey[T ~string](name, usage string, values []T, field func(*Config) *T) key {
	return newKey(name, "string", usage+" ("+joinEnum(values, "|")+")", oneOf(values), formatEnum[T], field)
}

// schema returns every key in the order of the documented config.yaml.
func schema() []key {
	return []key{
		pathKey("data_dir", "directory for the lock and pid files, and the backend and log when their paths are empty",
			func(c *Config) *string { return &c.DataDir }),
		sizeKey("cache.size", "DRAM page cache budget (clean + dirty), at least 16MiB",
			func(c *Config) *Size { return &c.Cache.Size }),
		enumKey("cache.mode", "how writes use the cache (changeable at runtime)", []CacheMode{ModeWriteBack, ModeWriteThrough, ModeWriteAround},
			func(c *Config) *CacheMode { return &c.Cache.Mode }),
		enumKey("cache.eviction", "order in which clean data leaves the cache", []Eviction{EvictLRU, EvictFIFO},
			func(c *Config) *Eviction { return &c.Cache.Eviction }),
		sizeKey("quota.dirty_bytes", "most bytes not yet destaged, 1MiB..cache.size",
			func(c *Config) *Size { return &c.Quota.DirtyBytes }),
		{
			name:  "quota.directories",
			typ:   "PATH:BYTES:INODES,...",
			usage: `directory quotas; PATH from the mount root, BYTES and INODES 0 = no limit (repeatable)`,
			list:  quotaDirList(),
		},
		fractionKey("flush.high_watermark", "fraction of quota.dirty_bytes at which destage starts, (0,1]",
			func(c *Config) *float64 { return &c.Flush.HighWatermark }),
		fractionKey("flush.low_watermark", "fraction of quota.dirty_bytes below which destage stops, [0,high)",
			func(c *Config) *float64 { return &c.Flush.LowWatermark }),
		fractionKey("flush.throttle_watermark", "fraction of quota.dirty_bytes above which writers are slowed, (0,1]",
			func(c *Config) *float64 { return &c.Flush.ThrottleWatermark }),
		durationKey("flush.max_dirty_age", "no dirty byte gets older than this, at least 100ms",
			func(c *Config) *time.Duration { return &c.Flush.MaxDirtyAge }),
		intKey("flush.writeback_jobs", "destage batches in flight at once, 1..64",
			func(c *Config) *int { return &c.Flush.WritebackJobs }),
		sizeKey("flush.segment_size", "backend segment size, a multiple of 4KiB in 1MiB..4GiB",
			func(c *Config) *Size { return &c.Flush.SegmentSize }),
		sizeKey("flush.sequential_cutoff", "in write-back, a sequential stream past this is destaged at once (0 = never)",
			func(c *Config) *Size { return &c.Flush.SequentialCutoff }),
		enumKey("backend.type", "backend kind", []BackendType{BackendDir, BackendDevice},
			func(c *Config) *BackendType { return &c.Backend.Type }),
		pathKey("backend.path", `backend directory ("" = <data_dir>/backend), or device or file for backend.type device (required)`,
			func(c *Config) *string { return &c.Backend.Path }),
		fractionKey("backend.clean_threshold", "live fraction below which a segment is cleaned, [0,1); 0 disables cleaning",
			func(c *Config) *float64 { return &c.Backend.CleanThreshold }),
		boolKey("backend.direct_io", "write a directory backend's segments with direct I/O, past the page cache",
			func(c *Config) *bool { return &c.Backend.DirectIO }),
		{
			name:  "log.replicas",
			typ:   "PATH:TYPE:SIZE,...",
			usage: `log replicas; PATH "" = <data_dir>/log, TYPE ssd|aep, SIZE at least 8MiB (repeatable)`,
			list:  replicaList(),
		},
		enumKey("log.write_quorum", "healthy replicas the log needs to accept writes", []WriteQuorum{QuorumAll, QuorumMajority, QuorumOne},
			func(c *Config) *WriteQuorum { return &c.Log.WriteQuorum }),
		enumKey("log.sync", "when the log is made durable", []SyncMode{SyncFsync, SyncAlways, SyncInterval},
			func(c *Config) *SyncMode { return &c.Log.Sync }),
		durationKey("log.sync_interval", "longest time between syncs with log.sync interval, > 0",
			func(c *Config) *time.Duration { return &c.Log.SyncInterval }),
		enumKey("log.compression", "log payload compression", []Compression{CompressionSnappy, CompressionNone},
			func(c *Config) *Compression { return &c.Log.Compression }),
		boolKey("fuse.allow_other", "let other users use the mount (the kernel checks permissions)",
			func(c *Config) *bool { return &c.Fuse.AllowOther }),
		durationKey("fuse.attr_timeout", "kernel attribute cache timeout, >= 0",
			func(c *Config) *time.Duration { return &c.Fuse.AttrTimeout }),
		durationKey("fuse.entry_timeout", "kernel dentry cache timeout, >= 0",
			func(c *Config) *time.Duration { return &c.Fuse.EntryTimeout }),
		durationKey("fuse.negative_timeout", `kernel cache timeout of "no such file", >= 0`,
			func(c *Config) *time.Duration { return &c.Fuse.NegativeTimeout }),
		sizeKey("fuse.max_write", "largest WRITE request, a multiple of 4KiB in 4KiB..1MiB",
			func(c *Config) *Size { return &c.Fuse.MaxWrite }),
		sizeKey("fuse.read_ahead", "kernel read-ahead of the mount, a multiple of 4KiB in 0..16MiB",
			func(c *Config) *Size { return &c.Fuse.ReadAhead }),
		sizeKey("fuse.kernel_dirty", "dirty data the kernel's page cache may hold for the mount before writers wait (0 = the kernel's default)",
			func(c *Config) *Size { return &c.Fuse.KernelDirty }),
		boolKey("fuse.writeback_cache", "kernel write-back page cache",
			func(c *Config) *bool { return &c.Fuse.WritebackCache }),
		boolKey("fuse.debug", "log every FUSE request (very verbose)",
			func(c *Config) *bool { return &c.Fuse.Debug }),
		enumKey("prefetch.policy", "backend read-ahead on cache misses", []PrefetchPolicy{PrefetchNone, PrefetchSequential, PrefetchWholeFile},
			func(c *Config) *PrefetchPolicy { return &c.Prefetch.Policy }),
		sizeKey("prefetch.max_window", "largest sequential prefetch window, a multiple of 4KiB in 64KiB..256MiB",
			func(c *Config) *Size { return &c.Prefetch.MaxWindow }),
		enumKey("logging.level", "log level", []LogLevel{LevelPanic, LevelFatal, LevelError, LevelWarn, LevelInfo, LevelDebug, LevelTrace},
			func(c *Config) *LogLevel { return &c.Logging.Level }),
		enumKey("logging.format", "log format", []LogFormat{FormatText, FormatJSON},
			func(c *Config) *LogFormat { return &c.Logging.Format }),
		newKey("stats.dir_name", "string", "name of the statistics directory at the mount root",
			parseString, formatString, func(c *Config) *string { return &c.Stats.DirName }),
		boolKey("stats.show_in_readdir", "list the statistics directory in the root directory",
			func(c *Config) *bool { return &c.Stats.ShowInReaddir }),
		durationKey("stats.hung_threshold", "requests older than this are listed in inflight and logged, > 0",
			func(c *Config) *time.Duration { return &c.Stats.HungThreshold }),
		newKey("stats.metrics_listen", "string", `HOST:PORT of the Prometheus metrics endpoint ("" = off)`,
			parseString, formatString, func(c *Config) *string { return &c.Stats.MetricsListen }),
	}
}

// replicaList describes the items of log.replicas, in the order of the
// PATH:TYPE:SIZE syntax.
func replicaList() *listKind {
	return newList("replica", "/ssd1/dcache.log:ssd:4GiB", true, []typedField[Replica]{
		{
			itemField: itemField{name: "path", path: true, parse: func(s string) (any, error) { return s, nil }},
			set:       func(r *Replica, v any) { r.Path = v.(string) },
			scalar:    func(r Replica) (string, string) { return formatString(r.Path) },
		},
		{
			itemField: itemField{name: "type", parse: func(s string) (any, error) { return oneOf([]ReplicaType{ReplicaSSD, ReplicaAEP})(s) }},
			set:       func(r *Replica, v any) { r.Type = v.(ReplicaType) },
			scalar:    func(r Replica) (string, string) { return formatEnum(r.Type) },
		},
		{
			itemField: itemField{name: "size", parse: func(s string) (any, error) { return parseSize(s) }},
			set:       func(r *Replica, v any) { r.Size = v.(Size) },
			scalar:    func(r Replica) (string, string) { return formatSize(r.Size) },
		},
	}, func(c *Config) *[]Replica { return &c.Log.Replicas })
}

// quotaDirList describes the items of quota.directories, in the order of
// the PATH:BYTES:INODES syntax. A limit left out is no limit.
func quotaDirList() *listKind {
	return newList("directory quota", "/projects/a:10GiB:100000", false, []typedField[DirQuota]{
		{
			itemField: itemField{name: "path", parse: func(s string) (any, error) { return s, nil }},
			set:       func(q *DirQuota, v any) { q.Path = v.(string) },
			scalar:    func(q DirQuota) (string, string) { return formatString(q.Path) },
		},
		{
			itemField: itemField{name: "bytes", def: "0", parse: func(s string) (any, error) { return parseSize(s) }},
			set:       func(q *DirQuota, v any) { q.Bytes = v.(Size) },
			scalar:    func(q DirQuota) (string, string) { return formatSize(q.Bytes) },
		},
		{
			itemField: itemField{name: "inodes", def: "0", parse: func(s string) (any, error) { return parseCount(s) }},
			set:       func(q *DirQuota, v any) { q.Inodes = v.(int64) },
			scalar:    func(q DirQuota) (string, string) { return strconv.FormatInt(q.Inodes, 10), "!!int" },
		},
	}, func(c *Config) *[]DirQuota { return &c.Quota.Directories })
}

// parseCount parses a count of things: a whole number, 0 or more.
func parseCount(s string) (int64, error) {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%q is not a count (a whole number, 0 or more)", s)
	}
	return n, nil
}

// envName is the environment variable that sets key name.
func envName(name string) string {
	return "DCACHE_" + strings.ToUpper(strings.ReplaceAll(name, ".", "_"))
}

// dataDirAlias is the friendly flag name for data_dir.
const dataDirAlias = "data-dir"

// Value parsers. Their errors name the value and the reason but not the key:
// the caller adds the key and the origin.

func parseString(s string) (string, error) { return s, nil }

func parseDuration(s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("%q is not a duration (use e.g. 5s, 100ms, 1m)", s)
	}
	return d, nil
}

func parseFraction(s string) (float64, error) {
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, fmt.Errorf("%q is not a number (use e.g. 0.5)", s)
	}
	return f, nil
}

func parseInt(s string) (int, error) {
	n, err := strconv.Atoi(s)
	if err != nil {
		return 0, fmt.Errorf("%q is not an integer", s)
	}
	return n, nil
}

func parseBool(s string) (bool, error) {
	switch {
	case strings.EqualFold(s, "true"):
		return true, nil
	case strings.EqualFold(s, "false"):
		return false, nil
	}
	return false, fmt.Errorf("%q is not true or false", s)
}

func oneOf[T ~string](values []T) func(string) (T, error) {
	return func(s string) (T, error) {
		for _, v := range values {
			if string(v) == s {
				return v, nil
			}
		}
		return "", fmt.Errorf("%q is not one of %s", s, joinEnum(values, ", "))
	}
}

func joinEnum[T ~string](values []T, sep string) string {
	s := make([]string, len(values))
	for i, v := range values {
		s[i] = string(v)
	}
	return strings.Join(s, sep)
}

// Value formatters: each returns text that its parser reads back to the same
// value, and the YAML tag to render it with.

func formatString(s string) (string, string)     { return s, "!!str" }
func formatEnum[T ~string](v T) (string, string) { return string(v), "!!str" }
func formatSize(s Size) (string, string)         { return s.String(), "!!str" }
func formatBool(b bool) (string, string)         { return strconv.FormatBool(b), "!!bool" }
func formatInt(n int) (string, string)           { return strconv.Itoa(n), "!!int" }

func formatFraction(f float64) (string, string) {
	s := strconv.FormatFloat(f, 'g', -1, 64)
	if !strings.ContainsAny(s, ".eEn") { // keep 1 a float in YAML: 1.0
		s += ".0"
	}
	return s, "!!float"
}

func formatDuration(d time.Duration) (string, string) { return durationString(d), "!!str" }

// durationString is time.Duration.String without the zero tails that make
// "1m0s" and "1h0m0s" hard to read.
func durationString(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

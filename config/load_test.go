package config

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

// builtin returns the repository's config.yaml, the built-in defaults.
func builtin(t testing.TB) []byte {
	t.Helper()
	b, err := os.ReadFile("../config.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// input is one combination of sources for Load.
type input struct {
	defaults string   // "" = the repository's config.yaml
	file     string   // YAML written to a file passed as --config; "" = none
	env      []string // NAME=VALUE
	args     []string // command line, after RegisterFlags
}

// load runs Load on in, with the file (if any) in a temp dir named
// dcache.yaml. It returns the file's path too, for expected messages.
func load(t *testing.T, in input) (*Config, string, error) {
	t.Helper()
	defaults := builtin(t)
	if in.defaults != "" {
		defaults = []byte(in.defaults)
	}
	path := ""
	if in.file != "" {
		path = filepath.Join(t.TempDir(), "dcache.yaml")
		if err := os.WriteFile(path, []byte(in.file), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	fs := pflag.NewFlagSet("dcache", pflag.ContinueOnError)
	RegisterFlags(fs)
	if err := fs.Parse(in.args); err != nil {
		t.Fatalf("parse flags %q: %v", in.args, err)
	}
	c, err := Load(defaults, path, fs, in.env)
	return c, path, err
}

func cwd(t testing.TB) string {
	t.Helper()
	d, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// defaultConfig is what the repository's config.yaml means, loaded from
// directory dir.
func defaultConfig(dir string) Config {
	data := filepath.Join(dir, "dcache-data")
	return Config{
		DataDir: data,
		Cache:   Cache{Size: GiB, Mode: ModeWriteBack, Eviction: EvictLRU},
		Quota:   Quota{DirtyBytes: 512 * MiB, Directories: []DirQuota{}},
		Flush: Flush{HighWatermark: 0.5, LowWatermark: 0.3, ThrottleWatermark: 0.9, MaxDirtyAge: 30 * time.Second,
			WritebackJobs: 4, SegmentSize: 64 * MiB, SequentialCutoff: 4 * MiB},
		Backend: Backend{Type: BackendDir, Path: filepath.Join(data, "backend"), CleanThreshold: 0.5, DirectIO: true},
		Log: Log{
			Replicas:     []Replica{{Path: filepath.Join(data, "log"), Type: ReplicaSSD, Size: GiB}},
			WriteQuorum:  QuorumAll,
			Sync:         SyncFsync,
			SyncInterval: 5 * time.Second,
			Compression:  CompressionSnappy,
		},
		Fuse: Fuse{
			AllowOther: true, AttrTimeout: time.Second, EntryTimeout: time.Second, NegativeTimeout: time.Second,
			MaxWrite: MiB, ReadAhead: 4 * MiB, KernelDirty: GiB, WritebackCache: true, Debug: false,
		},
		Prefetch: Prefetch{Policy: PrefetchSequential, MaxWindow: 8 * MiB},
		Logging:  Logging{Level: LevelInfo, Format: FormatText},
		Stats:    Stats{DirName: ".dcache", HungThreshold: 5 * time.Second},
	}
}

// equal compares the exported contents of two configurations.
func equal(a, b Config) bool {
	a.origins, b.origins = nil, nil
	return reflect.DeepEqual(a, b)
}

func TestLoadBuiltinDefaults(t *testing.T) {
	t.Parallel()
	c, err := Load(builtin(t), "", nil, nil)
	if err != nil {
		t.Fatalf("the repository's config.yaml does not load: %v", err)
	}
	if want := defaultConfig(cwd(t)); !equal(*c, want) {
		t.Errorf("config.yaml loads as\n%+v\nwant\n%+v", *c, want)
	}
	// An empty file and unset flags change nothing.
	c2, _, err := load(t, input{file: "# nothing here\n"})
	if err != nil {
		t.Fatal(err)
	}
	if !equal(*c, *c2) {
		t.Errorf("empty file and no flags give\n%+v\nwant\n%+v", *c2, *c)
	}
}

func TestLoadOverrides(t *testing.T) {
	t.Parallel()
	dir := cwd(t)
	for _, tc := range []struct {
		name  string
		in    input
		check func(c *Config) bool
		// origins of keys, by suffix (the file's temp path varies)
		origins map[string]string
	}{
		{
			name:    "default",
			in:      input{},
			check:   func(c *Config) bool { return c.Cache.Size == GiB },
			origins: map[string]string{"cache.size": defaultsOrigin + ":"},
		},
		{
			name:    "file over default",
			in:      input{file: "cache:\n  size: 2GiB\n"},
			check:   func(c *Config) bool { return c.Cache.Size == 2*GiB },
			origins: map[string]string{"cache.size": "dcache.yaml:2"},
		},
		{
			name:    "env over file",
			in:      input{file: "cache:\n  size: 2GiB\n", env: []string{"DCACHE_CACHE_SIZE=3GiB"}},
			check:   func(c *Config) bool { return c.Cache.Size == 3*GiB },
			origins: map[string]string{"cache.size": "$DCACHE_CACHE_SIZE"},
		},
		{
			name: "flag over env",
			in: input{file: "cache:\n  size: 2GiB\n", env: []string{"DCACHE_CACHE_SIZE=3GiB"},
				args: []string{"--cache.size", "4GiB"}},
			check:   func(c *Config) bool { return c.Cache.Size == 4*GiB },
			origins: map[string]string{"cache.size": "--cache.size"},
		},
		{
			name:  "flag over default, env for another key",
			in:    input{env: []string{"DCACHE_LOG_SYNC=always"}, args: []string{"--cache.size=4GiB"}},
			check: func(c *Config) bool { return c.Cache.Size == 4*GiB && c.Log.Sync == SyncAlways },
			origins: map[string]string{
				"cache.size": "--cache.size", "log.sync": "$DCACHE_LOG_SYNC", "quota.dirty_bytes": defaultsOrigin + ":",
			},
		},
		{
			name:  "write quorum one",
			in:    input{file: "log:\n  write_quorum: one\n"},
			check: func(c *Config) bool { return c.Log.WriteQuorum == QuorumOne },
		},
		{
			name:  "last of repeated variables wins",
			in:    input{env: []string{"DCACHE_CACHE_SIZE=12XB", "HOME=/root", "DCACHE_CACHE_SIZE=2GiB"}},
			check: func(c *Config) bool { return c.Cache.Size == 2*GiB },
		},
		{
			name: "file sets part of a section, the rest stays",
			in:   input{file: "flush:\n  max_dirty_age: 1m\n"},
			check: func(c *Config) bool {
				return c.Flush.MaxDirtyAge == time.Minute && c.Flush.HighWatermark == 0.5 && c.Flush.SegmentSize == 64*MiB
			},
		},
		{
			name: "every kind of key by flag",
			in: input{args: []string{
				"--data-dir", "/srv/dc", "--quota.dirty_bytes", "256MiB", "--flush.high_watermark", "0.8",
				"--flush.low_watermark", "0", "--flush.max_dirty_age", "100ms", "--flush.segment_size", "4GiB",
				"--backend.type", "dir", "--backend.path", "/mnt/slow", "--backend.direct_io=false", "--log.write_quorum", "majority",
				"--log.sync", "interval", "--log.sync_interval", "250ms", "--log.compression", "none",
				"--fuse.allow_other=false", "--fuse.attr_timeout", "0", "--fuse.entry_timeout", "2s",
				"--fuse.negative_timeout", "0s", "--fuse.max_write", "128KiB", "--fuse.writeback_cache=false",
				"--fuse.debug", "--logging.level", "trace", "--logging.format", "json",
				"--stats.dir_name", ".stats", "--stats.show_in_readdir", "--stats.hung_threshold", "2s",
				"--stats.metrics_listen", "127.0.0.1:9567",
			}},
			check: func(c *Config) bool {
				return c.DataDir == "/srv/dc" && c.Quota.DirtyBytes == 256*MiB && c.Flush.HighWatermark == 0.8 &&
					c.Flush.LowWatermark == 0 && c.Flush.MaxDirtyAge == 100*time.Millisecond &&
					c.Flush.SegmentSize == 4*GiB && c.Backend == Backend{Type: BackendDir, Path: "/mnt/slow", CleanThreshold: 0.5} &&
					c.Log.Replicas[0].Path == "/srv/dc/log" && c.Log.WriteQuorum == QuorumMajority &&
					c.Log.Sync == SyncInterval && c.Log.SyncInterval == 250*time.Millisecond &&
					c.Log.Compression == CompressionNone && !c.Fuse.AllowOther && c.Fuse.AttrTimeout == 0 &&
					c.Fuse.EntryTimeout == 2*time.Second && c.Fuse.NegativeTimeout == 0 &&
					c.Fuse.MaxWrite == 128*KiB && !c.Fuse.WritebackCache && c.Fuse.Debug &&
					c.Logging == Logging{LevelTrace, FormatJSON} &&
					c.Stats == Stats{".stats", true, 2 * time.Second, "127.0.0.1:9567"}
			},
			origins: map[string]string{"data_dir": "--data-dir", "fuse.debug": "--fuse.debug"},
		},
		{
			name: "cache policy keys",
			in: input{
				file: "cache:\n  mode: write-through\n  eviction: fifo\nflush:\n  writeback_jobs: 8\n",
				args: []string{"--flush.throttle_watermark", "0.75", "--flush.sequential_cutoff", "0"},
				env:  []string{"DCACHE_CACHE_MODE=write-around"},
			},
			check: func(c *Config) bool {
				return c.Cache.Mode == ModeWriteAround && c.Cache.Eviction == EvictFIFO && c.Flush.WritebackJobs == 8 &&
					c.Flush.ThrottleWatermark == 0.75 && c.Flush.SequentialCutoff == 0
			},
			origins: map[string]string{"cache.mode": "DCACHE_CACHE_MODE", "flush.writeback_jobs": "dcache.yaml:5"},
		},
		{
			name: "every kind of key by environment",
			in: input{env: []string{
				"DCACHE_DATA_DIR=/srv/dc", "DCACHE_FLUSH_HIGH_WATERMARK=1", "DCACHE_FUSE_ALLOW_OTHER=false",
				"DCACHE_FUSE_MAX_WRITE=4KiB", "DCACHE_LOG_SYNC_INTERVAL=1m", "DCACHE_LOGGING_LEVEL=debug",
				"DCACHE_BACKEND_PATH=", "DCACHE_LOG_REPLICAS=:aep:64MiB",
			}},
			check: func(c *Config) bool {
				return c.DataDir == "/srv/dc" && c.Flush.HighWatermark == 1 && !c.Fuse.AllowOther &&
					c.Fuse.MaxWrite == 4*KiB && c.Log.SyncInterval == time.Minute && c.Logging.Level == LevelDebug &&
					c.Backend.Path == "/srv/dc/backend" &&
					reflect.DeepEqual(c.Log.Replicas, []Replica{{"/srv/dc/log", ReplicaAEP, 64 * MiB}})
			},
			origins: map[string]string{"log.replicas": "$DCACHE_LOG_REPLICAS", "backend.path": "$DCACHE_BACKEND_PATH"},
		},
		{
			name: "device backend",
			in:   input{args: []string{"--data-dir", "/srv/dc", "--backend.type", "device", "--backend.path", "/dev/sdb"}},
			check: func(c *Config) bool {
				return c.Backend.Type == BackendDevice && c.Backend.Path == "/dev/sdb"
			},
		},
		{
			name:  "--data_dir works too",
			in:    input{args: []string{"--data_dir=/srv/dc"}},
			check: func(c *Config) bool { return c.DataDir == "/srv/dc" },
		},
		{
			name:  "--data-dir and --data_dir agreeing",
			in:    input{args: []string{"--data_dir=/srv/dc", "--data-dir=/srv/dc"}},
			check: func(c *Config) bool { return c.DataDir == "/srv/dc" },
		},
		{
			name: "relative paths from the current directory",
			in:   input{file: "data_dir: rel\nbackend:\n  path: slow/../backend\nlog:\n  replicas:\n    - {path: ./a.log}\n    - {path: \"\", type: aep}\n"},
			check: func(c *Config) bool {
				return c.DataDir == filepath.Join(dir, "rel") && c.Backend.Path == filepath.Join(dir, "backend") &&
					reflect.DeepEqual(c.Log.Replicas, []Replica{
						{filepath.Join(dir, "a.log"), ReplicaSSD, GiB},
						{filepath.Join(dir, "rel", "log"), ReplicaAEP, GiB},
					})
			},
			origins: map[string]string{"log.replicas": "dcache.yaml:5"},
		},
		{
			name: "replicas from the file: keys left out take the built-in values",
			in:   input{file: "log:\n  replicas:\n    - path: /ssd1/log\n    - path: /ssd2/log\n      size: 2GiB\n    - {path: /pmem0, type: aep, size: 16MiB}\n"},
			check: func(c *Config) bool {
				return reflect.DeepEqual(c.Log.Replicas, []Replica{
					{"/ssd1/log", ReplicaSSD, GiB}, {"/ssd2/log", ReplicaSSD, 2 * GiB}, {"/pmem0", ReplicaAEP, 16 * MiB},
				})
			},
		},
		{
			name: "replicas by env replace those of the file, flags replace both",
			in: input{
				file: "log:\n  replicas:\n    - path: /f1\n    - path: /f2\n",
				env:  []string{"DCACHE_LOG_REPLICAS=/e1:ssd:1GiB"},
				args: []string{"--log.replicas", "/a1:ssd:1GiB,/a2:aep:8MiB", "--log.replicas=/a3:ssd:9MiB"},
			},
			check: func(c *Config) bool {
				return reflect.DeepEqual(c.Log.Replicas, []Replica{
					{"/a1", ReplicaSSD, GiB}, {"/a2", ReplicaAEP, 8 * MiB}, {"/a3", ReplicaSSD, 9 * MiB},
				})
			},
		},
		{
			name: "directory quotas from the file: limits left out are none, paths cleaned",
			in: input{file: "quota:\n  directories:\n    - {path: /projects/a, bytes: 10GiB, inodes: 100000}\n" +
				"    - path: b//c/\n      inodes: 5\n    - {path: /x:y, bytes: 1MiB}\nprefetch:\n  policy: whole-file\n  max_window: 64KiB\n"},
			check: func(c *Config) bool {
				return reflect.DeepEqual(c.Quota.Directories, []DirQuota{
					{"/projects/a", 10 * GiB, 100000}, {"/b/c", 0, 5}, {"/x:y", MiB, 0},
				}) && c.Prefetch == Prefetch{PrefetchWholeFile, 64 * KiB}
			},
			origins: map[string]string{"quota.directories": "dcache.yaml:2"},
		},
		{
			name: "directory quotas by env and flags",
			in: input{
				env:  []string{"DCACHE_QUOTA_DIRECTORIES=/e:1GiB:0", "DCACHE_PREFETCH_POLICY=none"},
				args: []string{"--quota.directories", "/a:1GiB:10,/b:0:0", "--quota.directories=/c:c:2MiB:3"},
			},
			check: func(c *Config) bool {
				return reflect.DeepEqual(c.Quota.Directories, []DirQuota{
					{"/a", GiB, 10}, {"/b", 0, 0}, {"/c:c", 2 * MiB, 3},
				}) && c.Prefetch.Policy == PrefetchNone
			},
		},
		{
			name: "YAML niceties: anchors, empty sections, quoted and plain scalars",
			in:   input{file: "cache:\n  size: &big \"2GiB\"\nquota:\n  dirty_bytes: *big\nfuse:\nflush:\n  high_watermark: 1\n  segment_size: 1048576\nlog:\n  sync_interval: \"5s\"\nbackend:\n  path: ~\n"},
			check: func(c *Config) bool {
				return c.Cache.Size == 2*GiB && c.Quota.DirtyBytes == 2*GiB && c.Flush.HighWatermark == 1 &&
					c.Flush.SegmentSize == MiB && c.Fuse.AllowOther && c.Backend.Path == filepath.Join(dir, "dcache-data", "backend")
			},
		},
		{
			name: "YAML scalars are read as written, not as YAML numbers or times",
			in:   input{file: "data_dir: 2024-01-01\nbackend:\n  path: 1.10\nlog:\n  replicas:\n    - {path: 010}\ncache:\n  size: 02147483648\n"},
			check: func(c *Config) bool {
				return c.DataDir == filepath.Join(dir, "2024-01-01") && c.Backend.Path == filepath.Join(dir, "1.10") &&
					c.Log.Replicas[0].Path == filepath.Join(dir, "010") && c.Cache.Size == 2*GiB
			},
		},
		{
			name:  "bool flags in any case",
			in:    input{args: []string{"--fuse.debug=tRuE", "--fuse.allow_other=FALSE", "--fuse.writeback_cache=False"}},
			check: func(c *Config) bool { return c.Fuse.Debug && !c.Fuse.AllowOther && !c.Fuse.WritebackCache },
		},
		{
			name:  "other variables are none of our business",
			in:    input{env: []string{"PATH=/bin", "DCACHEX=1", "dcache_cache_size=1", "NOEQUALS"}},
			check: func(c *Config) bool { return c.Cache.Size == GiB },
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c, _, err := load(t, tc.in)
			if err != nil {
				t.Fatal(err)
			}
			if !tc.check(c) {
				t.Errorf("unexpected configuration:\n%s", c.YAML())
			}
			for k, want := range tc.origins {
				if got := c.origins[k]; !strings.Contains(got, want) {
					t.Errorf("origin of %s = %q, want it to contain %q", k, got, want)
				}
			}
		})
	}
}

func TestLoadErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		in   input
		want []string // fragments, each in the error text; "FILE" stands for the file's path
		n    int      // number of problems, when it matters that nothing piles up
	}{
		// Values of the wrong syntax, from each source.
		{name: "bad size in file", in: input{file: "cache:\n  size: 12XB\n"},
			want: []string{`FILE:2: cache.size: "12XB" is not a size (use e.g. 512MiB, 1GiB)`}, n: 1},
		{name: "bad size by env", in: input{env: []string{"DCACHE_CACHE_SIZE=1 GB"}},
			want: []string{`$DCACHE_CACHE_SIZE: cache.size: "1 GB" is not a size`}, n: 1},
		{name: "bad size by flag", in: input{args: []string{"--cache.size", "1gb"}},
			want: []string{`--cache.size: cache.size: "1gb" is not a size`}, n: 1},
		{name: "bad duration", in: input{file: "flush:\n  max_dirty_age: 30\n"},
			want: []string{`flush.max_dirty_age: "30" is not a duration (use e.g. 5s, 100ms, 1m)`}},
		{name: "string where a number is", in: input{file: "flush:\n  high_watermark: half\n"},
			want: []string{`flush.high_watermark: "half" is not a number`}},
		{name: "bad bool", in: input{env: []string{"DCACHE_FUSE_DEBUG=yes"}},
			want: []string{`$DCACHE_FUSE_DEBUG: fuse.debug: "yes" is not true or false`}},
		{name: "bad bool flag", in: input{args: []string{"--fuse.debug=on"}},
			want: []string{`--fuse.debug: fuse.debug: "on" is not true or false`}},
		{name: "bad enum", in: input{file: "logging:\n  level: warning\n"},
			want: []string{`logging.level: "warning" is not one of panic, fatal, error, warn, info, debug, trace`}},
		{name: "bad backend type", in: input{args: []string{"--backend.type", "s3"}},
			want: []string{`backend.type: "s3" is not one of dir, device`}},
		{name: "device backend without a path", in: input{args: []string{"--backend.type", "device"}},
			want: []string{`backend.path: must name the block device or file when backend.type is device`}, n: 1},
		{name: "bad sync", in: input{file: "log:\n  sync: never\n"},
			want: []string{`log.sync: "never" is not one of fsync, always, interval`}},
		{name: "stats dir name with a slash", in: input{args: []string{"--stats.dir_name", "a/b"}},
			want: []string{`stats.dir_name: "a/b" must be one file name`}, n: 1},
		{name: "stats dir name empty", in: input{file: "stats:\n  dir_name: \"\"\n"},
			want: []string{`stats.dir_name: "" is not a usable file name`}, n: 1},
		{name: "stats dir name dot dot", in: input{env: []string{"DCACHE_STATS_DIR_NAME=.."}},
			want: []string{`stats.dir_name: ".." is not a usable file name`}, n: 1},
		{name: "hung threshold zero", in: input{args: []string{"--stats.hung_threshold", "0s"}},
			want: []string{`stats.hung_threshold: 0s must be above 0`}, n: 1},
		{name: "metrics address without port", in: input{args: []string{"--stats.metrics_listen", "localhost"}},
			want: []string{`stats.metrics_listen: "localhost" is not HOST:PORT`}, n: 1},
		{name: "metrics address bad port", in: input{args: []string{"--stats.metrics_listen", "127.0.0.1:http99"}},
			want: []string{`stats.metrics_listen: port "http99"`}, n: 1},

		// Unknown names.
		{name: "unknown top key", in: input{file: "cachee:\n  size: 1GiB\n"},
			want: []string{`FILE:1: cachee: unknown key (did you mean "cache"?)`}},
		{name: "unknown nested key", in: input{file: "flush:\n  highwatermark: 0.5\n"},
			want: []string{`FILE:2: flush.highwatermark: unknown key (did you mean "high_watermark"?)`}},
		{name: "key in the wrong section", in: input{file: "size: 1GiB\n"},
			want: []string{`size: unknown key (did you mean "cache.size"?)`}},
		{name: "unknown key without a likely fix", in: input{file: "snapshots:\n  dir: x\n"},
			want: []string{`FILE:1: snapshots: unknown key`}},
		{name: "upper case key", in: input{file: "Cache:\n  size: 2GiB\n"},
			want: []string{`Cache: unknown key (did you mean "cache"?)`}},
		{name: "unknown key in a list item", in: input{file: "log:\n  replicas:\n    - {path: /x, sise: 1GiB}\n"},
			want: []string{`FILE:3: log.replicas[0].sise: unknown key (did you mean "size"?)`}},
		{name: "unknown variable", in: input{env: []string{"DCACHE_CACHE_SZIE=1GiB"}},
			want: []string{`DCACHE_CACHE_SZIE: unknown environment variable (did you mean "DCACHE_CACHE_SIZE"?)`}},
		{name: "unknown variable far from any", in: input{env: []string{"DCACHE_SNAPSHOT_DIR=x"}},
			want: []string{`$DCACHE_SNAPSHOT_DIR: unknown environment variable`}},

		// Wrong YAML shapes: reported, never a panic.
		{name: "map where a value is", in: input{file: "backend:\n  type: {a: 1}\n"},
			want: []string{`FILE:2: backend.type: expected a single value, found a mapping`}},
		{name: "list where a value is", in: input{file: "cache:\n  size: [1, 2]\n"},
			want: []string{`cache.size: expected a single value, found a list`}},
		{name: "value where a section is", in: input{file: "cache: 1GiB\n"},
			want: []string{`FILE:1: cache: expected a mapping of keys (size, mode, eviction), found "1GiB"`}},
		{name: "list where a section is", in: input{file: "fuse: [a]\n"},
			want: []string{`fuse: expected a mapping of keys (allow_other, attr_timeout,`}},
		{name: "no value", in: input{file: "cache:\n  size:\n"},
			want: []string{`FILE:2: cache.size: no value given`}, n: 1},
		{name: "replicas not a list", in: input{file: "log:\n  replicas: /x:ssd:1GiB\n"},
			want: []string{`log.replicas: expected a list of replicas, found "/x:ssd:1GiB"`}},
		{name: "replica not a mapping", in: input{file: "log:\n  replicas:\n    - /x\n"},
			want: []string{`FILE:3: log.replicas[0]: expected a mapping with keys path, type, size, found "/x"`}},
		{name: "replica field a mapping", in: input{file: "log:\n  replicas:\n    - {path: {a: b}}\n"},
			want: []string{`log.replicas[0].path: expected a single value, found a mapping`}},
		{name: "bad replica type", in: input{file: "log:\n  replicas:\n    - {path: /a}\n    - {path: /b, type: hdd}\n"},
			want: []string{`FILE:4: log.replicas[1].type: "hdd" is not one of ssd, aep`}, n: 1},
		{name: "duplicate key", in: input{file: "cache:\n  size: 1GiB\n  size: 2GiB\n"},
			want: []string{`FILE:3: cache.size: given twice (also on line 2)`}},
		{name: "duplicate item key", in: input{file: "log:\n  replicas:\n    - path: /a\n      path: /b\n"},
			want: []string{`FILE:4: log.replicas[0].path: given twice (also on line 3)`}},
		{name: "duplicate section", in: input{file: "cache:\n  size: 1GiB\ncache:\n  size: 2GiB\n"},
			want: []string{`FILE:3: cache: given twice (also on line 1)`}},
		{name: "syntax error", in: input{file: "cache:\n  size: [1GiB\n"},
			want: []string{`FILE:`, `did not find expected ',' or ']'`}},
		{name: "tab indentation", in: input{file: "cache:\n\tsize: 1GiB\n"},
			want: []string{`FILE`, `found character that cannot start any token`}},
		{name: "top level list", in: input{file: "- cache\n"},
			want: []string{`FILE:1: expected a mapping of keys at the top, found a list`}},
		{name: "two documents", in: input{file: "cache:\n  size: 1GiB\n---\ncache:\n  size: 2GiB\n"},
			want: []string{`more than one YAML document`}},
		{name: "complex key", in: input{file: "? [a, b]\n: 1\n"},
			want: []string{`FILE:1: a key must be a name, found a list`}},

		// Ranges and relations, checked on the merged result.
		{name: "low above high", in: input{file: "flush:\n  low_watermark: 0.6\n"},
			want: []string{`FILE:2: flush.low_watermark: 0.6 must be below flush.high_watermark (0.5)`}, n: 1},
		{name: "low equal to high", in: input{args: []string{"--flush.high_watermark=0.4", "--flush.low_watermark=0.4"}},
			want: []string{`--flush.low_watermark: flush.low_watermark: 0.4 must be below flush.high_watermark (0.4)`}},
		{name: "high zero", in: input{args: []string{"--flush.high_watermark=0"}},
			want: []string{`flush.high_watermark: 0 must be above 0 and at most 1`}, n: 1},
		{name: "high above one", in: input{args: []string{"--flush.high_watermark=1.5"}},
			want: []string{`flush.high_watermark: 1.5 must be above 0 and at most 1`}, n: 1},
		{name: "clean threshold one", in: input{file: "backend:\n  clean_threshold: 1\n"},
			want: []string{`FILE:2: backend.clean_threshold: 1 must be at least 0 and below 1`}, n: 1},
		{name: "clean threshold negative", in: input{args: []string{"--backend.clean_threshold=-0.5"}},
			want: []string{`backend.clean_threshold: -0.5 must be at least 0 and below 1`}, n: 1},
		{name: "low negative", in: input{args: []string{"--flush.low_watermark=-0.1"}},
			want: []string{`flush.low_watermark: -0.1 must not be negative`}},
		{name: "bad cache mode", in: input{file: "cache:\n  mode: writeback\n"},
			want: []string{`FILE:2: cache.mode: "writeback" is not one of write-back, write-through, write-around`}, n: 1},
		{name: "bad eviction", in: input{args: []string{"--cache.eviction=lfu"}},
			want: []string{`cache.eviction: "lfu" is not one of lru, fifo`}, n: 1},
		{name: "throttle above one", in: input{args: []string{"--flush.throttle_watermark=1.2"}},
			want: []string{`flush.throttle_watermark: 1.2 must be above 0 and at most 1`}, n: 1},
		{name: "throttle zero", in: input{env: []string{"DCACHE_FLUSH_THROTTLE_WATERMARK=0"}},
			want: []string{`$DCACHE_FLUSH_THROTTLE_WATERMARK: flush.throttle_watermark: 0 must be above 0 and at most 1`}, n: 1},
		{name: "no writeback jobs", in: input{file: "flush:\n  writeback_jobs: 0\n"},
			want: []string{`FILE:2: flush.writeback_jobs: 0 is outside 1..64`}, n: 1},
		{name: "writeback jobs not a number", in: input{args: []string{"--flush.writeback_jobs=four"}},
			want: []string{`flush.writeback_jobs: "four" is not an integer`}, n: 1},
		{name: "negative cutoff", in: input{args: []string{"--flush.sequential_cutoff=-1"}},
			want: []string{`flush.sequential_cutoff:`}, n: 1},
		{name: "cache too small", in: input{args: []string{"--cache.size=8MiB", "--quota.dirty_bytes=4MiB"}},
			want: []string{`cache.size: 8MiB is below the minimum of 16MiB`}, n: 1},
		{name: "dirty above cache", in: input{file: "quota:\n  dirty_bytes: 2GiB\n"},
			want: []string{`quota.dirty_bytes: 2GiB must not exceed cache.size (1GiB)`}},
		{name: "dirty too small", in: input{env: []string{"DCACHE_QUOTA_DIRTY_BYTES=4KiB"}},
			want: []string{`$DCACHE_QUOTA_DIRTY_BYTES: quota.dirty_bytes: 4KiB is below the minimum of 1MiB`}},
		{name: "max dirty age too short", in: input{args: []string{"--flush.max_dirty_age=10ms"}},
			want: []string{`flush.max_dirty_age: 10ms is below the minimum of 100ms`}},
		{name: "segment not aligned", in: input{args: []string{"--flush.segment_size=1025KiB"}},
			want: []string{`flush.segment_size: 1025KiB is not a multiple of 4KiB`}},
		{name: "segment too large", in: input{args: []string{"--flush.segment_size=8GiB"}},
			want: []string{`flush.segment_size: 8GiB is outside 1MiB..4GiB`}},
		{name: "segment too small", in: input{args: []string{"--flush.segment_size=512KiB"}},
			want: []string{`flush.segment_size: 512KiB is outside 1MiB..4GiB`}},
		{name: "max write too large", in: input{args: []string{"--fuse.max_write=2MiB"}},
			want: []string{`fuse.max_write: 2MiB is outside 4KiB..1MiB`}},
		{name: "max write not aligned", in: input{args: []string{"--fuse.max_write=6KiB"}},
			want: []string{`fuse.max_write: 6KiB is not a multiple of 4KiB`}},
		{name: "kernel dirty too large", in: input{args: []string{"--fuse.kernel_dirty=65GiB"}},
			want: []string{`fuse.kernel_dirty: 65GiB must be in 0..64GiB`}},
		{name: "sync interval zero", in: input{args: []string{"--log.sync_interval=0s"}},
			want: []string{`log.sync_interval: 0s must be above 0`}},
		{name: "negative timeout", in: input{file: "fuse:\n  entry_timeout: -1s\n"},
			want: []string{`FILE:2: fuse.entry_timeout: -1s must not be negative`}},
		{name: "quota without a path", in: input{file: "quota:\n  directories:\n    - {bytes: 1GiB}\n"},
			want: []string{`FILE:3: quota.directories[0].path: missing (each directory quota needs path)`}},
		{name: "quota path escaping the mount", in: input{args: []string{"--quota.directories=/a/../../b:1GiB:0"}},
			want: []string{`--quota.directories: quota.directories[0].path: "/a/../../b": .. is not allowed`}},
		{name: "quota paths twice", in: input{file: "quota:\n  directories:\n    - {path: /a}\n    - {path: a/}\n"},
			want: []string{`FILE:4: quota.directories[1].path: /a is also quota.directories[0]`}},
		{name: "quota inodes not a count", in: input{file: "quota:\n  directories:\n    - {path: /a, inodes: -1}\n"},
			want: []string{`FILE:3: quota.directories[0].inodes: "-1" is not a count`}},
		{name: "quota bytes not a size", in: input{env: []string{"DCACHE_QUOTA_DIRECTORIES=/a:lots:1"}},
			want: []string{`$DCACHE_QUOTA_DIRECTORIES: quota.directories[0].bytes: "lots" is not a size`}},
		{name: "quota item not PATH:BYTES:INODES", in: input{args: []string{"--quota.directories=/a:1GiB"}},
			want: []string{`quota.directories[0]: "/a:1GiB" is not PATH:BYTES:INODES (e.g. /projects/a:10GiB:100000)`}},
		{name: "quota empty path", in: input{file: "quota:\n  directories:\n    - {path: \"\", bytes: 1GiB}\n"},
			want: []string{`FILE:3: quota.directories[0].path: must not be empty`}},
		{name: "prefetch policy", in: input{file: "prefetch:\n  policy: random\n"},
			want: []string{`FILE:2: prefetch.policy: "random" is not one of none, sequential, whole-file`}},
		{name: "prefetch window too small", in: input{args: []string{"--prefetch.max_window=4KiB"}},
			want: []string{`prefetch.max_window: 4KiB is outside 64KiB..256MiB`}},
		{name: "no replicas", in: input{file: "log:\n  replicas: []\n"},
			want: []string{`FILE:2: log.replicas: at least one replica is needed`}},
		{name: "no replicas by env", in: input{env: []string{"DCACHE_LOG_REPLICAS="}},
			want: []string{`$DCACHE_LOG_REPLICAS: log.replicas: at least one replica is needed`}},
		{name: "replica too small", in: input{file: "log:\n  replicas:\n    - path: /a\n      size: 4MiB\n"},
			want: []string{`FILE:4: log.replicas[0].size: 4MiB is below the minimum of 8MiB`}},
		{name: "replicas sharing a path", in: input{args: []string{"--log.replicas=/a:ssd:1GiB,/b/../a:ssd:1GiB"}},
			want: []string{`--log.replicas: log.replicas[1].path: /a is also log.replicas[0].path`}},
		{name: "replicas sharing the default path", in: input{file: "log:\n  replicas:\n    - {type: ssd}\n    - {type: aep}\n"},
			want: []string{`FILE:4: log.replicas[1].path: `, `/dcache-data/log is also log.replicas[0].path`}},
		{name: "replica on the backend", in: input{args: []string{"--backend.path=/x", "--log.replicas=/x:ssd:1GiB"}},
			want: []string{`log.replicas[0].path: /x is also backend.path`}},
		{name: "replica on data_dir", in: input{args: []string{"--data-dir=/x", "--log.replicas=/x:ssd:1GiB"}},
			want: []string{`log.replicas[0].path: /x is also data_dir`}},
		{name: "empty data_dir", in: input{env: []string{"DCACHE_DATA_DIR="}},
			want: []string{`$DCACHE_DATA_DIR: data_dir: must not be empty`}, n: 1},
		{name: "tilde data_dir", in: input{file: "data_dir: ~/dcache\n"},
			want: []string{`FILE:1: data_dir: "~/dcache": ~ is not expanded here; give the full path`}},
		{name: "tilde backend", in: input{args: []string{"--backend.path=~/slow"}},
			want: []string{`backend.path: "~/slow": ~ is not expanded`}},
		{name: "tilde replica", in: input{args: []string{"--log.replicas=~/log:ssd:1GiB"}},
			want: []string{`log.replicas[0].path: "~/log": ~ is not expanded`}},
		{name: "bad replicas by env", in: input{env: []string{"DCACHE_LOG_REPLICAS=/a:ssd:1GiB,/b:hdd:1GiB"}},
			want: []string{`$DCACHE_LOG_REPLICAS: log.replicas[1].type: "hdd" is not one of ssd, aep`}, n: 1},
		{name: "bad replicas by flag", in: input{args: []string{"--log.replicas", "/a"}},
			want: []string{`--log.replicas: log.replicas[0]: "/a" is not PATH:TYPE:SIZE`}, n: 1},
		{name: "data dir flags disagreeing", in: input{args: []string{"--data_dir=/a", "--data-dir=/b"}},
			want: []string{`--data-dir: data_dir: "/b" conflicts with --data_dir "/a"`}, n: 1},

		// Collected, not stopped at the first; no follow-on noise.
		{
			name: "everything at once",
			in: input{
				file: "cachee: 1\ncache:\n  size: 12XB\nflush:\n  low_watermark: 0.6\nlog:\n  replicas:\n    - {path: /a, type: hdd}\n",
				env:  []string{"DCACHE_CACHE_SZIE=1", "DCACHE_FUSE_MAX_WRITE=3MiB"},
				args: []string{"--logging.level=loud", "--quota.dirty_bytes=4GiB"},
			},
			want: []string{
				"config: 7 problems:",
				`FILE:1: cachee: unknown key`,
				`FILE:3: cache.size: "12XB" is not a size`,
				`FILE:8: log.replicas[0].type: "hdd" is not one of ssd, aep`,
				`$DCACHE_CACHE_SZIE: unknown environment variable`,
				`--logging.level: logging.level: "loud" is not one of`,
				`$DCACHE_FUSE_MAX_WRITE: fuse.max_write: 3MiB is outside 4KiB..1MiB`,
				`FILE:5: flush.low_watermark: 0.6 must be below flush.high_watermark (0.5)`,
			},
			n: 7, // quota.dirty_bytes is not checked against a cache.size already reported bad
		},
		{
			name: "a bad value is reported even when overridden",
			in:   input{file: "cache:\n  size: 12XB\n", args: []string{"--cache.size=2GiB"}},
			want: []string{`FILE:2: cache.size: "12XB" is not a size`}, n: 1,
		},

		// The sources themselves.
		{name: "defaults lacking a key", in: input{defaults: "cache:\n  size: 1GiB\n"},
			want: []string{`data_dir: no value: the built-in defaults lack this key`, `logging.format: no value`}},
		{name: "defaults with an incomplete replica", in: input{defaults: strings.Replace(string(builtin(t)), "size: 1GiB # Default", "# size", 1)},
			want: []string{`built-in defaults:`, `: log.replicas[0].size: missing (each replica needs path, type, size)`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c, path, err := load(t, tc.in)
			if err == nil {
				t.Fatalf("Load succeeded, want errors %q; got\n%s", tc.want, c.YAML())
			}
			if c != nil {
				t.Errorf("Load returned a Config with an error")
			}
			if !IsValidation(err) {
				t.Errorf("IsValidation(%v) = false", err)
			}
			msg := err.Error()
			for _, frag := range tc.want {
				frag = strings.ReplaceAll(frag, "FILE", path)
				if !strings.Contains(msg, frag) {
					t.Errorf("error lacks %q:\n%s", frag, msg)
				}
			}
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("error is %T, want *Error", err)
			}
			if tc.n != 0 && len(e.Problems) != tc.n {
				t.Errorf("%d problems, want %d:\n%s", len(e.Problems), tc.n, msg)
			}
			var p *Problem
			if !errors.As(err, &p) || p != e.Problems[0] {
				t.Errorf("errors.As does not reach the first *Problem")
			}
		})
	}
}

func TestLoadMissingFile(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "nonexistent.yaml")
	_, err := Load(builtin(t), path, nil, []string{"DCACHE_CACHE_SIZE=oops"})
	if !IsValidation(err) {
		t.Fatalf("Load: %v, want a validation error", err)
	}
	for _, frag := range []string{path + ": config file not found", `$DCACHE_CACHE_SIZE: cache.size: "oops" is not a size`} {
		if !strings.Contains(err.Error(), frag) {
			t.Errorf("error lacks %q:\n%v", frag, err)
		}
	}

	_, err = Load(builtin(t), t.TempDir(), nil, nil)
	if !IsValidation(err) || !strings.Contains(err.Error(), "cannot read config file: is a directory") {
		t.Errorf("Load of a directory: %v", err)
	}
}

func TestIsValidation(t *testing.T) {
	t.Parallel()
	_, err := Load(builtin(t), "", nil, []string{"DCACHE_CACHE_SIZE=x"})
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{nil, false},
		{errors.New("config: current directory: EIO"), false},
		{err, true},
		{errors.Join(errors.New("mount"), err), true},
	} {
		if got := IsValidation(tc.err); got != tc.want {
			t.Errorf("IsValidation(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
	one := (&Error{Problems: []*Problem{{Origin: "f:1", Key: "cache.size", Reason: "bad"}}}).Error()
	if one != "config: f:1: cache.size: bad" {
		t.Errorf("one problem reads %q", one)
	}
	if s := (&Problem{Origin: "f", Reason: "config file not found"}).Error(); s != "f: config file not found" {
		t.Errorf("problem without key reads %q", s)
	}
}

func TestRegisterFlags(t *testing.T) {
	t.Parallel()
	fs := pflag.NewFlagSet("dcache", pflag.ContinueOnError)
	RegisterFlags(fs)
	for _, k := range schema() {
		f := fs.Lookup(k.name)
		if f == nil {
			t.Errorf("no flag --%s", k.name)
			continue
		}
		if f.Usage == "" || f.Value.Type() == "" {
			t.Errorf("flag --%s lacks usage or type", k.name)
		}
		if f.DefValue != "" {
			t.Errorf("flag --%s has default %q; defaults belong to config.yaml", k.name, f.DefValue)
		}
		if (k.typ == "bool") != (f.NoOptDefVal == "true") {
			t.Errorf("flag --%s: NoOptDefVal %q", k.name, f.NoOptDefVal)
		}
	}
	if f := fs.Lookup("data-dir"); f == nil || f.Hidden {
		t.Errorf("--data-dir missing or hidden")
	}
	if f := fs.Lookup("data_dir"); f == nil || !f.Hidden {
		t.Errorf("--data_dir missing or shown in help beside --data-dir")
	}
	if n := countFlags(fs); n != len(schema())+1 {
		t.Errorf("%d flags, want one per key and --data-dir (%d)", n, len(schema())+1)
	}
}

func countFlags(fs *pflag.FlagSet) int {
	n := 0
	fs.VisitAll(func(*pflag.Flag) { n++ })
	return n
}

// TestLoadForeignFlags checks that Load reads flags main defined itself,
// and ignores a flag set without ours.
func TestLoadForeignFlags(t *testing.T) {
	t.Parallel()
	fs := pflag.NewFlagSet("dcache", pflag.ContinueOnError)
	fs.Bool("fuse.debug", false, "")
	fs.String("config", "", "")
	if err := fs.Parse([]string{"--fuse.debug", "--config=x"}); err != nil {
		t.Fatal(err)
	}
	c, err := Load(builtin(t), "", fs, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !c.Fuse.Debug || c.Cache.Size != GiB {
		t.Errorf("got debug %v size %v", c.Fuse.Debug, c.Cache.Size)
	}
}

func TestYAMLRoundTrip(t *testing.T) {
	t.Parallel()
	for _, in := range []input{
		{},
		{
			file: "data_dir: /srv/dc\nlog:\n  replicas:\n    - {path: '/odd: name', type: aep, size: 1536MiB}\n    - {path: \"true\"}\n",
			env:  []string{"DCACHE_FLUSH_HIGH_WATERMARK=1", "DCACHE_FLUSH_LOW_WATERMARK=0"},
			args: []string{"--fuse.debug", "--flush.max_dirty_age=90s", "--cache.size=1000000000", "--log.sync_interval=1h"},
		},
	} {
		c, _, err := load(t, in)
		if err != nil {
			t.Fatal(err)
		}
		out := c.YAML()
		path := filepath.Join(t.TempDir(), "effective.yaml")
		if err := os.WriteFile(path, out, 0o644); err != nil {
			t.Fatal(err)
		}
		back, err := Load(builtin(t), path, nil, nil)
		if err != nil {
			t.Fatalf("YAML output does not load: %v\n%s", err, out)
		}
		if !equal(*c, *back) {
			t.Errorf("round trip changed the configuration:\n%s\nto\n%s", out, back.YAML())
		}
		if in.args != nil {
			for _, frag := range []string{"debug: true # from --fuse.debug", "size: 1000000000B # from --cache.size",
				"high_watermark: 1.0 # from $DCACHE_FLUSH_HIGH_WATERMARK", "max_dirty_age: 1m30s", "sync_interval: 1h"} {
				if !strings.Contains(string(out), frag) {
					t.Errorf("YAML lacks %q:\n%s", frag, out)
				}
			}
		}
	}
	// A Config built by hand renders too, without origins.
	c := defaultConfig("/d")
	if out := string(c.YAML()); !strings.Contains(out, "data_dir: /d/dcache-data\n") || strings.Contains(out, "from") {
		t.Errorf("hand-built Config renders as\n%s", out)
	}
}

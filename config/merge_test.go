package config

import (
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/spf13/pflag"
	"github.com/spf13/viper"
)

// TestLayer checks that viper, given the checked sources, applies the
// documented precedence (flag > env > file > default) key by key, and that
// a flag reaches it as the text the user typed.
func TestLayer(t *testing.T) {
	t.Parallel()
	def, file, env := newSource(), newSource(), newSource()
	for name, raw := range map[string]any{
		"cache.size": "1GiB", "log.sync": "fsync", "log.compression": "snappy", "fuse.debug": "false",
		"log.replicas": []any{map[string]any{"path": "", "type": "ssd", "size": "1GiB"}},
	} {
		def.set(name, raw, "d")
	}
	file.set("cache.size", "2GiB", "f")
	file.set("log.sync", "always", "f")
	file.set("log.replicas", []any{map[string]any{"path": "/f"}}, "f")
	env.set("cache.size", "3GiB", "e")
	env.set("log.replicas", "/e:ssd:1GiB", "e")

	fs := pflag.NewFlagSet("dcache", pflag.ContinueOnError)
	RegisterFlags(fs)
	if err := fs.Parse([]string{"--fuse.debug=tRuE", "--log.compression=none"}); err != nil {
		t.Fatal(err)
	}
	var ps problems
	flags := checkFlags(fs, schema(), &ps)
	if len(ps) != 0 {
		t.Fatal(ps.err())
	}

	v, err := layer(def, file, env, flags)
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]any{
		"cache.size":        "3GiB",   // env over file over default
		"log.sync":          "always", // file over default
		"log.compression":   "none",   // flag over default
		"fuse.debug":        "tRuE",   // as typed; BindPFlag would give the bool false
		"log.replicas":      "/e:ssd:1GiB",
		"quota.dirty_bytes": nil, // set nowhere
	} {
		if got := v.Get(name); !reflect.DeepEqual(got, want) {
			t.Errorf("viper has %s = %#v, want %#v", name, got, want)
		}
	}
}

// TestDecodeViperValues feeds decode what viper's own YAML reading gives:
// ints, floats, bools, mappings and lists rather than text. Each is checked
// against the schema: a good one is parsed as its text, a wrong one is
// reported with its origin, never turned into a zero value.
func TestDecodeViperValues(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		yaml  string
		key   string
		check func(c *Config) bool // for a good value
		err   string               // for a wrong one
	}{
		{yaml: "cache: {size: 1048576}", key: "cache.size", check: func(c *Config) bool { return c.Cache.Size == MiB }},
		{yaml: "flush: {high_watermark: 0.75}", key: "flush.high_watermark", check: func(c *Config) bool { return c.Flush.HighWatermark == 0.75 }},
		{yaml: "flush: {high_watermark: 1}", key: "flush.high_watermark", check: func(c *Config) bool { return c.Flush.HighWatermark == 1 }},
		{yaml: "backend: {clean_threshold: 0}", key: "backend.clean_threshold", check: func(c *Config) bool { return c.Backend.CleanThreshold == 0 }},
		{yaml: "fuse: {debug: true}", key: "fuse.debug", check: func(c *Config) bool { return c.Fuse.Debug }},
		{yaml: "fuse: {attr_timeout: 0}", key: "fuse.attr_timeout", check: func(c *Config) bool { return c.Fuse.AttrTimeout == 0 }},
		{yaml: "backend: {path: null}", key: "backend.path", check: func(c *Config) bool { return c.Backend.Path == "" }},
		{yaml: "log: {replicas: [{path: /a, size: 9MiB}, {path: null, type: aep, size: 16777216}]}", key: "log.replicas", check: func(c *Config) bool {
			return reflect.DeepEqual(c.Log.Replicas, []Replica{{"/a", ReplicaSSD, 9 * MiB}, {"", ReplicaAEP, 16 * MiB}})
		}},
		{yaml: "fuse: {debug: 1}", key: "fuse.debug", err: `src: fuse.debug: "1" is not true or false`},
		{yaml: "fuse: {max_write: 1.5}", key: "fuse.max_write", err: `src: fuse.max_write: "1.5" is not a whole number of bytes`},
		{yaml: "cache: {size: {a: 1}}", key: "cache.size", err: `src: cache.size: expected a single value, found a mapping`},
		{yaml: "flush: {high_watermark: [1]}", key: "flush.high_watermark", err: `expected a single value, found a list`},
		{yaml: "log: {replicas: [{path: null, type: null}]}", key: "log.replicas", err: `src: log.replicas[0].type: no value given`},
		{yaml: "flush: {max_dirty_age: 30}", key: "flush.max_dirty_age", err: `"30" is not a duration`},
		{yaml: "log: {replicas: {a: 1}}", key: "log.replicas", err: `src: log.replicas: expected a list of replicas, found a mapping`},
		{yaml: "log: {replicas: [5]}", key: "log.replicas", err: `log.replicas[0]: expected a mapping with keys path, type, size, found "5"`},
		{yaml: "log: {replicas: [{path: /a, sise: 1}]}", key: "log.replicas", err: `log.replicas[0].sise: unknown key (did you mean "size"?)`},
		{yaml: "log: {replicas: [{path: [x]}]}", key: "log.replicas", err: `log.replicas[0].path: expected a single value, found a list`},
	} {
		t.Run(tc.yaml, func(t *testing.T) {
			t.Parallel()
			var ps problems
			base := checkYAML(builtin(t), defaultsOrigin, schema(), true, &ps)
			v, err := layer(base, newSource(), newSource(), newSource())
			if err != nil {
				t.Fatal(err)
			}
			v.SetConfigType("yaml")
			if err := v.MergeConfig(strings.NewReader(tc.yaml)); err != nil {
				t.Fatal(err)
			}
			over := newSource()
			over.origins[tc.key] = "src"
			c, m := decode(v, schema(), []*source{base, over}, &ps)
			if tc.err == "" {
				if len(ps) != 0 {
					t.Fatal(ps.err())
				}
				if !tc.check(c) {
					t.Errorf("decoded %s wrongly:\n%s", tc.key, c.YAML())
				}
				return
			}
			if len(ps) != 1 || !strings.Contains(ps[0].Error(), tc.err) {
				t.Errorf("problems %v, want one with %q", ps.err(), tc.err)
			}
			if !m.broken[tc.key] {
				t.Errorf("%s not marked broken", tc.key)
			}
		})
	}
}

// TestLoadIgnoresProcessEnvironment checks that Load reads the variables
// it is given and none of the process's (viper's environment layer would
// read those). It cannot run in parallel: it sets the process environment.
func TestLoadIgnoresProcessEnvironment(t *testing.T) {
	t.Setenv("DCACHE_CACHE_SIZE", "2GiB")
	t.Setenv("DCACHE_CACHE_SZIE", "typo")
	t.Setenv("DCACHE_LOG_SYNC", "always")
	for _, env := range [][]string{nil, os.Environ()[:0], {"DCACHE_LOG_SYNC=interval"}} {
		c, err := Load(builtin(t), "", nil, env)
		if err != nil {
			t.Fatalf("Load with env %q: %v", env, err)
		}
		want := SyncFsync
		if len(env) > 0 {
			want = SyncInterval
		}
		if c.Cache.Size != GiB || c.Log.Sync != want {
			t.Errorf("Load with env %q: cache.size %v, log.sync %v", env, c.Cache.Size, c.Log.Sync)
		}
	}
	// Given as a slice, the same variables count.
	_, err := Load(builtin(t), "", nil, os.Environ())
	if err == nil || !strings.Contains(err.Error(), "$DCACHE_CACHE_SZIE: unknown environment variable") {
		t.Errorf("Load with os.Environ(): %v", err)
	}
}

// TestNoGlobalViper checks that Load leaves viper's package-level instance
// alone.
func TestNoGlobalViper(t *testing.T) {
	t.Parallel()
	if _, err := Load(builtin(t), "", nil, []string{"DCACHE_CACHE_SIZE=2GiB"}); err != nil {
		t.Fatal(err)
	}
	if keys := viper.AllKeys(); len(keys) != 0 {
		t.Errorf("the global viper holds %v", keys)
	}
}

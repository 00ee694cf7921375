package config

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/spf13/pflag"
)

// BenchmarkLoadDefaults measures Load of the built-in config.yaml alone,
// what every `dcache` command pays at start.
func BenchmarkLoadDefaults(b *testing.B) {
	defaults := builtin(b)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Load(defaults, "", nil, nil); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkLoadAllSources adds a file, environment variables and flags.
func BenchmarkLoadAllSources(b *testing.B) {
	defaults := builtin(b)
	path := filepath.Join(b.TempDir(), "dcache.yaml")
	if err := os.WriteFile(path, []byte("cache:\n  size: 2GiB\nlog:\n  replicas:\n    - {path: /a}\n    - {path: /b}\n"), 0o644); err != nil {
		b.Fatal(err)
	}
	fs := pflag.NewFlagSet("dcache", pflag.ContinueOnError)
	RegisterFlags(fs)
	if err := fs.Parse([]string{"--log.sync=always", "--fuse.debug"}); err != nil {
		b.Fatal(err)
	}
	env := append(os.Environ(), "DCACHE_FLUSH_MAX_DIRTY_AGE=1m", "DCACHE_DATA_DIR=/srv/dc")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Load(defaults, path, fs, env); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkYAML(b *testing.B) {
	c, err := Load(builtin(b), "", nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		c.YAML()
	}
}

func BenchmarkParseSize(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseSize("1.5GiB"); err != nil {
			b.Fatal(err)
		}
	}
}

package config

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"
)

// Load builds the effective configuration from, in rising precedence:
// defaults (the built-in config.yaml, which must set every key), the YAML
// file at path (skipped when path is ""), the DCACHE_* variables in env, and
// the flags of flags that were set (flags may be nil). It then validates the
// whole and makes every path absolute against the current directory.
//
// Every problem found, in any source, is returned in one *Error, so the user
// can fix them all in one go; IsValidation recognises it.
func Load(defaults []byte, path string, flags *pflag.FlagSet, env []string) (*Config, error) {
	cwd, err := os.Getwd()
	if err != nil {
		return nil, fmt.Errorf("config: current directory: %w", err)
	}
	keys := schema()
	var ps problems

	// The strict pass: each source on its own, every problem reported.
	base := checkYAML(defaults, defaultsOrigin, keys, true, &ps)
	file := newSource()
	if path != "" {
		data, err := os.ReadFile(path)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			ps.add(path, "", "config file not found")
		case err != nil:
			var pe *fs.PathError
			if errors.As(err, &pe) {
				err = pe.Err
			}
			ps.add(path, "", "cannot read config file: %v", err)
		default:
			file = checkYAML(data, path, keys, false, &ps)
		}
	}
	envs := checkEnv(env, keys, &ps)
	set := checkFlags(flags, keys, &ps)

	// Viper layers what passed; the Config is decoded from its result.
	v, err := layer(base, file, envs, set)
	if err != nil {
		return nil, err
	}
	c, m := decode(v, keys, []*source{base, file, envs, set}, &ps)
	val := &validator{c: c, m: m, ps: &ps, cwd: cwd}
	val.validate()
	if err := ps.err(); err != nil {
		return nil, err
	}
	c.origins = m.origins
	return c, nil
}

// validator checks the merged values against their ranges and each other,
// and resolves paths.
type validator struct {
	c   *Config
	m   merged
	ps  *problems
	cwd string
}

// usable reports whether every named key has a good value, so that checks
// do not pile up on a value already reported bad.
func (v *validator) usable(names ...string) bool {
	for _, n := range names {
		if v.m.broken[n] {
			return false
		}
	}
	return true
}

// fail reports a problem with the effective value of key name.
func (v *validator) fail(name, format string, args ...any) {
	v.ps.add(v.m.origins[name], name, format, args...)
}

func (v *validator) validate() {
	v.sizes()
	v.flush()
	v.durations()
	v.paths()
	v.stats()
}

// stats checks the statistics directory's name and the metrics address.
func (v *validator) stats() {
	c := v.c.Stats
	if v.usable("stats.dir_name") {
		n := c.DirName
		switch {
		case n == "" || n == "." || n == "..":
			v.fail("stats.dir_name", "%q is not a usable file name", n)
		case strings.ContainsAny(n, "/\x00"):
			v.fail("stats.dir_name", "%q must be one file name, without / or NUL", n)
		case len(n) > 255:
			v.fail("stats.dir_name", "%d bytes is longer than a file name may be (255)", len(n))
		}
	}
	if v.usable("stats.hung_threshold") && c.HungThreshold <= 0 {
		v.fail("stats.hung_threshold", "%s must be above 0", durationString(c.HungThreshold))
	}
	if v.usable("stats.metrics_listen") && c.MetricsListen != "" {
		host, port, err := net.SplitHostPort(c.MetricsListen)
		if err != nil {
			v.fail("stats.metrics_listen", "%q is not HOST:PORT (e.g. 127.0.0.1:9567)", c.MetricsListen)
		} else if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
			v.fail("stats.metrics_listen", "port %q of %q is not a number in 0..65535", port, c.MetricsListen)
		} else if host != "" && net.ParseIP(host) == nil && strings.ContainsAny(host, " /") {
			v.fail("stats.metrics_listen", "host %q of %q is not an address or a host name", host, c.MetricsListen)
		}
	}
}

func (v *validator) sizes() {
	c := v.c
	if v.usable("cache.size") && c.Cache.Size < 16*MiB {
		v.fail("cache.size", "%v is below the minimum of 16MiB", c.Cache.Size)
	}
	if v.usable("quota.dirty_bytes") {
		d := c.Quota.DirtyBytes
		switch {
		case d < MiB:
			v.fail("quota.dirty_bytes", "%v is below the minimum of 1MiB", d)
		case v.usable("cache.size") && d > c.Cache.Size:
			v.fail("quota.dirty_bytes", "%v must not exceed cache.size (%v)", d, c.Cache.Size)
		}
	}
	v.aligned("flush.segment_size", c.Flush.SegmentSize, MiB, 4*GiB)
	v.aligned("prefetch.max_window", c.Prefetch.MaxWindow, 64*KiB, 256*MiB)
	v.quotaDirs()
	v.aligned("fuse.max_write", c.Fuse.MaxWrite, 4*KiB, MiB)
	if v.usable("fuse.read_ahead") && (c.Fuse.ReadAhead < 0 || c.Fuse.ReadAhead > 16*MiB || c.Fuse.ReadAhead%(4*KiB) != 0) {
		v.fail("fuse.read_ahead", "%v must be a multiple of 4KiB in 0..16MiB", c.Fuse.ReadAhead)
	}
	if s := c.Fuse.KernelDirty; v.usable("fuse.kernel_dirty") && (s < 0 || s > 64*GiB) {
		v.fail("fuse.kernel_dirty", "%v must be in 0..64GiB", s)
	}
	if v.usable("log.replicas") {
		if len(c.Log.Replicas) == 0 {
			v.fail("log.replicas", "at least one replica is needed")
		}
		for i, r := range c.Log.Replicas {
			if r.Size < 8*MiB {
				v.failItem("log.replicas", i, "size", "%v is below the minimum of 8MiB", r.Size)
			}
		}
	}
}

// quotaDirs checks quota.directories: paths inside the mount, each once,
// limits not negative.
func (v *validator) quotaDirs() {
	const name = "quota.directories"
	if !v.usable(name) {
		return
	}
	seen := map[string]int{}
	for i, q := range v.c.Quota.Directories {
		clean := path.Clean("/" + q.Path)
		switch {
		case q.Path == "":
			v.failItem(name, i, "path", "must not be empty (use / for the whole mount)")
			continue
		case slices.Contains(strings.Split(q.Path, "/"), ".."):
			v.failItem(name, i, "path", "%q: .. is not allowed; the path is from the mount root", q.Path)
			continue
		}
		if j, dup := seen[clean]; dup {
			v.failItem(name, i, "path", "%s is also %s[%d]", clean, name, j)
			continue
		}
		seen[clean] = i
		v.c.Quota.Directories[i].Path = clean
		if q.Bytes < 0 {
			v.failItem(name, i, "bytes", "%v must not be negative", q.Bytes)
		}
	}
}

// aligned checks that a size is a multiple of 4KiB within [lo, hi].
func (v *validator) aligned(name string, s, lo, hi Size) {
	switch {
	case !v.usable(name):
	case s < lo || s > hi:
		v.fail(name, "%v is outside %v..%v", s, lo, hi)
	case s%(4*KiB) != 0:
		v.fail(name, "%v is not a multiple of 4KiB", s)
	}
}

func (v *validator) flush() {
	f := v.c.Flush
	high, low := f.HighWatermark, f.LowWatermark
	highOK := v.usable("flush.high_watermark")
	if highOK && (high <= 0 || high > 1) {
		v.fail("flush.high_watermark", "%s must be above 0 and at most 1", fraction(high))
		highOK = false
	}
	if v.usable("flush.low_watermark") {
		switch {
		case low < 0:
			v.fail("flush.low_watermark", "%s must not be negative", fraction(low))
		case highOK && low >= high:
			v.fail("flush.low_watermark", "%s must be below flush.high_watermark (%s)", fraction(low), fraction(high))
		}
	}
	if tw := f.ThrottleWatermark; v.usable("flush.throttle_watermark") && (tw <= 0 || tw > 1) {
		v.fail("flush.throttle_watermark", "%s must be above 0 and at most 1", fraction(tw))
	}
	if j := f.WritebackJobs; v.usable("flush.writeback_jobs") && (j < 1 || j > 64) {
		v.fail("flush.writeback_jobs", "%d is outside 1..64", j)
	}
	if s := f.SequentialCutoff; v.usable("flush.sequential_cutoff") && s < 0 {
		v.fail("flush.sequential_cutoff", "%v must not be negative", s)
	}
	if th := v.c.Backend.CleanThreshold; v.usable("backend.clean_threshold") && (th < 0 || th >= 1) {
		v.fail("backend.clean_threshold", "%s must be at least 0 and below 1", fraction(th))
	}
}

func (v *validator) durations() {
	c := v.c
	if v.usable("flush.max_dirty_age") && c.Flush.MaxDirtyAge < 100*time.Millisecond {
		v.fail("flush.max_dirty_age", "%s is below the minimum of 100ms", durationString(c.Flush.MaxDirtyAge))
	}
	if v.usable("log.sync_interval") && c.Log.SyncInterval <= 0 {
		v.fail("log.sync_interval", "%s must be above 0", durationString(c.Log.SyncInterval))
	}
	for _, t := range []struct {
		name string
		d    time.Duration
	}{
		{"fuse.attr_timeout", c.Fuse.AttrTimeout},
		{"fuse.entry_timeout", c.Fuse.EntryTimeout},
		{"fuse.negative_timeout", c.Fuse.NegativeTimeout},
	} {
		if v.usable(t.name) && t.d < 0 {
			v.fail(t.name, "%s must not be negative", durationString(t.d))
		}
	}
}

// paths makes every path absolute, fills in the defaults under data_dir
// and checks that no two things share a path.
func (v *validator) paths() {
	c := v.c
	if !v.usable("data_dir") {
		return // the other defaults hang off it
	}
	if c.DataDir == "" {
		v.fail("data_dir", "must not be empty")
		return
	}
	if !v.path("data_dir", &c.DataDir) {
		return
	}
	used := map[string]string{c.DataDir: "data_dir"}
	if v.usable("backend.path") {
		if c.Backend.Path == "" && c.Backend.Type == BackendDevice {
			v.fail("backend.path", "must name the block device or file when backend.type is device")
		} else if c.Backend.Path == "" {
			c.Backend.Path = filepath.Join(c.DataDir, "backend")
		}
		if c.Backend.Path != "" && v.path("backend.path", &c.Backend.Path) && c.Backend.Path != c.DataDir {
			used[c.Backend.Path] = "backend.path"
		}
	}
	if !v.usable("log.replicas") {
		return
	}
	for i := range c.Log.Replicas {
		r := &c.Log.Replicas[i]
		name := fmt.Sprintf("log.replicas[%d].path", i)
		if r.Path == "" {
			r.Path = filepath.Join(c.DataDir, "log")
		}
		if strings.HasPrefix(r.Path, "~") {
			v.failItem("log.replicas", i, "path", "%q: ~ is not expanded here; give the full path", r.Path)
			continue
		}
		r.Path = v.abs(r.Path)
		if other, dup := used[r.Path]; dup {
			v.failItem("log.replicas", i, "path", "%s is also %s", r.Path, other)
			continue
		}
		used[r.Path] = name
	}
}

// path makes the path of key name absolute, refusing "~" (which only a
// shell expands) rather than creating a directory named "~".
func (v *validator) path(name string, p *string) bool {
	if strings.HasPrefix(*p, "~") {
		v.fail(name, "%q: ~ is not expanded here; give the full path", *p)
		return false
	}
	*p = v.abs(*p)
	return true
}

func (v *validator) abs(p string) string {
	if filepath.IsAbs(p) {
		return filepath.Clean(p)
	}
	return filepath.Join(v.cwd, p)
}

// failItem reports a problem with field of item i of list key name.
func (v *validator) failItem(name string, i int, field, format string, args ...any) {
	origin := v.m.origins[name]
	if items := v.m.items[name]; i < len(items) {
		origin = items[i][field]
	}
	v.ps.add(origin, fmt.Sprintf("%s[%d].%s", name, i, field), format, args...)
}

func fraction(f float64) string { return strconv.FormatFloat(f, 'g', -1, 64) }

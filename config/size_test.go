package config

import (
	"strings"
	"testing"
	"time"
)

func TestParseSize(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   string
		want Size
		err  string // fragment; "" = valid
	}{
		{in: "0", want: 0},
		{in: "1048576", want: MiB},
		{in: "007", want: 7},
		{in: "1B", want: 1},
		{in: "4KiB", want: 4 * KiB},
		{in: "4K", want: 4 * KiB},
		{in: "4KB", want: 4000},
		{in: "512MiB", want: 512 * MiB},
		{in: "512M", want: 512 * MiB},
		{in: "2MB", want: 2_000_000},
		{in: "1GiB", want: GiB},
		{in: "1G", want: GiB},
		{in: "1GB", want: 1_000_000_000},
		{in: "3TiB", want: 3 * TiB},
		{in: "3T", want: 3 * TiB},
		{in: "3TB", want: 3_000_000_000_000},
		{in: "1.5GiB", want: 1536 * MiB},
		{in: "0.5KiB", want: 512},
		{in: "2.0", want: 2},
		{in: "8388607TiB", want: 8388607 * TiB},
		{in: "", err: `"" is not a size (use e.g. 512MiB, 1GiB)`},
		{in: "1 GB", err: `"1 GB" is not a size`},
		{in: " 1GB", err: "is not a size"},
		{in: "1GB ", err: "is not a size"},
		{in: "12XB", err: `"12XB" is not a size (use e.g. 512MiB, 1GiB)`},
		{in: "1gb", err: "is not a size"},
		{in: "1gib", err: "is not a size"},
		{in: "1Gi", err: "is not a size"},
		{in: "GiB", err: "is not a size"},
		{in: "-1", err: "is not a size"},
		{in: "+1", err: "is not a size"},
		{in: "1e9", err: "is not a size"},
		{in: "0x10", err: "is not a size"},
		{in: "1_000", err: "is not a size"},
		{in: ".5GiB", err: "is not a size"},
		{in: "1.GiB", err: "is not a size"},
		{in: "1.2.3MiB", err: "is not a size"},
		{in: "1.5", err: `"1.5" is not a whole number of bytes`},
		{in: "0.1KiB", err: "is not a whole number of bytes"},
		{in: "8388608TiB", err: `"8388608TiB" is too large`},
		{in: "99999999999999999999", err: "is too large"},
	} {
		got, err := ParseSize(tc.in)
		switch {
		case tc.err == "" && err != nil:
			t.Errorf("ParseSize(%q): %v", tc.in, err)
		case tc.err == "" && got != tc.want:
			t.Errorf("ParseSize(%q) = %d, want %d", tc.in, got, tc.want)
		case tc.err != "" && err == nil:
			t.Errorf("ParseSize(%q) = %d, want error %q", tc.in, got, tc.err)
		case tc.err != "" && !strings.Contains(err.Error(), tc.err):
			t.Errorf("ParseSize(%q): error %q, want it to contain %q", tc.in, err, tc.err)
		case tc.err != "" && !strings.HasPrefix(err.Error(), "config: "):
			t.Errorf("ParseSize(%q): error %q lacks the package prefix", tc.in, err)
		}
	}
}

func TestSizeString(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   Size
		want string
	}{
		{0, "0B"},
		{1, "1B"},
		{1000, "1000B"},
		{KiB, "1KiB"},
		{1536 * MiB, "1536MiB"},
		{GiB, "1GiB"},
		{4 * TiB, "4TiB"},
		{GiB + 1, "1073741825B"},
		{-2 * MiB, "-2MiB"},
	} {
		if got := tc.in.String(); got != tc.want {
			t.Errorf("Size(%d).String() = %q, want %q", int64(tc.in), got, tc.want)
		}
		if tc.in < 0 {
			continue
		}
		var back Size
		if err := back.UnmarshalText([]byte(tc.in.String())); err != nil || back != tc.in {
			t.Errorf("UnmarshalText(%q) = %d, %v; want %d", tc.in.String(), back, err, tc.in)
		}
	}
}

// FuzzParseSize checks that whatever ParseSize accepts is non-negative and
// survives a round trip through String.
func FuzzParseSize(f *testing.F) {
	for _, s := range []string{"0", "1", "4KiB", "1.5GiB", "3TB", "12XB", "1 GB", "0.0001TB", "8388607TiB"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := ParseSize(s)
		if err != nil {
			return
		}
		if n < 0 {
			t.Fatalf("ParseSize(%q) = %d, negative", s, n)
		}
		back, err := ParseSize(n.String())
		if err != nil || back != n {
			t.Fatalf("ParseSize(%q) = %d; ParseSize(%q) = %d, %v", s, n, n.String(), back, err)
		}
	})
}

func TestParseDuration(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   string
		want time.Duration
		err  string
	}{
		{in: "0", want: 0},
		{in: "100ms", want: 100 * time.Millisecond},
		{in: "5s", want: 5 * time.Second},
		{in: "1m", want: time.Minute},
		{in: "1h30m", want: 90 * time.Minute},
		{in: "-1s", want: -time.Second}, // the range is checked per key
		{in: "5", err: `"5" is not a duration (use e.g. 5s, 100ms, 1m)`},
		{in: "5 s", err: "is not a duration"},
		{in: "five seconds", err: "is not a duration"},
		{in: "", err: `"" is not a duration`},
	} {
		got, err := parseDuration(tc.in)
		switch {
		case tc.err == "" && (err != nil || got != tc.want):
			t.Errorf("parseDuration(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("parseDuration(%q) error = %v, want %q", tc.in, err, tc.err)
		}
	}
}

func TestDurationString(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   time.Duration
		want string
	}{
		{0, "0s"},
		{100 * time.Millisecond, "100ms"},
		{30 * time.Second, "30s"},
		{time.Minute, "1m"},
		{90 * time.Second, "1m30s"},
		{time.Hour, "1h"},
		{time.Hour + time.Minute, "1h1m"},
		{time.Hour + time.Second, "1h0m1s"},
		{10 * time.Minute, "10m"},
	} {
		got := durationString(tc.in)
		if got != tc.want {
			t.Errorf("durationString(%v) = %q, want %q", tc.in, got, tc.want)
		}
		if back, err := time.ParseDuration(got); err != nil || back != tc.in {
			t.Errorf("time.ParseDuration(%q) = %v, %v; want %v", got, back, err, tc.in)
		}
	}
}

func TestParseFractionAndBool(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   string
		want float64
		err  string
	}{
		{in: "0.5", want: 0.5},
		{in: "1", want: 1},
		{in: "0", want: 0},
		{in: "half", err: `"half" is not a number (use e.g. 0.5)`},
		{in: "NaN", err: "is not a number"},
		{in: "Inf", err: "is not a number"},
		{in: "", err: "is not a number"},
	} {
		got, err := parseFraction(tc.in)
		switch {
		case tc.err == "" && (err != nil || got != tc.want):
			t.Errorf("parseFraction(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("parseFraction(%q) error = %v, want %q", tc.in, err, tc.err)
		}
	}
	for in, want := range map[string]bool{"true": true, "True": true, "TRUE": true, "false": false, "False": false} {
		if got, err := parseBool(in); err != nil || got != want {
			t.Errorf("parseBool(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"yes", "no", "1", "0", "on", ""} {
		if _, err := parseBool(in); err == nil || !strings.Contains(err.Error(), "is not true or false") {
			t.Errorf("parseBool(%q) error = %v, want a refusal", in, err)
		}
	}
}

func TestParseReplicaText(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   string
		want []Replica
		errs []string
	}{
		{in: "/ssd1/log:ssd:4GiB", want: []Replica{{"/ssd1/log", ReplicaSSD, 4 * GiB}}},
		{
			in:   "/ssd1/log:ssd:4GiB,/pmem/log:aep:512MiB",
			want: []Replica{{"/ssd1/log", ReplicaSSD, 4 * GiB}, {"/pmem/log", ReplicaAEP, 512 * MiB}},
		},
		{in: " /a:ssd:1GiB , /b:ssd:1GiB ", want: []Replica{{"/a", ReplicaSSD, GiB}, {"/b", ReplicaSSD, GiB}}},
		{in: ":ssd:1GiB", want: []Replica{{"", ReplicaSSD, GiB}}},
		{in: "/dev/disk/by-path/pci-0000:00:1f.2:ssd:8MiB", want: []Replica{{"/dev/disk/by-path/pci-0000:00:1f.2", ReplicaSSD, 8 * MiB}}},
		{in: "", want: []Replica{}},
		{in: "/a", errs: []string{`log.replicas[0]: "/a" is not PATH:TYPE:SIZE`}},
		{in: "/a:ssd", errs: []string{`log.replicas[0]: "/a:ssd" is not PATH:TYPE:SIZE`}},
		{in: "/a:ssd:1GiB,", errs: []string{`log.replicas[1]: "" is not PATH:TYPE:SIZE`}},
		{in: "/a:ssd:1GiB,/b:hdd:1GiB", errs: []string{`log.replicas[1].type: "hdd" is not one of ssd, aep`}},
		{in: "/a:SSD:1 GB", errs: []string{
			`log.replicas[0].type: "SSD" is not one of ssd, aep`,
			`log.replicas[0].size: "1 GB" is not a size`,
		}},
		{in: "/a::", errs: []string{`log.replicas[0].type: "" is not one of`, `log.replicas[0].size: "" is not a size`}},
	} {
		var ps problems
		got, ok := parseReplicaText(tc.in, "--log.replicas", &ps)
		if len(tc.errs) == 0 {
			if !ok || len(ps) != 0 {
				t.Errorf("parseReplicaText(%q): %v", tc.in, ps.err())
				continue
			}
			if len(got) != len(tc.want) {
				t.Errorf("parseReplicaText(%q) = %+v, want %+v", tc.in, got, tc.want)
				continue
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Errorf("parseReplicaText(%q)[%d] = %+v, want %+v", tc.in, i, got[i], tc.want[i])
				}
			}
			continue
		}
		if ok {
			t.Errorf("parseReplicaText(%q) = %+v, want errors %q", tc.in, got, tc.errs)
			continue
		}
		msg := ps.err().Error()
		for _, frag := range tc.errs {
			if !strings.Contains(msg, frag) {
				t.Errorf("parseReplicaText(%q) error %q lacks %q", tc.in, msg, frag)
			}
		}
		if len(ps) != len(tc.errs) {
			t.Errorf("parseReplicaText(%q): %d problems, want %d: %v", tc.in, len(ps), len(tc.errs), msg)
		}
	}
}

func TestDidYouMean(t *testing.T) {
	t.Parallel()
	names := []string{"cache", "quota", "flush", "backend", "log", "fuse", "logging", "data_dir"}
	for _, tc := range []struct {
		in, want string
	}{
		{"cachee", ` (did you mean "cache"?)`},
		{"Cache", ` (did you mean "cache"?)`},
		{"flsuh", ` (did you mean "flush"?)`},
		{"loging", ` (did you mean "logging"?)`},
		{"datadir", ` (did you mean "data_dir"?)`},
		{"backnd", ` (did you mean "backend"?)`},
		{"snapshots", ""},
		{"xyz", ""},
	} {
		if got := didYouMean(tc.in, names); got != tc.want {
			t.Errorf("didYouMean(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	for _, tc := range []struct {
		a, b string
		want int
	}{
		{"", "", 0}, {"a", "", 1}, {"", "ab", 2}, {"size", "sise", 1}, {"SZIE", "SIZE", 1},
		{"kitten", "sitting", 3}, {"ca", "abc", 3},
	} {
		if got := editDistance(tc.a, tc.b); got != tc.want {
			t.Errorf("editDistance(%q, %q) = %d, want %d", tc.a, tc.b, got, tc.want)
		}
	}
}
